// Issue 13: a consumer written for Debezium reads what cdcd's Kafka sink writes in the
// `debezium` format with `schemas: true`. Changes come from a real PostgreSQL 15; the records are
// read and decoded by tests/component/data/debezium_consumer.py (python3-confluent-kafka, Kafka
// Connect's rules for Decimal, Date and MicroTimestamp), never by cdcd's code.
#include <future>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "daemon/config/node.h"
#include "daemon/metrics/metrics.h"
#include "daemon/plugin/registry.h"
#include "sources/postgres/postgres_source.h"
#include "tests/support/kafka_cluster.h"
#include "tests/support/postgres_server.h"
#include "tests/support/test_util.h"

namespace cdcd {
void register_sink_kafka(PluginRegistry& registry);
}

namespace cdcd::test {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

class RecordingEmitter : public Emitter {
 public:
  void emit(SourceEvent&& event) override {
    if (auto* change = std::get_if<Change>(&event)) changes.push_back(std::move(*change));
    if (std::holds_alternative<TransactionEnd>(event)) ++transactions;
  }
  bool wants_more() const override { return true; }
  std::vector<Change> changes;
  std::size_t transactions = 0;
};

std::unique_ptr<Sink> build_kafka_sink(const std::string& yaml, Metrics& metrics,
                                       config::Diagnostics& diagnostics) {
  auto context = std::make_shared<config::ParseContext>();
  context->file = "cdcd.yaml";
  context->diagnostics = &diagnostics;
  context->env = [](const std::string&) { return std::optional<std::string>(); };
  config::Node options(YAML::Load(yaml), "sinks.events", context);
  options.mark_known({"type"});
  PluginRegistry registry;
  register_sink_kafka(registry);
  SinkContext sink_context{"events", spdlog::default_logger(), metrics.registry(),
                           metrics.sink("events")};
  return (*registry.sink("kafka"))(options, sink_context);
}

TEST(DebeziumKafkaConfigTest, BadDebeziumOptionsNameFileLineAndColumn) {
  Metrics metrics;
  config::Diagnostics diagnostics;
  auto sink = build_kafka_sink(R"(
brokers: 127.0.0.1:1
debezium:
  decimal.handling.mode: exact
  money.fraction.digits: -1
  time.precision.mod: connect
)",
                               metrics, diagnostics);
  EXPECT_EQ(sink, nullptr);
  const std::string text = diagnostics.to_string();
  EXPECT_NE(text.find("cdcd.yaml:4:26: error: sinks.events.debezium.decimal.handling.mode"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("precise"), std::string::npos) << text;
  EXPECT_NE(text.find("cdcd.yaml:5:26: error: sinks.events.debezium.money.fraction.digits"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("time.precision.mod"), std::string::npos) << text;
}

TEST(DebeziumKafkaTest, DebeziumConsumerDecodesSchemasAndKeyChanges) {
  PostgresServer server(PostgresServerOptions{"logical", {"wal_sender_timeout = 5s"}});
  const std::string db = server.create_database();
  server.execute(
      "CREATE TABLE orders (id int PRIMARY KEY, amount numeric(12,3), small numeric(10,2), "
      "due date, placed timestamp)",
      db);
  auto logger =
      std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
  postgres::PostgresSourceOptions options;
  options.dsn = server.dsn(db);
  options.slot = "dbz_kafka";
  options.publication = "pub";
  options.status_interval = std::chrono::milliseconds(100);
  options.heartbeat = std::chrono::milliseconds(0);
  postgres::PostgresSource source(options, SourceContext{"pg", logger, nullptr, {}});
  ASSERT_TRUE(source.start(StartPosition{}));
  const std::vector<std::string> statements = {
      "INSERT INTO orders VALUES (1, 12345.678, -0.01, '2024-02-29', "
      "'2018-06-20 15:13:16.945104')",
      "UPDATE orders SET id = 2 WHERE id = 1",
      "DELETE FROM orders WHERE id = 2",
  };
  for (const auto& statement : statements) server.execute(statement, db);
  RecordingEmitter out;
  const auto give_up = Clock::now() + std::chrono::seconds(30);
  while (out.transactions < statements.size() && Clock::now() < give_up) {
    ASSERT_TRUE(source.poll(out, Clock::now() + std::chrono::milliseconds(50)));
  }
  ASSERT_EQ(out.changes.size(), 3u);
  source.stop();

  TempDir dir;
  KafkaMockCluster cluster(dir.path());
  Metrics metrics;
  config::Diagnostics diagnostics;
  auto sink = build_kafka_sink(
      "brokers: \"" + cluster.bootstrap() + "\"\ntopic: orders\ndebezium:\n  schemas: true\n",
      metrics, diagnostics);
  ASSERT_NE(sink, nullptr) << diagnostics.to_string();
  ASSERT_TRUE(sink->start());
  auto batch = std::make_shared<Batch>();
  batch->id = 1;
  batch->consumer = "c1";
  batch->source_name = "pg";
  batch->connector = "postgres";
  batch->changes = out.changes;
  std::promise<DeliveryReport> acked;
  sink->write(batch, [&](DeliveryReport report) { acked.set_value(std::move(report)); });
  auto ack = acked.get_future();
  ASSERT_EQ(ack.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  auto report = ack.get();
  ASSERT_FALSE(report.failure) << report.failure->message;
  sink->stop();

  // c(1); the key change as d(1) + tombstone(1) + c(2); d(2) + tombstone(2).
  constexpr int kRecords = 6;
  ChildProcess consumer(
      {"/usr/bin/python3",
       std::string(CDCD_SOURCE_DIR) + "/tests/component/data/debezium_consumer.py",
       cluster.bootstrap(), "orders", std::to_string(kRecords), "60"},
      dir.path());
  auto code = consumer.wait(std::chrono::seconds(90));
  ASSERT_TRUE(code && *code == 0) << consumer.stderr_text();
  std::vector<json> records;
  std::istringstream lines(consumer.stdout_text());
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) records.push_back(json::parse(line));
  }
  ASSERT_EQ(records.size(), static_cast<std::size_t>(kRecords)) << consumer.stdout_text();

  // Records of one key keep their order (one partition); the two keys may interleave.
  std::vector<json> key1, key2;
  for (const auto& record : records) {
    (record["key"] == json({{"id", "1"}}) ? key1 : key2).push_back(record);
  }
  ASSERT_EQ(key1.size(), 3u) << consumer.stdout_text();
  ASSERT_EQ(key2.size(), 3u) << consumer.stdout_text();

  // The decoded values are the SQL values.
  const json row1 = {{"id", "1"},
                     {"amount", "12345.678"},
                     {"small", "-0.01"},
                     {"due", "2024-02-29"},
                     {"placed", "2018-06-20 15:13:16.945104"}};
  json row2 = row1;
  row2["id"] = "2";
  EXPECT_EQ(key1[0]["op"], "c");
  EXPECT_EQ(key1[0]["after"], row1);
  EXPECT_EQ(key1[0]["envelope"], "pg.public.orders.Envelope");
  // The key change: a delete of the old key naming the new one, its tombstone, a create of the
  // new key naming the old one.
  EXPECT_EQ(key1[1]["op"], "d");
  EXPECT_EQ(key1[1]["after"], nullptr);
  EXPECT_EQ(key1[1]["headers"]["__debezium.newkey"]["payload"], json({{"id", 2}}));
  EXPECT_EQ(key1[2]["tombstone"], true);
  EXPECT_EQ(key2[0]["op"], "c");
  EXPECT_EQ(key2[0]["before"], nullptr);
  EXPECT_EQ(key2[0]["after"], row2);
  EXPECT_EQ(key2[0]["headers"]["__debezium.oldkey"]["payload"], json({{"id", 1}}));
  // A delete and its tombstone.
  EXPECT_EQ(key2[1]["op"], "d");
  EXPECT_EQ(key2[1]["after"], nullptr);
  EXPECT_EQ(key2[2]["tombstone"], true);
}

TEST(DebeziumKafkaTest, TransactionMetadataOfAPostgresTransactionReadByAKafkaClient) {
  PostgresServer server(PostgresServerOptions{"logical", {"wal_sender_timeout = 5s"}});
  const std::string db = server.create_database();
  server.execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)", db);
  auto logger =
      std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
  postgres::PostgresSourceOptions options;
  options.dsn = server.dsn(db);
  options.slot = "dbz_tx";
  options.publication = "pub";
  options.status_interval = std::chrono::milliseconds(100);
  options.heartbeat = std::chrono::milliseconds(0);
  postgres::PostgresSource source(options, SourceContext{"pg", logger, nullptr, {}});
  ASSERT_TRUE(source.start(StartPosition{}));
  server.execute(
      "BEGIN; INSERT INTO a VALUES (1); INSERT INTO b VALUES (1); "
      "INSERT INTO a VALUES (2); COMMIT",
      db);
  RecordingEmitter out;
  const auto give_up = Clock::now() + std::chrono::seconds(30);
  while (out.transactions < 1 && Clock::now() < give_up) {
    ASSERT_TRUE(source.poll(out, Clock::now() + std::chrono::milliseconds(50)));
  }
  ASSERT_EQ(out.changes.size(), 3u);
  source.stop();
  const std::uint64_t lsn = out.changes.front().lsn;
  ASSERT_TRUE(out.changes.front().txid);
  // "txId:LSN", the LSN of the record the id is in: the Begin message's for BEGIN, the commit's
  // for END, each change's own in its block.
  const std::string txid = std::to_string(*out.changes.front().txid);
  ASSERT_NE(out.changes.front().begin_lsn, 0u);
  const std::string begin_id = txid + ":" + std::to_string(out.changes.front().begin_lsn);
  const std::string end_id = txid + ":" + std::to_string(lsn);

