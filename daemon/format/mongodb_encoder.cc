#include <algorithm>
#include <chrono>
#include <iterator>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/core.h>
#include <simdjson.h>

#include "daemon/core/change.h"
#include "daemon/format/encoders.h"
#include "daemon/format/json_writer.h"

namespace cdcd::format_internal {
namespace {

std::string_view operation_type(Operation operation) {
  switch (operation) {
    case Operation::kInsert:
    case Operation::kRead:  // a snapshot row is, to a change stream consumer, a document that
                            // appeared
      return "insert";
    case Operation::kUpdate:
      return "update";
    case Operation::kDelete:
      return "delete";
    case Operation::kTruncate:
      // The change event that tells a consumer every document of the namespace is gone.
      return "drop";
  }
  return "unknown";
}

// 16 hex digits of the lsn then 8 of the seq: fixed width, so tokens sort as the changes do.
void append_resume_token(const Change& change, std::string& out) {
  out += "{\"_data\":\"";
  json::append_hex(out, change.lsn, 16);
  json::append_hex(out, change.seq, 8);
  out += "\"}";
}

// Extended JSON: {"$timestamp":{"t":<seconds>,"i":<ordinal>}}, the seq as the ordinal.
void append_cluster_time(const Change& change, std::string& out) {
  out += "{\"$timestamp\":{\"t\":";
  json::append_integer(out, floor_div(change.timestamp_us, 1'000'000));
  out += ",\"i\":";
  json::append_integer(out, change.seq);
  out += "}}";
}

// Extended JSON (relaxed): {"$date":"2025-11-21T10:00:00.123Z"}.
void append_wall_time(std::int64_t timestamp_us, std::string& out) {
  using namespace std::chrono;
  const sys_time<milliseconds> time{milliseconds{floor_div(timestamp_us, 1000)}};
  const auto day = floor<days>(time);
  const year_month_day date{day};
  const hh_mm_ss clock{time - day};
  fmt::format_to(std::back_inserter(out),
                 "{{\"$date\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\"}}",
                 static_cast<int>(date.year()), static_cast<unsigned>(date.month()),
                 static_cast<unsigned>(date.day()), clock.hours().count(), clock.minutes().count(),
                 clock.seconds().count(), clock.subseconds().count());
}

void append_namespace(const Change& change, const EncodeContext& context, std::string& out) {
  const EntityName name = split_entity(change.entity);
  std::string_view db = name.schema;
  if (db.empty())
    db = change.source.empty() ? context.source_name : std::string_view(change.source);
  out += "{\"db\":";
  json::append_string(out, db);
  out += ",\"coll\":";
  json::append_string(out, name.table);
  out += '}';
}

// A top-level field of a row image: its unescaped name and its value's JSON text, verbatim.
struct Field {
  std::string_view name;
  std::string_view value;
};

// Reads the top-level fields of an object. The views point into `parser` and `json`. False when
// the text is not a JSON object (no source produces that; the caller degrades gracefully).
bool read_fields(simdjson::ondemand::parser& parser, const simdjson::padded_string& json,
                 std::vector<Field>& fields) {
  simdjson::ondemand::document document;
  simdjson::ondemand::object object;
  if (parser.iterate(json).get(document) || document.get_object().get(object)) return false;
  for (auto member : object) {
    simdjson::ondemand::field field;
    Field read;
    if (std::move(member).get(field) || field.unescaped_key().get(read.name) ||
        simdjson::to_json_string(field.value()).get(read.value)) {
      return false;
    }
    fields.push_back(read);
  }
  return true;
}

// Finds `name` in `fields`, starting where the previous lookup matched: row images of one table
// list their columns in the same order, so the usual cost is one comparison per column.
const Field* find_field(const std::vector<Field>& fields, std::string_view name,
                        std::size_t& cursor) {
  for (std::size_t step = 0; step < fields.size(); ++step) {
    const std::size_t i = (cursor + step) % fields.size();
    if (fields[i].name == name) {
      cursor = i + 1;
      return &fields[i];
    }
  }
  return nullptr;
}

bool is_unchanged(const Change& change, std::string_view column) {
  return std::find(change.unchanged_columns.begin(), change.unchanged_columns.end(), column) !=
         change.unchanged_columns.end();
}

// updatedFields: fields of the new image that are absent from the old one or whose value text
// differs; removedFields: fields of the old image absent from the new one. Unchanged (TOAST)
// columns are neither. Values are copied verbatim, so numbers keep their exact digits. Comparing
// texts, not parsed values, can at worst report an equal value as updated; it never misses one.
void append_update_description(const Change& change, std::string& out) {
  thread_local simdjson::ondemand::parser old_parser;
  thread_local simdjson::ondemand::parser new_parser;
  const simdjson::padded_string old_json(change.old_row);
  const simdjson::padded_string new_json(change.new_row);
  std::vector<Field> old_fields;
  std::vector<Field> new_fields;
  if (!change.old_row.empty() && !read_fields(old_parser, old_json, old_fields)) old_fields.clear();
  if (!change.new_row.empty() && !read_fields(new_parser, new_json, new_fields)) new_fields.clear();

  out += "{\"updatedFields\":{";
  bool first = true;
  std::size_t cursor = 0;
  for (const Field& field : new_fields) {
    const Field* before = find_field(old_fields, field.name, cursor);
    if ((before != nullptr && before->value == field.value) || is_unchanged(change, field.name)) {
      continue;
    }
    if (!first) out += ',';
    first = false;
    json::append_string(out, field.name);
    out += ':';
    out += field.value;
  }
  out += "},\"removedFields\":[";
  first = true;
  cursor = 0;
  for (const Field& field : old_fields) {
    if (find_field(new_fields, field.name, cursor) != nullptr || is_unchanged(change, field.name)) {
      continue;
    }
    if (!first) out += ',';
    first = false;
    json::append_string(out, field.name);
  }
  out += "],\"truncatedArrays\":[]}";
}

}  // namespace

void encode_mongodb(const Change& change, const EncodeContext& context, std::string& out) {
  out.reserve(out.size() + 320 + change.entity.size() + change.key.size() + change.old_row.size() +
              2 * change.new_row.size());
  const Operation operation = change.operation;
  out += "{\"_id\":";
  append_resume_token(change, out);
  out += ",\"operationType\":\"";
  out += operation_type(operation);
  out += "\",\"clusterTime\":";
  append_cluster_time(change, out);
  out += ",\"wallTime\":";
  append_wall_time(change.timestamp_us, out);
  out += ",\"ns\":";
  append_namespace(change, context, out);
  if (operation != Operation::kTruncate) {
    out += ",\"documentKey\":";
    out += change.key.empty() ? std::string_view("{}") : std::string_view(change.key);
  }
  if (operation == Operation::kInsert || operation == Operation::kRead ||
      operation == Operation::kUpdate) {
    out += ",\"fullDocument\":";
    json::append_raw_or_null(out, change.new_row);
  }
  // MongoDB's pre-image field, sent whenever the source provided an old image.
  if ((operation == Operation::kUpdate || operation == Operation::kDelete) &&
      !change.old_row.empty()) {
    out += ",\"fullDocumentBeforeChange\":";
    out += change.old_row;
  }
  if (operation == Operation::kUpdate) {
    out += ",\"updateDescription\":";
    append_update_description(change, out);
  }
  out += '}';
}

}  // namespace cdcd::format_internal
