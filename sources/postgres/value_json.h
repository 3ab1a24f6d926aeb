#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cdcd::postgres {

// How a PostgreSQL type's text output becomes JSON.
enum class ValueKind : std::uint8_t {
  kBool,        // 't'/'f' → true/false
  kInteger,     // int2/4/8, oid: the digits as a JSON number
  kFloat,       // float4/8: a number; NaN and ±Infinity as strings
  kString,      // numeric (no precision lost), text, uuid, types not built in: a JSON string
  kJson,        // json/jsonb: embedded as JSON (compacted)
  kBytea,       // hex output → base64 string
  kDateTime,    // date, timestamp: ISO 8601 with 'T'
  kDateTimeTz,  // timestamptz, timetz: ISO 8601 with a ±hh:mm offset
  kArray,       // {a,b} → JSON array of the element type; other lower bounds: the text
};

// A resolved type. Arrays point at their element type (owned by the same table).
struct TypeInfo {
  ValueKind kind = ValueKind::kString;
  const TypeInfo* element = nullptr;
  char delimiter = ',';
};

// Appends `text` as a JSON string literal, quotes included.
void append_json_string(std::string& out, std::string_view text);

// Appends the JSON value of a non-NULL value given in PostgreSQL's text output format (with the
// session settings of source_overrides()).
void append_json_value(std::string& out, const TypeInfo& type, std::string_view text);

// Appends `json` without insignificant whitespace, so that a row stays on one line.
void append_compact_json(std::string& out, std::string_view json);

}  // namespace cdcd::postgres
