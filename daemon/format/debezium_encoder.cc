#include <string_view>

#include "daemon/core/change.h"
#include "daemon/format/encoders.h"
#include "daemon/format/json_writer.h"

namespace cdcd::format_internal {
namespace {

// Debezium's `unavailable.value.placeholder` default: its after image always carries every column,
// and a value the database did not send (unchanged TOAST) is this marker, never null.
constexpr std::string_view kUnavailableValue = "__debezium_unavailable_value";

std::string_view op_code(Operation operation) {
  switch (operation) {
    case Operation::kInsert:
      return "c";
    case Operation::kUpdate:
      return "u";
    case Operation::kDelete:
      return "d";
    case Operation::kTruncate:
      return "t";
    case Operation::kRead:
      return "r";
  }
  return "?";
}

// Appends the new row image with a placeholder for each unchanged column.
void append_after(const Change& change, std::string& out) {
  const std::string_view row = change.new_row;
  const auto close = row.rfind('}');
  if (change.unchanged_columns.empty() || close == std::string_view::npos) {
    json::append_raw_or_null(out, row);
    return;
  }
  const std::string_view body = row.substr(0, close);  // "{...", without the closing brace
  out += body;
  const auto last = body.find_last_not_of(" \t\r\n");
  bool first = last == std::string_view::npos || body[last] == '{';
  for (const auto& column : change.unchanged_columns) {
    if (!first) out += ',';
    first = false;
    json::append_string(out, column);
    out += ':';
    json::append_string(out, kUnavailableValue);
  }
  out += '}';
}

void append_source(const Change& change, const EncodeContext& context, std::string& out) {
  const EntityName name = split_entity(change.entity);
  out += "{\"version\":\"cdcd-" CDCD_VERSION "\",\"connector\":";
  json::append_string(out, context.connector);
  out += ",\"name\":";
  json::append_string(out, context.source_name);
  out += ",\"ts_ms\":";
  json::append_integer(out, floor_div(change.timestamp_us, 1000));
  out +=
      change.operation == Operation::kRead ? ",\"snapshot\":\"true\"" : ",\"snapshot\":\"false\"";
  out += ",\"db\":";
  json::append_string(out, change.source.empty() ? context.source_name : change.source);
  // A JSON array of strings serialized into a string, as Debezium's PostgreSQL connector does.
  out += ",\"sequence\":\"[\\\"";
  json::append_integer(out, change.lsn);
  out += "\\\",\\\"";
  json::append_integer(out, change.seq);
  out += "\\\"]\"";
  if (!name.schema.empty()) {
    out += ",\"schema\":";
    json::append_string(out, name.schema);
  }
  out += ",\"table\":";
  json::append_string(out, name.table);
  out += ",\"txId\":";
  if (change.txid) {
    json::append_integer(out, *change.txid);
  } else {
    out += "null";
  }
  out += ",\"lsn\":";
  json::append_integer(out, change.lsn);
  out += '}';
}

}  // namespace

void encode_debezium(const Change& change, const EncodeContext& context, std::string& out) {
  out.reserve(out.size() + 384 + change.entity.size() + change.old_row.size() +
              change.new_row.size());
  const bool truncate = change.operation == Operation::kTruncate;
  out += "{\"before\":";
  json::append_raw_or_null(out, truncate ? std::string_view() : change.old_row);
  out += ",\"after\":";
  if (truncate) {
    out += "null";
  } else {
    append_after(change, out);
  }
  out += ",\"source\":";
  append_source(change, context, out);
  out += ",\"op\":\"";
  out += op_code(change.operation);
  out += "\",\"ts_ms\":";
  json::append_integer(out, floor_div(context.processed_at_us, 1000));
  out += ",\"transaction\":null}";
}

}  // namespace cdcd::format_internal
