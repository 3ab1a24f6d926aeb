// The `debezium` encoder alone on a typed PostgreSQL-like change (int4, numeric(12,2), text,
// timestamp, timestamptz, jsonb, bool, as the postgres source writes them): CPU time per change
// for native, debezium without column types (values verbatim, what a jsonl source gets),
// debezium with types (Debezium's value mapping) and with schemas: true. Medians of RUNS runs.
//
//   debezium_encode_bench [CHANGES_PER_RUN] [RUNS] [CASE_NUMBER (1-4; default all)]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "daemon/core/change.h"
#include "daemon/format/format.h"

namespace {

using cdcd::ColumnSchema;
using cdcd::ColumnType;

ColumnSchema column(const char* name, const char* type, std::optional<int> precision = {},
                    std::optional<int> scale = {}, bool key = false) {
  ColumnSchema schema;
  schema.name = name;
  schema.type.name = type;
  schema.type.precision = precision;
  schema.type.scale = scale;
  schema.key = key;
  schema.optional = !key;
  return schema;
}

cdcd::Change typed_change() {
  auto schema = std::make_shared<cdcd::EntitySchema>();
  schema->entity = "public.orders";
  schema->columns = {column("id", "int4", {}, {}, true),
                     column("amount", "numeric", 12, 2),
                     column("note", "text"),
                     column("created", "timestamp"),
                     column("updated", "timestamptz"),
                     column("payload", "jsonb"),
                     column("paid", "bool")};
  cdcd::Change change;
  change.lsn = 123456789;
  change.event_lsn = 123456700;
  change.previous_commit_lsn = 123456000;
  change.timestamp_us = 1763719200123456;
  change.txid = 991;
  change.source = "shop";
  change.entity = "public.orders";
  change.operation = cdcd::Operation::kUpdate;
  change.key = R"({"id":4711})";
  change.old_row = change.key;
  change.new_row =
      R"({"id":4711,"amount":"1234.50","note":"second delivery, leave at the door",)"
      R"("created":"2025-11-21T10:00:00.123456","updated":"2025-11-21T10:00:00.123456+00:00",)"
      R"("payload":{"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"gift":false},)"
      R"("paid":true})";
  change.schema = std::move(schema);
  return change;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// CPU nanoseconds per change of encoding `change` `count` times.
double measure(cdcd::Format format, const cdcd::Change& change, const cdcd::EncodeContext& context,
               int count) {
  std::string out;
  std::size_t bytes = 0;
  const std::clock_t start = std::clock();
  for (int i = 0; i < count; ++i) {
    out.clear();
    cdcd::encode_change(format, change, context, out);
    bytes += out.size();
  }
  const std::clock_t end = std::clock();
  if (bytes == 0) std::abort();  // keeps the loop from being optimized away
  return static_cast<double>(end - start) * 1e9 / CLOCKS_PER_SEC / count;
}

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 200000;
  const int runs = argc > 2 ? std::atoi(argv[2]) : 5;
  const cdcd::Change typed = typed_change();
  cdcd::Change untyped = typed;
  untyped.schema.reset();
  cdcd::DebeziumOptions defaults;
  cdcd::DebeziumOptions schemas;
  schemas.schemas = true;
  const cdcd::EncodeContext context{"pg", "postgres", 1763719200456789, &defaults};
  const cdcd::EncodeContext schema_context{"pg", "postgres", 1763719200456789, &schemas};

  struct Case {
    const char* name;
    cdcd::Format format;
    const cdcd::Change* change;
    const cdcd::EncodeContext* context;
    std::vector<double> ns;
  };
  std::vector<Case> cases = {
      {"native", cdcd::Format::kNative, &typed, &context, {}},
      {"debezium, untyped (values verbatim)", cdcd::Format::kDebezium, &untyped, &context, {}},
      {"debezium, typed", cdcd::Format::kDebezium, &typed, &context, {}},
      {"debezium, typed, schemas: true", cdcd::Format::kDebezium, &typed, &schema_context, {}},
  };
  if (argc > 3) {  // one case alone, e.g. under a profiler
    const auto only = static_cast<std::size_t>(std::atoi(argv[3]));
    if (only < 1 || only > cases.size()) return 2;
    cases = {cases[only - 1]};
  }
  for (int run = 0; run < runs; ++run) {
    for (auto& c : cases) c.ns.push_back(measure(c.format, *c.change, *c.context, count));
  }
  for (const auto& c : cases) {
    std::string out;
    cdcd::encode_change(c.format, *c.change, *c.context, out);
    std::printf("median %-40s %8.0f ns/change  (%zu bytes)\n", c.name, median(c.ns), out.size());
  }
  return 0;
}