  TempDir dir;
  KafkaMockCluster cluster(dir.path());
  Metrics metrics;
  config::Diagnostics diagnostics;
  auto sink = build_kafka_sink("brokers: \"" + cluster.bootstrap() +
                                   "\"\ntopic: changes\ndebezium:\n  schemas: true\n"
                                   "  topic.prefix: shop\n  provide.transaction.metadata: true\n"
                                   "  topic.transaction: tx\n",
                               metrics, diagnostics);
  ASSERT_NE(sink, nullptr) << diagnostics.to_string();
  ASSERT_TRUE(sink->tracks_transactions());
  ASSERT_TRUE(sink->start());
  // The transaction split over two batches, its end told by a third without changes, as the
  // consumer does when the end comes after the batch went out.
  std::vector<std::vector<Change>> parts = {{out.changes[0], out.changes[1]}, {out.changes[2]}, {}};
  for (std::size_t i = 0; i < parts.size(); ++i) {
    auto batch = std::make_shared<Batch>();
    batch->id = i + 1;
    batch->consumer = "c1";
    batch->source_name = "pg";
    batch->connector = "postgres";
    batch->changes = parts[i];
    if (i == 2) batch->transaction_ended_lsn = lsn;
    std::promise<DeliveryReport> acked;
    sink->write(batch, [&](DeliveryReport report) { acked.set_value(std::move(report)); });
    auto ack = acked.get_future();
    ASSERT_EQ(ack.wait_for(std::chrono::seconds(60)), std::future_status::ready);
    auto report = ack.get();
    ASSERT_FALSE(report.failure) << report.failure->message;
  }
  sink->stop();

