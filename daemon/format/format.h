#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/core/change.h"
#include "daemon/core/result.h"

namespace cdcd {

// How a sink serializes a change. See docs/formats.md for each shape.
enum class Format {
  kNative,    // the JSONL change-log line the jsonl source reads: file sink output can be replayed
  kDebezium,  // Debezium's payload envelope: before, after, source, op, ts_ms
  kMongodb,   // a MongoDB change event: _id resume token, operationType, ns, documentKey, ...
};

std::optional<Format> parse_format(std::string_view name);
std::string_view to_string(Format format);

// The `debezium` format's options, under the names of Debezium's PostgreSQL connector settings
// (docs/formats.md). They apply to changes whose source attached column types (Change::schema).
struct DebeziumOptions {
  enum class DecimalMode : std::uint8_t { kPrecise, kDouble, kString };
  enum class TimePrecisionMode : std::uint8_t { kAdaptive, kAdaptiveTimeMicroseconds, kConnect };
  enum class IntervalMode : std::uint8_t { kNumeric, kString };
  enum class BinaryMode : std::uint8_t { kBytes, kBase64, kBase64UrlSafe, kHex };
  enum class HstoreMode : std::uint8_t { kJson, kMap };

  DecimalMode decimal = DecimalMode::kPrecise;
  TimePrecisionMode time_precision = TimePrecisionMode::kAdaptive;
  IntervalMode interval = IntervalMode::kNumeric;
  BinaryMode binary = BinaryMode::kBytes;
  HstoreMode hstore = HstoreMode::kJson;
  int money_fraction_digits = 2;
  // Kafka Connect's JsonConverter with schemas.enable=true: {"schema": ..., "payload": ...}.
  bool schemas = false;
  // Debezium's topic.prefix, the first part of struct names; empty: the source's config name.
  std::string topic_prefix;
  // provide.transaction.metadata: BEGIN/END records on <prefix>.<topic.transaction> and the
  // `transaction` block in every change event (docs/formats.md).
  bool transaction_metadata = false;
  std::string transaction_topic = "transaction";
  // heartbeat.interval.ms (zero: none): records on <topic.heartbeat.prefix>.<prefix>.
  std::chrono::milliseconds heartbeat_interval{0};
  std::string heartbeat_topic_prefix = "__debezium-heartbeat";
};

// A change's place in its transaction: Debezium's `transaction` block (event.block).
struct TransactionBlock {
  std::string_view id;
  std::uint64_t total_order = 0;
  std::uint64_t data_collection_order = 0;
};

// What an encoder needs to know beyond the change itself.
struct EncodeContext {
  std::string_view source_name;  // the config name of the source (Debezium source.name fallback)
  std::string_view connector;    // the source's type (Debezium source.connector)
  std::int64_t processed_at_us = 0;  // when the sink serialized it (Debezium's top-level ts_ms)
  const DebeziumOptions* debezium = nullptr;  // null: Debezium's defaults
  // The change's `transaction` block (debezium with transaction metadata); null: `null`.
  const TransactionBlock* transaction = nullptr;
};

// Appends one serialized change, as a single line of compact JSON without the newline.
void encode_change(Format format, const Change& change, const EncodeContext& context,
                   std::string& out);

// Appends the record key of a change as the format writes it: for `debezium` with column types,
// the key columns in Debezium's representation (wrapped in {schema, payload} with `schemas`);
// otherwise `key_json` verbatim. `key_json` is the change's key or its old key.
void encode_key(Format format, const Change& change, std::string_view key_json,
                const EncodeContext& context, std::string& out);

// Parses one line of the native format (also accepts an RFC 3339 string as "timestamp").
// The error message says what is wrong, e.g. "missing \"lsn\"" or "invalid JSON: ...".
Result<Change> parse_native_line(std::string_view line);

}  // namespace cdcd
