// parse_native_line: one JSONL change-log line into a Change, with simdjson's On Demand API.
//
// Row images (key, old, new) are kept as compact JSON text. They are copied token by token from
// the input rather than through simdjson::minify or object::raw_json(): On Demand only checks the
// values it is asked for, so a skipped object such as {"id": tru} would otherwise pass unnoticed
// and reach the sinks as invalid JSON. Copying the raw tokens also keeps strings byte for byte
// (UTF-8 and \u escapes alike) and numbers digit for digit (no double rounding of big numerics).
//
// Most lines are "plain": no backslash and no control character anywhere. In such a line every
// string is valid as it stands (simdjson's first stage has checked that it is closed and valid
// UTF-8), ends at its next quote, and reads the same unescaped. One scan of the line settles that,
// and the strings are then taken from their raw bytes instead of being checked one by one and
// unescaped. Any other line takes the general path, which checks each string.

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

#include <simdjson.h>

#include "daemon/format/format.h"
#include "daemon/format/native_parse.h"
#include "daemon/format/rfc3339.h"

namespace cdcd {
namespace {

namespace od = simdjson::ondemand;
using simdjson::error_code;

static_assert(kNativeLinePadding == simdjson::SIMDJSON_PADDING);

// Lines up to this size reuse one parser per thread; a larger line gets a parser of its own, freed
// afterwards, so that one huge line does not pin several times its size for the daemon's life.
constexpr std::size_t kReusedParserCapacity = 256 * 1024;

constexpr const char* kBadStringMessage =
    "invalid JSON: invalid escape or unescaped control character in a string";

enum Field : unsigned {
  kUnknown = 0,
  kLsn = 1u << 0,
  kSeq = 1u << 1,
  kTimestamp = 1u << 2,
  kTxid = 1u << 3,
  kSource = 1u << 4,
  kEntity = 1u << 5,
  kKey = 1u << 6,
  kOperation = 1u << 7,
  kOld = 1u << 8,
  kNew = 1u << 9,
  kUnchanged = 1u << 10,
  kOldKey = 1u << 11,
};

std::string in_quotes(std::string_view name) {
  std::string text = "\"";
  text.append(name);
  text.push_back('"');
  return text;
}

std::string invalid_json(error_code error) {
  return std::string("invalid JSON: ") + simdjson::error_message(error);
}

bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// A scalar's raw token runs up to the next token, trailing whitespace included.
std::string_view trimmed_token(od::value& value) {
  std::string_view token = value.raw_json_token();
  while (!token.empty() && is_json_space(token.back())) token.remove_suffix(1);
  return token;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
bool is_json_number(std::string_view token) {
  std::size_t i = 0;
  const std::size_t n = token.size();
  if (i < n && token[i] == '-') ++i;
  if (i >= n || !is_digit(token[i])) return false;
  if (token[i] == '0') {
    ++i;
  } else {
    while (i < n && is_digit(token[i])) ++i;
  }
  if (i < n && token[i] == '.') {
    ++i;
    if (i >= n || !is_digit(token[i])) return false;
    while (i < n && is_digit(token[i])) ++i;
  }
  if (i < n && (token[i] == 'e' || token[i] == 'E')) {
    ++i;
    if (i < n && (token[i] == '+' || token[i] == '-')) ++i;
    if (i >= n || !is_digit(token[i])) return false;
    while (i < n && is_digit(token[i])) ++i;
  }
  return i == n;
}

// For a document that is a single value: worth telling "valid JSON, but not an object" apart from
// a line that is not JSON at all.
bool is_well_formed_scalar(od::json_type type, std::string_view token) {
  switch (type) {
    case od::json_type::number:
      return is_json_number(token);
    case od::json_type::boolean:
      return token == "true" || token == "false";
    case od::json_type::null:
      return token == "null";
    default:
      return true;
  }
}

bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// `p` points at a backslash or a control character inside a string; returns the escape's last
// byte, or nullptr for a control character or an invalid escape.
const char* escape_end(const char* p) {
  if (*p != '\\') return nullptr;
  switch (*++p) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
      return p;
    case 'u':
      if (!is_hex(p[1]) || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4])) return nullptr;
      return p + 4;
    default:
      return nullptr;
  }
}

