#include "sources/postgres/value_json.h"

#include <strings.h>

#include "daemon/format/json_writer.h"

namespace cdcd::postgres {

namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_float(std::string& out, std::string_view text) {
  if (text == "NaN" || text == "Infinity" || text == "-Infinity") {
    append_json_string(out, text);
  } else {
    out += text;
  }
}

// bytea's hex output "\x0a1b..." as base64; any other form is kept as a string.
void append_bytea(std::string& out, std::string_view text) {
  if (text.size() < 2 || text[0] != '\\' || text[1] != 'x' || text.size() % 2 != 0) {
    append_json_string(out, text);
    return;
  }
  std::string bytes;
  bytes.reserve((text.size() - 2) / 2);
  for (std::size_t i = 2; i < text.size(); i += 2) {
    int high = hex_value(text[i]);
    int low = hex_value(text[i + 1]);
    if (high < 0 || low < 0) {
      append_json_string(out, text);
      return;
    }
    bytes.push_back(static_cast<char>(high * 16 + low));
  }
  out += '"';
  json::append_base64(out, bytes);
  out += '"';
}

// "2024-01-02 03:04:05" → "2024-01-02T03:04:05"; dates, infinity and BC values are unchanged.
void append_date_time(std::string& out, std::string_view text, bool with_zone) {
  std::size_t start = out.size();
  out += '"';
  out += text;
  out += '"';
  if (text.size() >= 3 && text.substr(text.size() - 3) == " BC") return;
  char* value = out.data() + start + 1;
  if (text.size() > 11 && text[10] == ' ' && is_digit(text[9]) && is_digit(text[11])) {
    value[10] = 'T';
  }
  if (!with_zone) return;
  // A bare "+hh" offset becomes "+hh:00" (RFC 3339 wants minutes).
  std::size_t sign = text.find_last_of("+-");
  if (sign == std::string_view::npos || sign < 8 || text.find(':') > sign) return;
  if (text.size() - sign == 3 && is_digit(text[sign + 1]) && is_digit(text[sign + 2])) {
    out.insert(out.size() - 1, ":00");
  }
}

// PostgreSQL's array output ("{1,2,NULL}", "{{1,2},{3,4}}", {"a b","c\"d"}) as a JSON array of
// the element type's values. Also takes what array input accepts beyond that (whitespace around
// elements, backslashes outside quotes). An array with lower bounds other than 1 (output as
// "[0:1]={a,b}") has no JSON array form that keeps them, so it is left to the text form, as is
// anything malformed.
class ArrayParser {
 public:
  ArrayParser(std::string_view text, const TypeInfo& element, char delimiter)
      : text_(text), element_(element), delimiter_(delimiter) {}

  bool parse(std::string& out) {
    skip_space();
    if (!parse_level(out, 1)) return false;
    skip_space();
    return pos_ == text_.size();
  }

 private:
  static constexpr int kMaxDimensions = 6;  // PostgreSQL's MAXDIM

  bool parse_level(std::string& out, int dimension) {
    if (dimension > kMaxDimensions || !consume('{')) return false;
    out += '[';
    skip_space();
    if (consume('}')) {
      out += ']';
      return true;
    }
    // A level holds either sub-arrays or elements, never both.
    const bool nested = pos_ < text_.size() && text_[pos_] == '{';
    while (true) {
      skip_space();
      if (nested) {
        if (!parse_level(out, dimension + 1)) return false;
      } else if (!parse_element(out)) {
        return false;
      }
      skip_space();
      if (consume('}')) break;
      if (!consume(delimiter_)) return false;
      out += ',';
    }
    out += ']';
    return true;
  }

  // One element, quoted or not; backslash escapes the next character either way. An unquoted
  // NULL (any case, no escapes) is SQL NULL; surrounding whitespace is not part of an element.
  bool parse_element(std::string& out) {
    element_text_.clear();
    bool quoted = false;
    bool escaped = false;
    bool in_quotes = false;
    std::size_t kept = 0;  // length without trailing unquoted whitespace
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (!in_quotes && (c == delimiter_ || c == '}')) break;
      ++pos_;
      if (c == '\\') {
        if (pos_ >= text_.size()) return false;
        element_text_ += text_[pos_++];
        escaped = true;
        kept = element_text_.size();
      } else if (c == '"') {
        in_quotes = !in_quotes;
        quoted = true;
        kept = element_text_.size();
      } else if (!in_quotes && c == '{') {
        return false;
      } else {
        element_text_ += c;
        if (in_quotes || !is_space(c)) kept = element_text_.size();
      }
    }
    if (in_quotes) return false;
    element_text_.resize(kept);
    if (!quoted && !escaped) {
      if (element_text_.empty()) return false;
      if (element_text_.size() == 4 && strncasecmp(element_text_.data(), "NULL", 4) == 0) {
        out += "null";
        return true;
      }
    }
    append_json_value(out, element_, element_text_);
    return true;
  }

  bool consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void skip_space() {
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
  }

  std::string_view text_;
  const TypeInfo& element_;
  char delimiter_;
  std::size_t pos_ = 0;
  std::string element_text_;
};

void append_array(std::string& out, const TypeInfo& type, std::string_view text) {
  static const TypeInfo kText{};
  const std::size_t start = out.size();
  ArrayParser parser(text, type.element ? *type.element : kText, type.delimiter);
  if (!parser.parse(out)) {
    out.resize(start);
    append_json_string(out, text);
  }
}

}  // namespace

void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  std::size_t run = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(text.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        out += "\\u00";
        out += kHexDigits[c >> 4];
        out += kHexDigits[c & 0xf];
    }
  }
  out.append(text.data() + run, text.size() - run);
  out += '"';
}

void append_json_value(std::string& out, const TypeInfo& type, std::string_view text) {
  switch (type.kind) {
    case ValueKind::kBool:
      out += (!text.empty() && text[0] == 't') ? "true" : "false";
      return;
    case ValueKind::kInteger:
      out += text;
      return;
    case ValueKind::kFloat:
      append_float(out, text);
      return;
    case ValueKind::kString:
      append_json_string(out, text);
      return;
    case ValueKind::kJson:
      append_compact_json(out, text);
      return;
    case ValueKind::kBytea:
      append_bytea(out, text);
      return;
    case ValueKind::kDateTime:
      append_date_time(out, text, false);
      return;
    case ValueKind::kDateTimeTz:
      append_date_time(out, text, true);
      return;
    case ValueKind::kArray:
      append_array(out, type, text);
      return;
  }
}

void append_compact_json(std::string& out, std::string_view json) {
  out.reserve(out.size() + json.size());
  bool in_string = false;
  bool escaped = false;
  for (char c : json) {
    if (in_string) {
      out += c;
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (!is_space(c)) {
      out += c;
      if (c == '"') in_string = true;
    }
  }
}

}  // namespace cdcd::postgres
