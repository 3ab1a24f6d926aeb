#pragma once

#include <charconv>
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>

// Append-only JSON building for the encoders: no DOM, no temporary strings, so that encoding a
// change costs a handful of appends into one reused buffer.
namespace cdcd::json {

// Appends `text` as a JSON string (RFC 8259): quotes, escaped '"' and '\', control characters as
// \b \f \n \r \t or \u00XX. Valid UTF-8 passes through unchanged; invalid byte sequences become
// U+FFFD so that the output is always valid JSON.
void append_string(std::string& out, std::string_view text);

template <std::integral T>
void append_integer(std::string& out, T value) {
  char buffer[24];
  auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  out.append(buffer, result.ptr);
}

// Appends a JSON text kept verbatim (a row image, a key), or `null` when it is empty.
inline void append_raw_or_null(std::string& out, std::string_view json_text) {
  if (json_text.empty()) {
    out += "null";
  } else {
    out += json_text;
  }
}

// Appends `bytes` in base64 (RFC 4648, padded), e.g. to keep bytes that are not valid UTF-8.
void append_base64(std::string& out, std::string_view bytes);

// Appends `value` as exactly `digits` upper-case hexadecimal digits (the low ones), so that
// fixed-width tokens compare in the same order as the numbers they encode.
void append_hex(std::string& out, std::uint64_t value, int digits);

}  // namespace cdcd::json