static_assert(std::endian::native == std::endian::little, "the word scans count from the low byte");

constexpr std::uint64_t kOnes = 0x0101010101010101;

// Flags the high bit of each byte of `word` below `limit` (at most 0x80) with the has-zero-byte
// trick, which may also flag bytes above a match (borrows) but never below one: the lowest flag is
// exact, and so is "any flag".
std::uint64_t bytes_below(std::uint64_t word, unsigned char limit) {
  constexpr std::uint64_t kHighBits = 0x8080808080808080;
  return (word - kOnes * limit) & ~word & kHighBits;
}

std::uint64_t bytes_equal(std::uint64_t word, char c) {
  return bytes_below(word ^ (kOnes * static_cast<unsigned char>(c)), 1);
}

std::uint64_t load_word(const char* p) {
  std::uint64_t word;
  std::memcpy(&word, p, sizeof word);
  return word;
}

// `p` points just after a string's opening quote; returns its closing quote, or nullptr when the
// string holds a raw control character or an invalid escape. simdjson's first stage has already
// checked that every string is closed and that the text is valid UTF-8.
//
// Bytes are read eight at a time, which the line's padding allows: a read starts at most at the
// closing quote.
const char* string_end(const char* p) {
  for (;;) {
    const std::uint64_t word = load_word(p);
    const std::uint64_t quotes = bytes_equal(word, '"');
    const std::uint64_t specials = quotes | bytes_equal(word, '\\') | bytes_below(word, 0x20);
    if (specials == 0) {
      p += 8;
      continue;
    }
    const int first = std::countr_zero(specials);
    p += first / 8;
    if (quotes & (std::uint64_t{1} << first)) return p;
    p = escape_end(p);
    if (p == nullptr) return nullptr;
    ++p;
  }
}

// Whether the line is plain (see the top of the file). Eight bytes at a time; the bytes of the
// last word past the line, in its padding, are masked out.
bool is_plain(std::string_view line) {
  const char* p = line.data();
  std::size_t left = line.size();
  const auto specials = [](std::uint64_t word) {
    return bytes_equal(word, '\\') | bytes_below(word, 0x20);
  };
  for (; left >= 16; left -= 16, p += 16) {
    if ((specials(load_word(p)) | specials(load_word(p + 8))) != 0) return false;
  }
  for (; left >= 8; left -= 8, p += 8) {
    if (specials(load_word(p)) != 0) return false;
  }
  if (left == 0) return true;
  const std::uint64_t in_line = (std::uint64_t{1} << (8 * left)) - 1;
  return (specials(load_word(p)) & in_line) == 0;
}

// Writes compact JSON made of validated input tokens and punctuation. A piece that follows the
// previous one directly in the input, as in already compact input, only extends a pending run of
// input bytes, so a compact row image is copied with one append instead of one per token. The
// output is the same bytes either way: each piece is either those very input bytes or, for
// punctuation not found right there, the character itself.
class CompactWriter {
 public:
  explicit CompactWriter(std::string& out) : out_(out) {}

  // Input bytes [begin, end) of a checked token.
  void copy(const char* begin, const char* end) {
    if (begin != run_end_) {
      flush();
      run_begin_ = begin;
    }
    run_end_ = end;
  }

  // The run never goes past the line: it only grows over tokens and the structural characters
  // between them that simdjson found in the line, so the byte read here is in the line or its
  // padding.
  void punctuation(char c) {
    if (run_end_ != nullptr && *run_end_ == c) {
      ++run_end_;
      return;
    }
    flush();
    out_.push_back(c);
  }

  // Moves everything written so far to `target`, at its exact size.
  void finish(std::string& target) {
    if (out_.empty()) {
      target.assign(run_begin_, run_end_);
    } else {
      flush();
      target.assign(out_);
    }
    run_begin_ = run_end_ = nullptr;
  }

