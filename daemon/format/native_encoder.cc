#include "daemon/core/change.h"
#include "daemon/format/encoders.h"
#include "daemon/format/json_writer.h"

namespace cdcd::format_internal {

// The hot path of the default pipeline (jsonl -> file): plain appends into one buffer, row images
// copied verbatim, no parsing.
void encode_native(const Change& change, std::string& out) {
  constexpr std::size_t kFixedPart = 192;  // field names, numbers and punctuation
  std::size_t unchanged_size = 0;
  for (const auto& column : change.unchanged_columns) unchanged_size += column.size() + 3;
  out.reserve(out.size() + kFixedPart + change.source.size() + change.entity.size() +
              change.key.size() + change.old_key.size() + change.old_row.size() +
              change.new_row.size() + unchanged_size);

  out += "{\"lsn\":";
  json::append_integer(out, change.lsn);
  out += ",\"seq\":";
  json::append_integer(out, change.seq);
  out += ",\"timestamp\":";
  json::append_integer(out, change.timestamp_us);
  if (change.txid) {
    out += ",\"txid\":";
    json::append_integer(out, *change.txid);
  }
  if (!change.source.empty()) {
    out += ",\"source\":";
    json::append_string(out, change.source);
  }
  out += ",\"entity\":";
  json::append_string(out, change.entity);
  out += ",\"key\":";
  out += change.key.empty() ? std::string_view("{}") : std::string_view(change.key);
  if (!change.old_key.empty()) {
    out += ",\"old_key\":";
    out += change.old_key;
  }
  out += ",\"operation\":\"";
  out += to_string(change.operation);
  out += "\",\"old\":";
  json::append_raw_or_null(out, change.old_row);
  out += ",\"new\":";
  json::append_raw_or_null(out, change.new_row);
  if (!change.unchanged_columns.empty()) {
    out += ",\"unchanged\":[";
    for (std::size_t i = 0; i < change.unchanged_columns.size(); ++i) {
      if (i > 0) out += ',';
      json::append_string(out, change.unchanged_columns[i]);
    }
    out += ']';
  }
  out += '}';
}

}  // namespace cdcd::format_internal
