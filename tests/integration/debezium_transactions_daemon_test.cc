// Issue 13: Debezium's transaction metadata and heartbeats as the daemon writes them to Kafka
// (jsonl source, file checkpoints, the Kafka mock cluster), killed with SIGKILL mid-stream and
// restarted, then read back with python3-confluent-kafka. Transactions span several batches; every
// transaction's END must be there with the counts of the whole transaction, and every change
// event's `transaction` block must agree with it (records may repeat after a kill, never be lost).
#include <signal.h>

#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/kafka_cluster.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

// Transaction `lsn` has 1 + lsn % 5 changes, alternating between two tables.
std::uint32_t changes_of(std::uint64_t lsn) { return 1 + static_cast<std::uint32_t>(lsn % 5); }
std::string table_of(std::uint32_t seq) { return seq % 2 == 0 ? "public.a" : "public.b"; }

class DebeziumTransactionsDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = std::make_unique<KafkaMockCluster>(dir_.path());
    write_file(log_path_, "");
    write_file(config_path_,
               "sources:\n  log: {type: jsonl, path: " + log_path_ +
                   ", follow: true}\n"
                   "sinks:\n  events:\n    type: kafka\n    brokers: \"" +
                   cluster_->bootstrap() +
                   "\"\n    topic: \"cdc.{source}.{entity}\"\n    format: debezium\n"
                   "    debezium:\n      provide.transaction.metadata: true\n"
                   "      heartbeat.interval.ms: 200\n"
                   "checkpoints: {type: file, dir: " +
                   dir_.file("checkpoints") +
                   ", interval: 50ms}\n"
                   "consumers:\n  main:\n    source: log\n    sinks: [events]\n"
                   // Batches of 4 against transactions of up to 5 changes: most transactions
                   // span two batches, and many end after their batch went out.
                   "    batch: {max_events: 4, max_wait: 20ms, max_in_flight: 2}\n"
                   "log: {level: info}\n");
  }

  std::unique_ptr<ChildProcess> start_daemon() {
    return std::make_unique<ChildProcess>(
        std::vector<std::string>{cdcd_binary(), "run", "--config", config_path_}, dir_.path());
  }

  std::uint64_t checkpoint_lsn() {
    auto json = Json::parse(read_file(dir_.file("checkpoints/main.json")), nullptr, false);
    return json.is_object() ? json.value("lsn", std::uint64_t{0}) : 0;
  }

  void append_transactions(std::uint64_t from, std::uint64_t to) {
    std::string chunk;
    for (auto lsn = from; lsn <= to; ++lsn) {
      for (std::uint32_t seq = 0; seq < changes_of(lsn); ++seq) {
        Json line = {{"lsn", lsn},
                     {"seq", seq},
                     {"timestamp", 1763719200000000 + lsn},
                     {"entity", table_of(seq)},
                     {"key", {{"id", lsn * 10 + seq}}},
                     {"operation", "insert"},
                     {"new", {{"id", lsn * 10 + seq}}}};
        chunk += line.dump() + "\n";
      }
    }
    chunk += Json{{"lsn", to}, {"commit", true}}.dump() + "\n";
    append_file(log_path_, chunk);
  }

  TempDir dir_;
  std::unique_ptr<KafkaMockCluster> cluster_;
  std::string log_path_ = dir_.file("changes.jsonl");
  std::string config_path_ = dir_.file("cdcd.yaml");
};

