#pragma once

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

// What an encoder needs to know beyond the change itself.
struct EncodeContext {
  std::string_view source_name;  // the config name of the source (Debezium source.name fallback)
  std::string_view connector;    // the source's type (Debezium source.connector)
  std::int64_t processed_at_us = 0;  // when the sink serialized it (Debezium's top-level ts_ms)
};

// Appends one serialized change, as a single line of compact JSON without the newline.
void encode_change(Format format, const Change& change, const EncodeContext& context,
                   std::string& out);

// Parses one line of the native format (also accepts an RFC 3339 string as "timestamp").
// The error message says what is wrong, e.g. "missing \"lsn\"" or "invalid JSON: ...".
Result<Change> parse_native_line(std::string_view line);

}  // namespace cdcd