 private:
  void flush() {
    out_.append(run_begin_, run_end_);
    run_begin_ = run_end_ = nullptr;
  }

  std::string& out_;
  const char* run_begin_ = nullptr;
  const char* run_end_ = nullptr;
};

bool append_raw_string(const char* begin, CompactWriter& out, std::string& error) {
  const char* end = string_end(begin);
  if (end == nullptr) {
    error = kBadStringMessage;
    return false;
  }
  out.copy(begin - 1, end + 1);
  return true;
}

// Containers nest at most this deep in a line. The checks recurse once per level and a line is
// untrusted input: without a bound, a few kilobytes of "[[[[..." overflow the stack (found by
// fuzz_native_line). Row images nest far less deeply than this.
constexpr int kMaxNesting = 512;

bool too_deep(std::string& error) {
  error = "invalid JSON: nested deeper than " + std::to_string(kMaxNesting) + " levels";
  return false;
}

// Values and fields are used in place, by reference, throughout: each copy (passed by value, or
// moved out of its simdjson_result) stalls on the stores that just built it, a measurable share
// of the parse.
bool append_compact(od::value& value, CompactWriter& out, std::string& error, int depth);

bool append_object(od::object& object, CompactWriter& out, std::string& error, int depth) {
  if (depth > kMaxNesting) return too_deep(error);
  bool first = true;
  for (auto field_result : object) {
    if (auto code = field_result.error()) {
      error = invalid_json(code);
      return false;
    }
    od::field&& field = std::move(field_result).value_unsafe();
    if (!first) out.punctuation(',');
    first = false;
    if (!append_raw_string(field.key().raw(), out, error)) return false;
    out.punctuation(':');
    od::value& value = field.value();
    if (!append_compact(value, out, error, depth)) return false;
  }
  out.punctuation('}');
  return true;
}

bool append_array(od::array& array, CompactWriter& out, std::string& error, int depth) {
  if (depth > kMaxNesting) return too_deep(error);
  bool first = true;
  for (auto element_result : array) {
    od::value element;
    if (auto code = std::move(element_result).get(element)) {
      error = invalid_json(code);
      return false;
    }
    if (!first) out.punctuation(',');
    first = false;
    if (!append_compact(element, out, error, depth)) return false;
  }
  out.punctuation(']');
  return true;
}

bool check_literal(std::string_view token, std::string_view expected, std::string& error) {
  if (token == expected) return true;
  error = "invalid JSON: unexpected token " + std::string(token.substr(0, 32));
  return false;
}

bool append_literal(od::value& value, std::string_view expected, CompactWriter& out,
                    std::string& error) {
  std::string_view token = trimmed_token(value);
  if (!check_literal(token, expected, error)) return false;
  out.copy(token.data(), token.data() + token.size());
  return true;
}

// Appends `value` as compact JSON, checking it completely (see the comment at the top).
bool append_compact(od::value& value, CompactWriter& out, std::string& error, int depth) {
  od::json_type type;
  if (auto code = value.type().get(type)) {
    error = invalid_json(code);
    return false;
  }
  switch (type) {
    case od::json_type::object: {
      // The type comes from the value's first byte, the brace, which thus starts a run.
      const char* brace = value.raw_json_token().data();
      od::object object;
      if (auto code = value.get_object().get(object)) {
        error = invalid_json(code);
        return false;
      }
      out.copy(brace, brace + 1);
      return append_object(object, out, error, depth + 1);
    }
    case od::json_type::array: {
      const char* bracket = value.raw_json_token().data();
      od::array array;
      if (auto code = value.get_array().get(array)) {
        error = invalid_json(code);
        return false;
      }
      out.copy(bracket, bracket + 1);
      return append_array(array, out, error, depth + 1);
    }
    case od::json_type::string: {
      od::raw_json_string raw;
      if (auto code = value.get_raw_json_string().get(raw)) {
        error = invalid_json(code);
        return false;
      }
      return append_raw_string(raw.raw(), out, error);
    }
    case od::json_type::number: {
      std::string_view token = trimmed_token(value);
      if (!is_json_number(token)) {
        error = "invalid JSON: malformed number " + std::string(token.substr(0, 32));
        return false;
      }
      out.copy(token.data(), token.data() + token.size());
      return true;
    }
    case od::json_type::boolean:
      return append_literal(value, trimmed_token(value).front() == 't' ? "true" : "false", out,
                            error);
    case od::json_type::null:
      return append_literal(value, "null", out, error);
  }
  error = "invalid JSON: unknown value type";
  return false;
}