TEST_F(DebeziumTransactionsDaemonTest, KilledMidStreamEveryTransactionEndsWithItsWholeCounts) {
  constexpr int kKills = 3;
  constexpr std::uint64_t kChunk = 150;
  for (int broker = 1; broker <= 3; ++broker) {
    cluster_->must("rtt " + std::to_string(broker) + " 15");
  }
  std::mt19937 random(20261202);
  std::uint64_t appended = 0;
  int kills_mid_stream = 0;
  for (int kill = 0; kill < kKills; ++kill) {
    auto daemon = start_daemon();
    append_transactions(appended + 1, appended + kChunk);
    appended += kChunk;
    auto before = checkpoint_lsn();
    ASSERT_TRUE(wait_until([&] { return checkpoint_lsn() > before || !daemon->running(); }, 60s))
        << daemon->stderr_text();
    ASSERT_TRUE(daemon->running()) << daemon->stderr_text();
    std::this_thread::sleep_for(std::chrono::milliseconds(random() % 100));
    if (checkpoint_lsn() < appended) ++kills_mid_stream;
    daemon->signal(SIGKILL);
    ASSERT_EQ(daemon->wait(10s), 128 + SIGKILL);
  }
  EXPECT_GE(kills_mid_stream, 1) << "a kill must land before its chunk was checkpointed";

  auto daemon = start_daemon();
  append_transactions(appended + 1, appended + kChunk);
  appended += kChunk;
  ASSERT_TRUE(wait_until([&] { return checkpoint_lsn() == appended; }, 120s))
      << "checkpoint " << checkpoint_lsn() << " of " << appended << "\n"
      << daemon->stderr_text();
  // Idle now: heartbeats keep coming.
  ASSERT_TRUE(
      wait_until([&] { return cluster_->message_count("__debezium-heartbeat.log") >= 2; }, 30s));
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();

  auto records = cluster_->read_all(
      {"log.transaction", "cdc.log.public.a", "cdc.log.public.b", "__debezium-heartbeat.log"}, 90s);
  std::map<std::string, std::vector<Json>> ends, begins;
  // id -> table -> distinct data_collection_order; id -> distinct total_order.
  std::map<std::string, std::map<std::string, std::set<std::uint64_t>>> collection_orders;
  std::map<std::string, std::set<std::uint64_t>> total_orders;
  std::size_t heartbeats = 0;
  for (const auto& record : records) {
    ASSERT_TRUE(record.value) << record.topic;
    const Json value = Json::parse(*record.value);
    const Json key = Json::parse(record.key.value_or("null"));
    if (record.topic == "log.transaction") {
      const std::string id = value.at("id");
      EXPECT_EQ(key, Json({{"id", id}}));
      (value.at("status") == "BEGIN" ? begins : ends)[id].push_back(value);
    } else if (record.topic == "__debezium-heartbeat.log") {
      EXPECT_EQ(key, Json({{"serverName", "log"}}));
      EXPECT_TRUE(value.at("ts_ms").is_number_integer());
      ++heartbeats;
    } else {
      const Json& block = value.at("transaction");
      ASSERT_TRUE(block.is_object()) << *record.value;
      const std::string table = value["source"]["schema"].get<std::string>() + "." +
                                value["source"]["table"].get<std::string>();
      EXPECT_EQ(block.at("id"), std::to_string(value["source"]["lsn"].get<std::uint64_t>()));
      total_orders[block.at("id")].insert(block.at("total_order").get<std::uint64_t>());
      collection_orders[block.at("id")][table].insert(
          block.at("data_collection_order").get<std::uint64_t>());
    }
  }
  EXPECT_GE(heartbeats, 2u);
  // Never lost: every transaction has its BEGIN and END; an END repeated after a kill carries the
  // same whole counts; the change events agree with the END.
  std::size_t repeated = 0;
  for (std::uint64_t lsn = 1; lsn <= appended; ++lsn) {
    const std::string id = std::to_string(lsn);
    ASSERT_TRUE(begins.contains(id)) << "no BEGIN for " << id;
    ASSERT_TRUE(ends.contains(id)) << "no END for " << id;
    if (ends[id].size() > 1) ++repeated;
    std::map<std::string, std::uint64_t> expected;
    for (std::uint32_t seq = 0; seq < changes_of(lsn); ++seq) ++expected[table_of(seq)];
    for (const Json& end : ends[id]) {
      EXPECT_EQ(end.at("event_count"), changes_of(lsn)) << end;
      std::map<std::string, std::uint64_t> counted;
      for (const Json& collection : end.at("data_collections")) {
        counted[collection.at("data_collection")] = collection.at("event_count");
      }
      EXPECT_EQ(counted, expected) << end;
    }
    std::set<std::uint64_t> all_orders;
    for (std::uint64_t order = 1; order <= changes_of(lsn); ++order) all_orders.insert(order);
    EXPECT_EQ(total_orders[id], all_orders) << id;
    for (const auto& [table, count] : expected) {
      std::set<std::uint64_t> orders;
      for (std::uint64_t order = 1; order <= count; ++order) orders.insert(order);
      EXPECT_EQ(collection_orders[id][table], orders) << id << " " << table;
    }
  }
  std::printf("%zu records, %llu transactions, %zu ENDs repeated after kills, %zu heartbeats\n",
              records.size(), static_cast<unsigned long long>(appended), repeated, heartbeats);
}

}  // namespace
}  // namespace cdcd::test
