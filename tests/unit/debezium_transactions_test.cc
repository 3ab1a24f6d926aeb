// Debezium's transaction metadata (provide.transaction.metadata), heartbeats, and the `debezium:`
// options read the same way by every sink that writes a format (issue 13).
#include "daemon/format/debezium_transactions.h"

#include <unistd.h>

#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "daemon/config/node.h"
#include "daemon/format/batch_lines.h"
#include "daemon/format/debezium_options.h"
#include "daemon/metrics/metrics.h"
#include "daemon/plugin/registry.h"
#include "tests/support/test_util.h"

namespace cdcd {
void register_sink_stdout(PluginRegistry& registry);
void register_sink_file(PluginRegistry& registry);
void register_sink_kafka(PluginRegistry& registry);

namespace {

using Json = nlohmann::json;

constexpr std::int64_t kCommitUs = 1763719200123456;

Change change_of(std::uint64_t lsn, std::string entity, Operation op = Operation::kInsert) {
  Change change;
  change.lsn = lsn;
  change.txid = lsn / 10;
  change.timestamp_us = kCommitUs;
  change.entity = std::move(entity);
  change.operation = op;
  change.key = R"({"id":1})";
  change.new_row = R"({"id":1})";
  return change;
}

Batch batch_of(std::vector<Change> changes, std::uint64_t ended = 0) {
  Batch batch;
  batch.consumer = "c";
  batch.source_name = "pg";
  batch.connector = "postgres";
  batch.changes = std::move(changes);
  batch.transaction_ended_lsn = ended;
  return batch;
}

struct Written {
  std::vector<Json> records;  // BEGIN/END values
  std::vector<std::string> topics;
  std::vector<Json> keys;
  std::vector<Json> blocks;  // per change
};

// Runs the batches through one writer's state as a sink does, in order.
Written run(DebeziumTransactions& transactions, const std::vector<Batch>& batches,
            const DebeziumOptions& options) {
  Written written;
  std::vector<DebeziumRecord> records;
  auto take = [&] {
    for (const auto& record : records) {
      written.records.push_back(Json::parse(record.value));
      written.keys.push_back(Json::parse(record.key));
      written.topics.push_back(record.topic);
    }
    records.clear();
  };
  for (const auto& batch : batches) {
    EncodeContext context{batch.source_name, batch.connector, kCommitUs, &options};
    for (const auto& change : batch.changes) {
      context.transaction = transactions.next(change, context, records);
      take();
      std::string out;
      encode_change(Format::kDebezium, change, context, out);
      written.blocks.push_back(Json::parse(out)["transaction"]);
    }
    transactions.finish(batch, context, records);
    take();
  }
  return written;
}

TEST(DebeziumTransactionsTest, TransactionSplitAcrossBatchesEndsWithItsWholeCounts) {
  DebeziumOptions options;
  options.transaction_metadata = true;
  DebeziumTransactions transactions;
  // Transaction 100: three changes on two tables over two batches, its end in a third batch
  // without changes; then transaction 200 whose end the batch carries.
  auto written = run(transactions,
                     {batch_of({change_of(100, "public.a"), change_of(100, "public.b")}),
                      batch_of({change_of(100, "public.a")}), batch_of({}, 100),
                      batch_of({change_of(200, "public.b")}, 200)},
                     options);
  ASSERT_EQ(written.records.size(), 4u);
  EXPECT_EQ(written.records[0], Json::parse(R"({"status":"BEGIN","id":"10:100","event_count":null,
      "data_collections":null,"ts_ms":1763719200123})"));
  EXPECT_EQ(written.records[1], Json::parse(R"({"status":"END","id":"10:100","event_count":3,
      "data_collections":[{"data_collection":"public.a","event_count":2},
                          {"data_collection":"public.b","event_count":1}],
      "ts_ms":1763719200123})"));
  EXPECT_EQ(written.records[2]["status"], "BEGIN");
  EXPECT_EQ(written.records[3]["id"], "20:200");
  EXPECT_EQ(written.records[3]["event_count"], 1);
  EXPECT_EQ(written.topics[0], "pg.transaction");
  EXPECT_EQ(written.keys[1], Json::parse(R"({"id":"10:100"})"));
  ASSERT_EQ(written.blocks.size(), 4u);
  EXPECT_EQ(written.blocks[0],
            Json::parse(R"({"id":"10:100","total_order":1,"data_collection_order":1})"));
  EXPECT_EQ(written.blocks[1],
            Json::parse(R"({"id":"10:100","total_order":2,"data_collection_order":1})"));
  EXPECT_EQ(written.blocks[2],
            Json::parse(R"({"id":"10:100","total_order":3,"data_collection_order":2})"));
  EXPECT_EQ(written.blocks[3],
            Json::parse(R"({"id":"20:200","total_order":1,"data_collection_order":1})"));
  EXPECT_FALSE(transactions.open());
}

TEST(DebeziumTransactionsTest, NextTransactionEndsThePreviousAndSnapshotRowsHaveNoBlock) {
  DebeziumOptions options;
  options.transaction_metadata = true;
  options.topic_prefix = "shop";
  options.transaction_topic = "tx";
  DebeziumTransactions transactions;
  auto written = run(transactions,
                     {batch_of({change_of(5, "public.a", Operation::kRead),
                                change_of(100, "public.a"), change_of(300, "public.a")})},
                     options);
  // The read: no block, no records. 100 ends when 300 starts; 300 is still open.
  ASSERT_EQ(written.blocks.size(), 3u);
  EXPECT_TRUE(written.blocks[0].is_null());
  ASSERT_EQ(written.records.size(), 3u);
  EXPECT_EQ(written.records[0]["status"], "BEGIN");
  EXPECT_EQ(written.records[1]["status"], "END");
  EXPECT_EQ(written.records[1]["event_count"], 1);
  EXPECT_EQ(written.records[2]["status"], "BEGIN");
  EXPECT_EQ(written.topics[2], "shop.tx");
  EXPECT_TRUE(transactions.open());
  // A batch that says another transaction ended leaves this one open.
  std::vector<DebeziumRecord> records;
  EncodeContext context{"pg", "postgres", kCommitUs, &options};
  transactions.finish(batch_of({}, 100), context, records);
  EXPECT_TRUE(records.empty());
  EXPECT_TRUE(transactions.open());
}

TEST(DebeziumTransactionsTest, SchemasWrapKeyAndValueAsJsonConverterDoes) {
  DebeziumOptions options;
  options.transaction_metadata = true;
  options.schemas = true;
  DebeziumTransactions transactions;
  std::vector<DebeziumRecord> records;
  EncodeContext context{"pg", "postgres", kCommitUs, &options};
  Change change = change_of(100, "public.a");
  change.txid.reset();
  transactions.next(change, context, records);
  transactions.finish(batch_of({}, 100), context, records);
  ASSERT_EQ(records.size(), 2u);
  const Json key = Json::parse(records[1].key);
  EXPECT_EQ(key["schema"]["name"], "io.debezium.connector.common.TransactionMetadataKey");
  EXPECT_EQ(key["payload"], Json::parse(R"({"id":"100"})"));  // no txid: the lsn alone
  const Json value = Json::parse(records[1].value);
  EXPECT_EQ(value["schema"]["name"], "io.debezium.connector.common.TransactionMetadataValue");
  std::vector<std::string> fields;
  for (const auto& field : value["schema"]["fields"]) fields.push_back(field["field"]);
  EXPECT_EQ(fields,
            (std::vector<std::string>{"status", "id", "event_count", "data_collections", "ts_ms"}));
  EXPECT_EQ(value["payload"]["status"], "END");
  EXPECT_EQ(value["payload"]["data_collections"][0]["data_collection"], "public.a");
}

TEST(DebeziumTransactionsTest, HeartbeatIsDebeziumsServerNameKeyAndTimestamp) {
  DebeziumOptions options;
  auto record = debezium_heartbeat(options, "shop", kCommitUs);
  EXPECT_EQ(record.topic, "__debezium-heartbeat.shop");
  EXPECT_EQ(Json::parse(record.key), Json::parse(R"({"serverName":"shop"})"));
  EXPECT_EQ(Json::parse(record.value), Json::parse(R"({"ts_ms":1763719200123})"));
  options.schemas = true;
  options.heartbeat_topic_prefix = "hb";
  record = debezium_heartbeat(options, "shop", kCommitUs);
  EXPECT_EQ(record.topic, "hb.shop");
  EXPECT_EQ(Json::parse(record.key)["schema"]["name"],
            "io.debezium.connector.common.ServerNameKey");
  EXPECT_EQ(Json::parse(record.value)["schema"]["name"], "io.debezium.connector.common.Heartbeat");
}

TEST(DebeziumTransactionsTest, LineSinksWriteBeginAndEndAsLinesBetweenChanges) {
  DebeziumOptions options;
  options.transaction_metadata = true;
  DebeziumTransactions transactions;
  std::string out;
  encode_batch_lines(Format::kDebezium, batch_of({change_of(100, "public.a")}, 100), out, &options,
                     &transactions);
  std::vector<Json> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) lines.push_back(Json::parse(line));
  ASSERT_EQ(lines.size(), 3u) << out;
  EXPECT_EQ(lines[0]["status"], "BEGIN");
  EXPECT_EQ(lines[1]["op"], "c");
  EXPECT_EQ(lines[1]["transaction"]["total_order"], 1);
  EXPECT_EQ(lines[2]["status"], "END");
}

TEST(DebeziumTransactionsTest, WithoutMetadataTheBlockIsNull) {
  std::string out;
  encode_batch_lines(Format::kDebezium, batch_of({change_of(100, "public.a")}, 100), out);
  EXPECT_TRUE(Json::parse(out)["transaction"].is_null()) << out;
}

// ---- the `debezium:` map, read the same way by every sink ------------------------------------

struct Built {
  std::unique_ptr<Sink> sink;
  std::string diagnostics;
};

Built build_sink(const std::string& type, const std::string& yaml) {
  static Metrics metrics;
  config::Diagnostics diagnostics;
  auto context = std::make_shared<config::ParseContext>();
  context->file = "cdcd.yaml";
  context->diagnostics = &diagnostics;
  context->env = [](const std::string&) { return std::optional<std::string>(); };
  config::Node options(YAML::Load(yaml), "sinks.out", context);
  options.mark_known({"type"});
  PluginRegistry registry;
  register_sink_stdout(registry);
  register_sink_file(registry);
  register_sink_kafka(registry);
  SinkContext sink_context{"out", spdlog::default_logger(), metrics.registry(),
                           metrics.sink("out")};
  Built built;
  built.sink = (*registry.sink(type))(options, sink_context);
  built.diagnostics = diagnostics.to_string();
  return built;
}

TEST(DebeziumSinkOptionsTest, EverySinkWithAFormatAcceptsTheDebeziumMap) {
  test::TempDir dir;
  const std::string map =
      "format: debezium\n"
      "debezium:\n"
      "  schemas: true\n"
      "  decimal.handling.mode: string\n"
      "  provide.transaction.metadata: true\n";
  for (const auto& [type, extra] :
       std::vector<std::pair<std::string, std::string>>{{"stdout", ""},
                                                        {"file", "path: " + dir.path() + "/o\n"},
                                                        {"kafka", "brokers: 127.0.0.1:1\n"}}) {
    auto built = build_sink(type, extra + map);
    EXPECT_NE(built.sink, nullptr) << type << ": " << built.diagnostics;
    EXPECT_EQ(built.diagnostics, "") << type;
    ASSERT_NE(built.sink, nullptr);
    EXPECT_TRUE(built.sink->tracks_transactions()) << type;
  }
}

TEST(DebeziumSinkOptionsTest, BadValuesAndMisplacedMapsAreReportedAtTheirPosition) {
  auto bad = build_sink("stdout",
                        "format: debezium\n"
                        "debezium:\n"
                        "  decimal.handling.mode: exact\n");
  EXPECT_EQ(bad.sink, nullptr);
  EXPECT_NE(bad.diagnostics.find("cdcd.yaml:3:26: error: sinks.out.debezium.decimal.handling.mode"),
            std::string::npos)
      << bad.diagnostics;
  // The map with another format would do nothing: an error, for every sink.
  for (const auto& [type, extra] : std::vector<std::pair<std::string, std::string>>{
           {"stdout", ""}, {"kafka", "brokers: 127.0.0.1:1\nformat: native\n"}}) {
    auto misplaced = build_sink(type, extra + "debezium:\n  schemas: true\n");
    EXPECT_EQ(misplaced.sink, nullptr) << type;
    EXPECT_NE(misplaced.diagnostics.find("sinks.out.debezium: applies only with format: debezium"),
              std::string::npos)
        << type << ": " << misplaced.diagnostics;
  }
  // Heartbeats need a sink that writes them on a timer.
  auto heartbeat = build_sink("stdout",
                              "format: debezium\n"
                              "debezium:\n"
                              "  heartbeat.interval.ms: 1000\n");
  EXPECT_EQ(heartbeat.sink, nullptr);
  EXPECT_NE(heartbeat.diagnostics.find(
                "cdcd.yaml:3:26: error: sinks.out.debezium.heartbeat.interval.ms: this sink "
                "cannot send heartbeats"),
            std::string::npos)
      << heartbeat.diagnostics;
  auto kafka = build_sink("kafka",
                          "brokers: 127.0.0.1:1\n"
                          "debezium:\n"
                          "  heartbeat.interval.ms: 1000\n"
                          "  topic.heartbeat.prefix: hb\n");
  EXPECT_NE(kafka.sink, nullptr) << kafka.diagnostics;
  EXPECT_FALSE(kafka.sink && kafka.sink->tracks_transactions());
}

}  // namespace
}  // namespace cdcd