// Checks a value of a plain line as completely as append_compact does, in the same order (so
// that the first problem found is the same), without writing it: its strings need no check of
// their own. Like append_compact, it consumes strings but leaves numbers and literals to be
// skipped, so that simdjson's iteration takes the same steps.
//
// It also clears `compact` when whitespace separates two of the value's tokens (or follows it),
// looking only next to the tokens: simdjson has checked that nothing else can be there. A key
// must follow the "{" or "," before its opening quote directly; two bytes before its value must be
// its closing quote (the colon is then the byte between); an element must follow its "[" or ","
// directly; a scalar's or string's raw token runs up to the next token, whitespace included; a
// container's last byte before its closing brace or bracket is that of its last value, or the
// opening one.
bool check_plain(od::value& value, bool& compact, std::string& error, int depth);

bool is_compact_end(std::string_view raw) {
  return raw.size() >= 2 && !is_json_space(raw.back()) && !is_json_space(raw[raw.size() - 2]);
}

// `text` receives the object's raw text, whitespace after it included.
bool check_plain_object(od::object& object, bool& compact, std::string_view& text,
                        std::string& error, int depth) {
  if (depth > kMaxNesting) return too_deep(error);
  for (auto field_result : object) {
    if (auto code = field_result.error()) {
      error = invalid_json(code);
      return false;
    }
    od::field&& field = std::move(field_result).value_unsafe();
    const char* key = field.key().raw();
    od::value& value = field.value();
    const char* start = value.raw_json_token().data();
    compact &= (key[-2] == '{' || key[-2] == ',') && start[-2] == '"';
    if (!check_plain(value, compact, error, depth)) return false;
  }
  if (auto code = object.raw_json().get(text)) {
    error = invalid_json(code);
    return false;
  }
  compact &= is_compact_end(text);
  return true;
}

bool check_plain_array(od::array& array, bool& compact, std::string& error, int depth) {
  if (depth > kMaxNesting) return too_deep(error);
  for (auto element_result : array) {
    od::value element;
    if (auto code = std::move(element_result).get(element)) {
      error = invalid_json(code);
      return false;
    }
    const char* start = element.raw_json_token().data();
    compact &= start[-1] == '[' || start[-1] == ',';
    if (!check_plain(element, compact, error, depth)) return false;
  }
  std::string_view text;
  if (auto code = array.raw_json().get(text)) {
    error = invalid_json(code);
    return false;
  }
  compact &= is_compact_end(text);
  return true;
}

// A scalar's token without the whitespace after it, clearing `compact` if there was some.
std::string_view scalar_token(od::value& value, bool& compact) {
  std::string_view token = value.raw_json_token();
  const std::size_t size = token.size();
  while (!token.empty() && is_json_space(token.back())) token.remove_suffix(1);
  compact &= token.size() == size;
  return token;
}

