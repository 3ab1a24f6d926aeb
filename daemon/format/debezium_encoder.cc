#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <simdjson.h>

#include "daemon/core/change.h"
#include "daemon/format/debezium_values.h"
#include "daemon/format/encoders.h"
#include "daemon/format/json_writer.h"

namespace cdcd::format_internal {
namespace {

// Debezium's `unavailable.value.placeholder` default: its after image always carries every column,
// and a value the database did not send (unchanged TOAST) is this marker, never null.
constexpr std::string_view kUnavailableValue = "__debezium_unavailable_value";

const DebeziumOptions kDefaultOptions;

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

std::string_view snapshot_value(const Change& change) {
  if (change.operation != Operation::kRead) return "false";
  switch (change.snapshot_mark) {
    case SnapshotMark::kFirst:
      return "first";
    case SnapshotMark::kFirstInCollection:
      return "first_in_data_collection";
    case SnapshotMark::kLastInCollection:
      return "last_in_data_collection";
    case SnapshotMark::kLast:
      return "last";
    case SnapshotMark::kNone:
      break;
  }
  return "true";
}

// Debezium names its connector "postgresql"; cdcd's source type is "postgres".
std::string_view connector_name(std::string_view connector) {
  return connector == "postgres" ? std::string_view("postgresql") : connector;
}

std::string_view prefix_of(const EncodeContext& context, const DebeziumOptions& options) {
  return options.topic_prefix.empty() ? context.source_name
                                      : std::string_view(options.topic_prefix);
}

bool same_options(const DebeziumOptions& a, const DebeziumOptions& b) {
  return a.decimal == b.decimal && a.time_precision == b.time_precision &&
         a.interval == b.interval && a.binary == b.binary && a.hstore == b.hstore &&
         a.money_fraction_digits == b.money_fraction_digits && a.schemas == b.schemas &&
         a.topic_prefix == b.topic_prefix;
}

// What encoding one entity needs, computed once per entity schema, options and prefix: how each
// column maps, and with `schemas` the JSON of the key and envelope schemas.
struct EntityPlan {
  std::shared_ptr<const EntitySchema> schema;  // keeps the cache key's address from being reused
  DebeziumOptions options;
  std::string prefix;
  std::vector<ColumnMapping> mappings;
  std::string key_schema;
  std::string envelope_schema;
};

void append_struct_name(std::string& out, std::string_view prefix, std::string_view entity,
                        std::string_view suffix) {
  std::string name(prefix);
  name += '.';
  name += entity;
  name += '.';
  name += suffix;
  json::append_string(out, name);
}

constexpr std::string_view kSourceSchema =
    "{\"type\":\"struct\",\"fields\":["
    "{\"type\":\"string\",\"optional\":false,\"field\":\"version\"},"
    "{\"type\":\"string\",\"optional\":false,\"field\":\"connector\"},"
    "{\"type\":\"string\",\"optional\":false,\"field\":\"name\"},"
    "{\"type\":\"int64\",\"optional\":false,\"field\":\"ts_ms\"},"
    "{\"type\":\"int64\",\"optional\":true,\"field\":\"ts_us\"},"
    "{\"type\":\"int64\",\"optional\":true,\"field\":\"ts_ns\"},"
    "{\"type\":\"string\",\"optional\":true,\"name\":\"io.debezium.data.Enum\",\"version\":1,"
    "\"parameters\":{\"allowed\":\"true,first,first_in_data_collection,last_in_data_collection,"
    "last,false,incremental\"},\"default\":\"false\",\"field\":\"snapshot\"},"
    "{\"type\":\"string\",\"optional\":false,\"field\":\"db\"},"
    "{\"type\":\"string\",\"optional\":true,\"field\":\"sequence\"},"
    "{\"type\":\"string\",\"optional\":false,\"field\":\"schema\"},"
    "{\"type\":\"string\",\"optional\":false,\"field\":\"table\"},"
    "{\"type\":\"int64\",\"optional\":true,\"field\":\"txId\"},"
    "{\"type\":\"int64\",\"optional\":true,\"field\":\"lsn\"},"
    "{\"type\":\"int64\",\"optional\":true,\"field\":\"xmin\"}],"
    "\"optional\":false,\"name\":\"io.debezium.connector.postgresql.Source\",\"field\":\"source\"}";

constexpr std::string_view kTransactionSchema =
    "{\"type\":\"struct\",\"fields\":["
    "{\"type\":\"string\",\"optional\":false,\"field\":\"id\"},"
    "{\"type\":\"int64\",\"optional\":false,\"field\":\"total_order\"},"
    "{\"type\":\"int64\",\"optional\":false,\"field\":\"data_collection_order\"}],"
    "\"optional\":true,\"name\":\"event.block\",\"version\":1,\"field\":\"transaction\"}";

void build_schemas(EntityPlan& plan) {
  const EntitySchema& schema = *plan.schema;
  std::string& key = plan.key_schema;
  key = "{\"type\":\"struct\",\"fields\":[";
  bool first = true;
  for (std::size_t i = 0; i < schema.columns.size(); ++i) {
    if (!schema.columns[i].key) continue;
    if (!first) key += ',';
    first = false;
    ColumnSchema column = schema.columns[i];
    column.optional = false;
    append_field_schema(key, plan.mappings[i], column, plan.options);
  }
  key += "],\"optional\":false,\"name\":";
  append_struct_name(key, plan.prefix, schema.entity, "Key");
  key += '}';

  std::string value = "{\"type\":\"struct\",\"fields\":[";
  for (std::size_t i = 0; i < schema.columns.size(); ++i) {
    if (i > 0) value += ',';
    append_field_schema(value, plan.mappings[i], schema.columns[i], plan.options);
  }
  value += "],\"optional\":true,\"name\":";
  append_struct_name(value, plan.prefix, schema.entity, "Value");

  std::string& envelope = plan.envelope_schema;
  envelope = "{\"type\":\"struct\",\"fields\":[";
  envelope += value;
  envelope += ",\"field\":\"before\"},";
  envelope += value;
  envelope += ",\"field\":\"after\"},";
  envelope += kSourceSchema;
  envelope += ',';
  envelope += kTransactionSchema;
  envelope +=
      ",{\"type\":\"string\",\"optional\":false,\"field\":\"op\"},"
      "{\"type\":\"int64\",\"optional\":true,\"field\":\"ts_ms\"},"
      "{\"type\":\"int64\",\"optional\":true,\"field\":\"ts_us\"},"
      "{\"type\":\"int64\",\"optional\":true,\"field\":\"ts_ns\"}],\"optional\":false,\"name\":";
  append_struct_name(envelope, plan.prefix, schema.entity, "Envelope");
  envelope += '}';
}

// Plans by entity schema, per encoding thread (sinks encode on their own threads). Bounded: a
// long run through many schema changes starts over rather than growing.
const EntityPlan& plan_for(const std::shared_ptr<const EntitySchema>& schema,
                           const DebeziumOptions& options, std::string_view prefix) {
  constexpr std::size_t kMaxPlans = 4096;
  thread_local std::unordered_map<const EntitySchema*, std::vector<std::unique_ptr<EntityPlan>>>
      plans;
  auto& candidates = plans[schema.get()];
  for (const auto& plan : candidates) {
    if (plan->prefix == prefix && same_options(plan->options, options)) return *plan;
  }
  if (plans.size() > kMaxPlans) {
    plans.clear();
    return plan_for(schema, options, prefix);
  }
  auto plan = std::make_unique<EntityPlan>();
  plan->schema = schema;
  plan->options = options;
  plan->prefix = std::string(prefix);
  for (const auto& column : schema->columns) plan->mappings.push_back(map_column(column.type));
  if (options.schemas) build_schemas(*plan);
  candidates.push_back(std::move(plan));
  return *candidates.back();
}

// Appends a row image (a JSON object of the source) with each column in Debezium's
// representation; columns the schema does not know keep their JSON. Unchanged TOAST columns get
// the placeholder.
void append_row(std::string& out, std::string_view row, const EntityPlan* plan,
                const std::vector<std::string>* unchanged) {
  if (row.empty()) {
    out += "null";
    return;
  }
  thread_local simdjson::dom::parser parser;
  simdjson::dom::object object;
  if (plan == nullptr || parser.parse(row.data(), row.size()).get(object) != simdjson::SUCCESS) {
    out += row;  // no column types, or not a JSON object: as the source wrote it
    if (unchanged != nullptr && !unchanged->empty() && out.back() == '}') {
      out.pop_back();
      bool first = out.back() == '{';
      for (const auto& column : *unchanged) {
        if (!first) out += ',';
        first = false;
        json::append_string(out, column);
        out += ':';
        json::append_string(out, kUnavailableValue);
      }
      out += '}';
    }
    return;
  }
  const auto& columns = plan->schema->columns;
  out += '{';
  bool first = true;
  std::size_t next_column = 0;  // fields come in column order: try the next one first
  for (auto field : object) {
    if (!first) out += ',';
    first = false;
    json::append_string(out, field.key);
    out += ':';
    std::size_t index = next_column;
    if (index >= columns.size() || columns[index].name != field.key) {
      for (index = 0; index < columns.size() && columns[index].name != field.key; ++index) {
      }
    }
    if (index >= columns.size()) {
      out += simdjson::minify(field.value);
      continue;
    }
    append_debezium_value(out, plan->mappings[index], columns[index].type, field.value,
                          plan->options);
    next_column = index + 1;
  }
  if (unchanged != nullptr) {
    for (const auto& column : *unchanged) {
      if (!first) out += ',';
      first = false;
      json::append_string(out, column);
      out += ':';
      json::append_string(out, kUnavailableValue);
    }
  }
  out += '}';
}

void append_lsn_string(std::string& out, std::uint64_t lsn) {
  if (lsn == 0) {
    out += "null";
    return;
  }
  out += "\\\"";
  json::append_integer(out, lsn);
  out += "\\\"";
}

// ts_ns: nanoseconds since the epoch fit in 64 bits only from 1677 to 2262. Outside, the field
// (optional in Debezium's schema) is null rather than a wrapped-around number.
void append_nanoseconds(std::string& out, std::int64_t microseconds) {
  std::int64_t nanoseconds = 0;
  if (__builtin_mul_overflow(microseconds, 1000, &nanoseconds)) {
    out += "null";
  } else {
    json::append_integer(out, nanoseconds);
  }
}

void append_source(const Change& change, const EncodeContext& context,
                   const DebeziumOptions& options, std::string& out) {
  const EntityName name = split_entity(change.entity);
  out += "{\"version\":\"cdcd-" CDCD_VERSION "\",\"connector\":";
  json::append_string(out, connector_name(context.connector));
  out += ",\"name\":";
  json::append_string(out, prefix_of(context, options));
  out += ",\"ts_ms\":";
  json::append_integer(out, floor_div(change.timestamp_us, 1000));
  out += ",\"ts_us\":";
  json::append_integer(out, change.timestamp_us);
  out += ",\"ts_ns\":";
  append_nanoseconds(out, change.timestamp_us);
  out += ",\"snapshot\":\"";
  out += snapshot_value(change);
  out += "\",\"db\":";
  json::append_string(out, change.source.empty() ? context.source_name : change.source);
  // A JSON array of strings serialized into a string, as Debezium's PostgreSQL connector does:
  // [last committed LSN, this event's LSN]. Sources that know no event position keep
  // [lsn, seq], which orders their changes.
  out += ",\"sequence\":\"[";
  if (change.event_lsn != 0) {
    append_lsn_string(out, change.previous_commit_lsn);
    out += ',';
    append_lsn_string(out, change.event_lsn);
  } else {
    append_lsn_string(out, change.lsn);
    out += ",\\\"";
    json::append_integer(out, change.seq);
    out += "\\\"";
  }
  out += "]\"";
  out += ",\"schema\":";
  json::append_string(out, name.schema);
  out += ",\"table\":";
  json::append_string(out, name.table);
  out += ",\"txId\":";
  if (change.txid) {
    json::append_integer(out, *change.txid);
  } else {
    out += "null";
  }
  out += ",\"lsn\":";
  json::append_integer(out, change.event_lsn != 0 ? change.event_lsn : change.lsn);
  out += ",\"xmin\":null}";
}

// An update the database sent without an old image (REPLICA IDENTITY DEFAULT, key unchanged):
// the source gives the key as old row, Debezium's `before` is null. With every column in the key
// (REPLICA IDENTITY FULL) the old row is a real image.
bool update_without_old_image(const Change& change, const EntityPlan& plan) {
  if (change.operation != Operation::kUpdate || !change.old_key.empty() ||
      change.old_row != change.key) {
    return false;
  }
  for (const auto& column : plan.schema->columns) {
    if (!column.key) return true;
  }
  return false;
}

void append_transaction_block(std::string& out, const TransactionBlock* block) {
  if (block == nullptr) {
    out += "null";
    return;
  }
  out += "{\"id\":";
  json::append_string(out, block->id);
  out += ",\"total_order\":";
  json::append_integer(out, block->total_order);
  out += ",\"data_collection_order\":";
  json::append_integer(out, block->data_collection_order);
  out += '}';
}

const EntityPlan* plan_of(const Change& change, const EncodeContext& context,
                          const DebeziumOptions& options) {
  if (!change.schema) return nullptr;
  return &plan_for(change.schema, options, prefix_of(context, options));
}

}  // namespace

void encode_debezium(const Change& change, const EncodeContext& context, std::string& out) {
  const DebeziumOptions& options = context.debezium ? *context.debezium : kDefaultOptions;
  const EntityPlan* plan = plan_of(change, context, options);
  out.reserve(out.size() + 512 + change.entity.size() + 2 * change.old_row.size() +
              2 * change.new_row.size() + (plan ? plan->envelope_schema.size() : 0));
  if (options.schemas) {
    // Without column types there is no schema to state: JsonConverter reads a null schema as a
    // schemaless payload.
    out += "{\"schema\":";
    out += plan ? std::string_view(plan->envelope_schema) : std::string_view("null");
    out += ",\"payload\":";
  }
  const bool truncate = change.operation == Operation::kTruncate;
  out += "{\"before\":";
  const bool no_before = truncate || (plan != nullptr && update_without_old_image(change, *plan));
  append_row(out, no_before ? std::string_view() : std::string_view(change.old_row), plan, nullptr);
  out += ",\"after\":";
  append_row(out, truncate ? std::string_view() : std::string_view(change.new_row), plan,
             &change.unchanged_columns);
  out += ",\"source\":";
  append_source(change, context, options, out);
  out += ",\"transaction\":";
  append_transaction_block(out, context.transaction);
  out += ",\"op\":\"";
  out += op_code(change.operation);
  out += "\",\"ts_ms\":";
  json::append_integer(out, floor_div(context.processed_at_us, 1000));
  out += ",\"ts_us\":";
  json::append_integer(out, context.processed_at_us);
  out += ",\"ts_ns\":";
  append_nanoseconds(out, context.processed_at_us);
  out += '}';
  if (options.schemas) out += '}';
}

void encode_debezium_key(const Change& change, std::string_view key_json,
                         const EncodeContext& context, std::string& out) {
  const DebeziumOptions& options = context.debezium ? *context.debezium : kDefaultOptions;
  const EntityPlan* plan = plan_of(change, context, options);
  if (options.schemas) {
    out += "{\"schema\":";
    out += plan ? std::string_view(plan->key_schema) : std::string_view("null");
    out += ",\"payload\":";
  }
  append_row(out, key_json.empty() ? std::string_view("{}") : key_json, plan, nullptr);
  if (options.schemas) out += '}';
}

}  // namespace cdcd::format_internal
