#include "daemon/format/json_writer.h"

#include <array>
#include <cassert>

#include <simdjson.h>
#include <nlohmann/json.hpp>

namespace cdcd::json {
namespace {

// Bytes that may not appear raw inside a JSON string.
constexpr std::array<bool, 256> kNeedsEscape = [] {
  std::array<bool, 256> table{};
  for (int c = 0; c < 0x20; ++c) table[c] = true;
  table['"'] = true;
  table['\\'] = true;
  return table;
}();

void append_escape(std::string& out, unsigned char c) {
  switch (c) {
    case '"':
      out += "\\\"";
      return;
    case '\\':
      out += "\\\\";
      return;
    case '\b':
      out += "\\b";
      return;
    case '\f':
      out += "\\f";
      return;
    case '\n':
      out += "\\n";
      return;
    case '\r':
      out += "\\r";
      return;
    case '\t':
      out += "\\t";
      return;
    default: {
      static constexpr char kHex[] = "0123456789abcdef";
      const char escape[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
      out.append(escape, sizeof(escape));
    }
  }
}

}  // namespace

void append_string(std::string& out, std::string_view text) {
  const std::size_t start = out.size();
  out += '"';
  unsigned char seen = 0;  // OR of every byte: its high bit tells whether the text is pure ASCII
  std::size_t run_start = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    seen |= c;
    if (kNeedsEscape[c]) {
      out.append(text.data() + run_start, i - run_start);
      append_escape(out, c);
      run_start = i + 1;
    }
  }
  out.append(text.data() + run_start, text.size() - run_start);
  out += '"';
  // Invalid UTF-8 is rare (names and values come from parsed JSON or a database), so it is only
  // checked for non-ASCII text, and only then re-encoded by nlohmann with U+FFFD replacements.
  if ((seen & 0x80) != 0 && !simdjson::validate_utf8(text)) {
    out.resize(start);
    out += nlohmann::json(std::string(text))
               .dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
  }
}

void append_base64(std::string& out, std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    std::uint32_t n = (static_cast<unsigned char>(bytes[i]) << 16) |
                      (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                      static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  std::size_t rest = bytes.size() - i;
  if (rest == 0) return;
  std::uint32_t n = static_cast<unsigned char>(bytes[i]) << 16;
  if (rest == 2) n |= static_cast<unsigned char>(bytes[i + 1]) << 8;
  out += kAlphabet[(n >> 18) & 63];
  out += kAlphabet[(n >> 12) & 63];
  out += rest == 2 ? kAlphabet[(n >> 6) & 63] : '=';
  out += '=';
}

void append_hex(std::string& out, std::uint64_t value, int digits) {
  assert(digits > 0 && digits <= 16);
  static constexpr char kDigits[] = "0123456789ABCDEF";
  char buffer[16];
  for (int i = digits - 1; i >= 0; --i) {
    buffer[i] = kDigits[value & 0xF];
    value >>= 4;
  }
  out.append(buffer, static_cast<std::size_t>(digits));
}

}  // namespace cdcd::json