bool check_plain(od::value& value, bool& compact, std::string& error, int depth) {
  od::json_type type;
  if (auto code = value.type().get(type)) {
    error = invalid_json(code);
    return false;
  }
  switch (type) {
    case od::json_type::object: {
      od::object object;
      if (auto code = value.get_object().get(object)) {
        error = invalid_json(code);
        return false;
      }
      std::string_view text;
      return check_plain_object(object, compact, text, error, depth + 1);
    }
    case od::json_type::array: {
      od::array array;
      if (auto code = value.get_array().get(array)) {
        error = invalid_json(code);
        return false;
      }
      return check_plain_array(array, compact, error, depth + 1);
    }
    case od::json_type::string: {
      scalar_token(value, compact);
      od::raw_json_string raw;
      if (auto code = value.get_raw_json_string().get(raw)) {
        error = invalid_json(code);
        return false;
      }
      return true;
    }
    case od::json_type::number: {
      std::string_view token = scalar_token(value, compact);
      if (is_json_number(token)) return true;
      error = "invalid JSON: malformed number " + std::string(token.substr(0, 32));
      return false;
    }
    case od::json_type::boolean: {
      std::string_view token = scalar_token(value, compact);
      return check_literal(token, token.front() == 't' ? "true" : "false", error);
    }
    case od::json_type::null:
      return check_literal(scalar_token(value, compact), "null", error);
  }
  error = "invalid JSON: unknown value type";
  return false;
}

// Each known field's name followed by the closing quote of its key, by bit number.
constexpr std::string_view kQuotedNames[] = {"lsn\"",    "seq\"",    "timestamp\"", "txid\"",
                                             "source\"", "entity\"", "key\"",       "operation\"",
                                             "old\"",    "new\"",    "unchanged\"", "old_key\""};

constexpr std::string_view quoted_name(Field field) {
  return kQuotedNames[std::countr_zero(static_cast<unsigned>(field))];
}

std::string_view field_name(Field field) {
  std::string_view name = quoted_name(field);
  name.remove_suffix(1);
  return name;
}

// Whether the raw key at `raw` (just past its opening quote) names `field`. Keys are compared in
// their raw form: a known name spelled with escapes counts as unknown. Reads past the key at most
// the length of the longest name, within the line and its padding.
bool key_is(const char* raw, Field field) {
  const std::string_view quoted = quoted_name(field);
  return std::memcmp(raw, quoted.data(), quoted.size()) == 0;
}

// The known field a raw key names, or kUnknown.
Field field_of(const char* raw) {
  const auto one = [raw](Field a) { return key_is(raw, a) ? a : kUnknown; };
  const auto either = [raw](Field a, Field b) {
    return key_is(raw, a) ? a : key_is(raw, b) ? b : kUnknown;
  };
  switch (raw[0]) {
    case 'l':
      return one(kLsn);
    case 's':
      return either(kSeq, kSource);
    case 't':
      return either(kTimestamp, kTxid);
    case 'e':
      return one(kEntity);
    case 'k':
      return one(kKey);
    case 'o': {
      // "old_key" last: every line has "operation" and "old", few have it.
      const Field field = either(kOperation, kOld);
      return field != kUnknown ? field : one(kOldKey);
    }
    case 'n':
      return one(kNew);
    case 'u':
      return one(kUnchanged);
    default:
      return kUnknown;
  }
}

// Reads the lines's fields one by one; `error` holds the first problem.
class LineReader {
 public:
  LineReader(Change& change, bool plain) : change_(change), plain_(plain) {}

  bool read(od::object& object);
  const std::string& error() const { return error_; }

 private:
  bool field(Field field, od::value& value);
  bool mark_seen(Field field) {
    if (seen_ & field) return fail_duplicate(field);
    seen_ |= field;
    return true;
  }
  bool fail_duplicate(Field field);
  bool type_of(od::value& value, od::json_type& type);
  bool is_null(od::value& value, od::json_type type);
  bool read_unsigned(od::value& value, Field field, std::uint64_t& out) {
    // Tried first, as it succeeds for every well-formed line; only its failure needs the type.
    if (value.get_uint64().get(out) == simdjson::SUCCESS) return true;
    return fail_unsigned(value, field);
  }
  bool fail_unsigned(od::value& value, Field field);
  bool read_seq(od::value& value);
  bool read_txid(od::value& value);
  bool read_timestamp(od::value& value);
  bool read_other_timestamp(od::value& value);
  bool read_text(od::value& value, Field field, std::string_view& out, bool allow_null);
  bool read_source(od::value& value);
  bool read_entity(od::value& value);
  bool read_operation(od::value& value);
  bool read_row(od::value& value, Field field, std::string& out);
  bool read_plain_row(od::value& value, std::string& out);
  bool read_unchanged(od::value& value);
  bool fail(std::string message) {
    error_ = std::move(message);
    return false;
  }

