#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <simdjson.h>

#include "daemon/core/entity_schema.h"
#include "daemon/format/format.h"

// Debezium's PostgreSQL type mapping (postgresql.adoc, "Data type mappings"): the value and the
// Kafka Connect schema of a column, from the source's JSON value and the column's declared type.
namespace cdcd::format_internal {

enum class DebeziumKind : std::uint8_t {
  kVerbatim,  // the source's JSON as is (text, inet, ranges, ...)
  kEnum,      // io.debezium.data.Enum with its labels
  kBoolean,   // also bit(1): "1" / "0"
  kInt16,
  kInt32,
  kInt64,
  kFloat32,
  kFloat64,
  kNumeric,
  kMoney,
  kDate,
  kTime,
  kTimeTz,
  kTimestamp,
  kTimestampTz,
  kInterval,
  kBytes,
  kBits,  // bit(n > 1), varbit: io.debezium.data.Bits
  kJson,
  kXml,
  kUuid,
  kHstore,
  kPoint,
  kArray,
};

struct ColumnMapping {
  DebeziumKind kind = DebeziumKind::kVerbatim;
  DebeziumKind element = DebeziumKind::kVerbatim;  // for kArray
};

ColumnMapping map_column(const ColumnType& type);

// Appends the Debezium value of a column whose source JSON value is `value`.
void append_debezium_value(std::string& out, const ColumnMapping& mapping, const ColumnType& type,
                           simdjson::dom::element value, const DebeziumOptions& options);

// Appends the JsonConverter schema of a column as a struct field (with "field": name).
void append_field_schema(std::string& out, const ColumnMapping& mapping, const ColumnSchema& column,
                         const DebeziumOptions& options);

// Java BigInteger.toByteArray() of the decimal integer `digits` (optional leading '-'): the
// minimal big-endian two's complement bytes, as Kafka Connect's Decimal stores the unscaled value.
std::string unscaled_bytes(std::string_view digits);

// Days since 1970-01-01 of a proleptic Gregorian date (astronomical year: 1 BC is 0).
std::int64_t days_from_civil(std::int64_t year, unsigned month, unsigned day);

}  // namespace cdcd::format_internal