  auto records = cluster.read_all({"shop.tx", "changes"}, std::chrono::seconds(90));
  std::vector<json> boundaries, blocks;
  for (const auto& record : records) {
    ASSERT_TRUE(record.value && record.key);
    const json key = json::parse(*record.key);
    const json value = json::parse(*record.value);
    if (record.topic == "shop.tx") {
      EXPECT_EQ(key["schema"]["name"], "io.debezium.connector.common.TransactionMetadataKey");
      EXPECT_EQ(key["payload"], json({{"id", value["payload"]["id"]}}));
      EXPECT_EQ(value["schema"]["name"], "io.debezium.connector.common.TransactionMetadataValue");
      boundaries.push_back(value["payload"]);
    } else {
      EXPECT_EQ(
          value["payload"]["transaction"]["id"],
          txid + ":" + std::to_string(value["payload"]["source"]["lsn"].get<std::uint64_t>()));
      blocks.push_back(value["payload"]["transaction"]);
    }
  }
  // Two keys, possibly in two partitions: BEGIN first by status, not by order read.
  ASSERT_EQ(boundaries.size(), 2u);
  if (boundaries[0]["status"] == "END") std::swap(boundaries[0], boundaries[1]);
  EXPECT_EQ(boundaries[0]["status"], "BEGIN");
  EXPECT_EQ(boundaries[0]["id"], begin_id);
  EXPECT_EQ(boundaries[0]["event_count"], nullptr);
  EXPECT_EQ(boundaries[0]["ts_ms"], out.changes.front().timestamp_us / 1000);
  EXPECT_EQ(boundaries[1],
            json::parse(R"({"status":"END","id":")" + end_id +
                        R"(","event_count":3,"data_collections":[)"
                        R"({"data_collection":"public.a","event_count":2},)"
                        R"({"data_collection":"public.b","event_count":1}],)"
                        R"("ts_ms":)" +
                        std::to_string(out.changes.front().timestamp_us / 1000) + "}"));
  ASSERT_EQ(blocks.size(), 3u);
  std::set<std::pair<std::int64_t, std::int64_t>> orders;
  for (const auto& block : blocks) {
    orders.insert({block["total_order"].get<std::int64_t>(),
                   block["data_collection_order"].get<std::int64_t>()});
  }
  // Changes of three keys may sit in different partitions: compare as a set.
  EXPECT_EQ(orders, (std::set<std::pair<std::int64_t, std::int64_t>>{{1, 1}, {2, 1}, {3, 2}}));
}

}  // namespace
}  // namespace cdcd::test