  Change& change_;
  const bool plain_;
  unsigned seen_ = 0;
  std::string error_;
};

bool LineReader::read(od::object& object) {
  for (auto field_result : object) {
    if (auto code = field_result.error()) return fail(invalid_json(code));
    // In place, not copied: see append_compact.
    od::field&& field_value = std::move(field_result).value_unsafe();
    const char* key = field_value.key().raw();
    if (!plain_ && string_end(key) == nullptr) return fail(kBadStringMessage);
    od::value& value = field_value.value();
    if (!field(field_of(key), value)) return false;
  }
  if (!(seen_ & kLsn)) return fail("missing \"lsn\"");
  if (!(seen_ & kTimestamp)) return fail("missing \"timestamp\"");
  if (!(seen_ & kEntity)) return fail("missing \"entity\"");
  if (!(seen_ & kOperation)) return fail("missing \"operation\"");
  if (!(seen_ & kKey)) change_.key = "{}";
  return true;
}

bool LineReader::field(Field field, od::value& value) {
  if (field == kUnknown) return true;  // unknown fields are ignored, for forward compatibility
  if (!mark_seen(field)) return false;
  switch (field) {
    case kLsn:
      return read_unsigned(value, kLsn, change_.lsn);
    case kSeq:
      return read_seq(value);
    case kTimestamp:
      return read_timestamp(value);
    case kTxid:
      return read_txid(value);
    case kSource:
      return read_source(value);
    case kEntity:
      return read_entity(value);
    case kKey:
      return read_row(value, kKey, change_.key);
    case kOperation:
      return read_operation(value);
    case kOld:
      return read_row(value, kOld, change_.old_row);
    case kNew:
      return read_row(value, kNew, change_.new_row);
    case kUnchanged:
      return read_unchanged(value);
    case kOldKey:
      return read_row(value, kOldKey, change_.old_key);
    case kUnknown:
      break;
  }
  return true;
}

bool LineReader::fail_duplicate(Field field) {
  return fail("duplicate " + in_quotes(field_name(field)));
}

bool LineReader::type_of(od::value& value, od::json_type& type) {
  if (auto code = value.type().get(type)) return fail(invalid_json(code));
  return true;
}

// True for a well-formed null; a malformed literal such as "nul" sets the error and returns true
// too, so callers test error_ afterwards.
bool LineReader::is_null(od::value& value, od::json_type type) {
  if (type != od::json_type::null) return false;
  if (trimmed_token(value) != "null") {
    fail("invalid JSON: unexpected token " + std::string(trimmed_token(value).substr(0, 32)));
  }
  return true;
}

// The error for a value that get_uint64() refused.
bool LineReader::fail_unsigned(od::value& value, Field field) {
  od::json_type type;
  if (!type_of(value, type)) return false;
  if (type == od::json_type::number) {
    std::string_view token = trimmed_token(value);
    if (!is_json_number(token)) {
      return fail("invalid JSON: malformed number " + std::string(token.substr(0, 32)));
    }
  }
  return fail(in_quotes(field_name(field)) + " must be an unsigned integer");
}

bool LineReader::read_seq(od::value& value) {
  std::uint64_t seq = 0;
  if (!read_unsigned(value, kSeq, seq)) return false;
  if (seq > UINT32_MAX) return fail("\"seq\" must be an unsigned 32-bit integer");
  change_.seq = static_cast<std::uint32_t>(seq);
  return true;
}

bool LineReader::read_txid(od::value& value) {
  std::uint64_t txid = 0;
  if (value.get_uint64().get(txid) != simdjson::SUCCESS) {
    od::json_type type;
    if (!type_of(value, type)) return false;
    if (is_null(value, type)) return error_.empty();
    if (!read_unsigned(value, kTxid, txid)) return false;
  }
  change_.txid = txid;
  return true;
}

bool LineReader::read_timestamp(od::value& value) {
  if (value.get_int64().get(change_.timestamp_us) == simdjson::SUCCESS) return true;
  return read_other_timestamp(value);
}

// A timestamp that is not an int64: an RFC 3339 string, or an error.
bool LineReader::read_other_timestamp(od::value& value) {
  od::json_type type;
  if (!type_of(value, type)) return false;
  if (type == od::json_type::number) {
    std::string_view token = trimmed_token(value);
    if (!is_json_number(token)) {
      return fail("invalid JSON: malformed number " + std::string(token.substr(0, 32)));
    }
  } else if (type == od::json_type::string) {
    std::string_view text;
    if (auto code = value.get_string().get(text)) return fail(invalid_json(code));
    auto parsed = parse_rfc3339_us(text);
    if (!parsed) return fail("\"timestamp\" is not a valid RFC 3339 date-time: " + in_quotes(text));
    change_.timestamp_us = *parsed;
    return true;
  }
  return fail(
      "\"timestamp\" must be an integer (microseconds since the Unix epoch) or an RFC 3339 "
      "string");
}

// The text stays valid for the document's life: simdjson unescapes it into the parser's buffer,
// or, in a plain line, it is the string's bytes in the line.
bool LineReader::read_text(od::value& value, Field field, std::string_view& out, bool allow_null) {
  od::json_type type;
  if (!type_of(value, type)) return false;
  if (allow_null && is_null(value, type)) return error_.empty();
  if (type != od::json_type::string) {
    return fail(in_quotes(field_name(field)) +
                (field == kEntity ? " must be a non-empty string" : " must be a string"));
  }
  if (plain_) {
    std::string_view token = trimmed_token(value);
    od::raw_json_string raw;
    if (auto code = value.get_raw_json_string().get(raw)) return fail(invalid_json(code));
    out = token.substr(1, token.size() - 2);
    return true;
  }
  if (auto code = value.get_string().get(out)) return fail(invalid_json(code));
  return true;
}

bool LineReader::read_source(od::value& value) {
  std::string_view text;
  if (!read_text(value, kSource, text, true)) return false;
  change_.source.assign(text);
  return true;
}

bool LineReader::read_entity(od::value& value) {
  std::string_view text;
  if (!read_text(value, kEntity, text, false)) return false;
  if (text.empty()) return fail("\"entity\" must be a non-empty string");
  change_.entity.assign(text);
  return true;
}

bool LineReader::read_operation(od::value& value) {
  std::string_view name;
  if (!read_text(value, kOperation, name, false)) return false;
  auto operation = parse_operation(name);
  if (!operation) return fail(std::string("unknown operation ") + in_quotes(name));
  change_.operation = *operation;
  return true;
}

bool LineReader::read_row(od::value& value, Field field, std::string& out) {
  const bool is_key = field == kKey;
  od::json_type type;
  if (!type_of(value, type)) return false;
  if (is_null(value, type)) {
    if (is_key) out = "{}";
    return error_.empty();
  }
  if (type != od::json_type::object) {
    return fail(in_quotes(field_name(field)) +
                (is_key ? " must be an object" : " must be an object or null"));
  }
  if (plain_) return read_plain_row(value, out);
  // Built in a reused buffer (untouched when the image is already compact), then copied once at
  // its exact size. Like the parser, the buffer is not kept after a huge line.
  thread_local std::string scratch;
  scratch.clear();
  CompactWriter writer(scratch);
  const bool ok = append_compact(value, writer, error_, 0);
  if (ok) writer.finish(out);
  if (scratch.capacity() > kReusedParserCapacity) std::string().swap(scratch);
  return ok;
}

// A row image of a plain line, once checked through simdjson's iteration, is valid JSON: its raw
// text is its compact form unless it has whitespace outside its strings, which simdjson::minify
// then takes out. Most images have none, and minify costs as much as the rest of the row.
bool LineReader::read_plain_row(od::value& value, std::string& out) {
  od::object object;
  if (auto code = value.get_object().get(object)) return fail(invalid_json(code));
  bool compact = true;
  std::string_view raw;
  if (!check_plain_object(object, compact, raw, error_, 1)) return false;
  while (!raw.empty() && is_json_space(raw.back())) raw.remove_suffix(1);
  if (compact) {
    out.assign(raw);
    return true;
  }
  // minify may write whole blocks, up to the padding past the input's length.
  out.resize(raw.size() + simdjson::SIMDJSON_PADDING);
  std::size_t size = 0;
  if (auto code = simdjson::minify(raw.data(), raw.size(), out.data(), size)) {
    return fail(invalid_json(code));
  }
  out.resize(size);
  return true;
}

bool LineReader::read_unchanged(od::value& value) {
  od::json_type type;
  if (!type_of(value, type)) return false;
  if (is_null(value, type)) return error_.empty();
  const char* message = "\"unchanged\" must be an array of strings";
  if (type != od::json_type::array) return fail(message);
  od::array array;
  if (auto code = value.get_array().get(array)) return fail(invalid_json(code));
  for (auto element_result : array) {
    od::value element;
    if (auto code = std::move(element_result).get(element)) return fail(invalid_json(code));
    if (!type_of(element, type)) return false;
    if (type != od::json_type::string) return fail(message);
    std::string_view column;
    if (auto code = element.get_string().get(column)) return fail(invalid_json(code));
    change_.unchanged_columns.emplace_back(column);
  }
  return true;
}

Status parse_with(od::parser& parser, std::string_view line, Change& out) {
  od::document document;
  simdjson::padded_string_view input(line.data(), line.size(),
                                     line.size() + simdjson::SIMDJSON_PADDING);
  if (auto code = parser.iterate(input).get(document)) return fail(invalid_json(code));
  od::json_type type;
  if (auto code = document.type().get(type)) return fail(invalid_json(code));
  if (type != od::json_type::object) {
    std::string_view token;
    if (auto code = document.raw_json_token().get(token)) return fail(invalid_json(code));
    while (!token.empty() && is_json_space(token.back())) token.remove_suffix(1);
    if (is_well_formed_scalar(type, token)) return fail("a change must be a JSON object");
    return fail("invalid JSON: unexpected token " + std::string(token.substr(0, 32)));
  }
  od::object object;
  if (auto code = document.get_object().get(object)) return fail(invalid_json(code));

  LineReader reader(out, is_plain(line));
  if (!reader.read(object)) return fail(reader.error());
  // Past the object's closing brace the document must be over.
  const char* trailing = nullptr;
  if (document.current_location().get(trailing) == simdjson::SUCCESS) {
    return fail("invalid JSON: unexpected content after the object");
  }
  return ok();
}

}  // namespace

Status parse_native_line_padded(std::string_view line, Change& out) {
  if (line.size() > kReusedParserCapacity) {
    od::parser parser;
    return parse_with(parser, line, out);
  }
  thread_local od::parser parser;
  return parse_with(parser, line, out);
}

Result<Change> parse_native_line_padded(std::string_view line) {
  Result<Change> result;
  if (auto parsed = parse_native_line_padded(line, *result); !parsed) {
    return tl::unexpected(parsed.error());
  }
  return result;
}

Result<Change> parse_native_line(std::string_view line) {
  thread_local std::string padded;
  padded.assign(line);
  padded.append(simdjson::SIMDJSON_PADDING, ' ');
  auto result = parse_native_line_padded(std::string_view(padded.data(), line.size()));
  if (padded.capacity() > kReusedParserCapacity) std::string().swap(padded);
  return result;
}

}  // namespace cdcd
