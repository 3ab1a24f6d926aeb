// The cdcd daemon (jsonl source, file checkpoints) writing to the Kafka mock cluster: killed with
// SIGKILL mid-stream and restarted several times, then read back with python3-confluent-kafka.
#include <signal.h>

#include <algorithm>
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

constexpr int kKeys = 40;
constexpr const char* kTopic = "cdc.log.public.orders";

std::string change_line(std::uint64_t lsn) {
  nlohmann::json line = {{"lsn", lsn},
                         {"seq", 0},
                         {"timestamp", 1763719200000000 + lsn},
                         {"entity", "public.orders"},
                         {"key", {{"id", lsn % kKeys}}},
                         {"operation", "update"},
                         {"new", {{"id", lsn % kKeys}, {"version", lsn}}}};
  return line.dump() + "\n";
}

class KafkaDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = std::make_unique<KafkaMockCluster>(dir_.path());
    cluster_->create_topic(kTopic, 6);
    metrics_port_ = free_port();
    write_file(log_path_, "");
    write_file(config_path_, "sources:\n  log: {type: jsonl, path: " + log_path_ +
                                 ", follow: true}\n"
                                 "sinks:\n  events:\n    type: kafka\n    brokers: \"" +
                                 cluster_->bootstrap() +
                                 "\"\n    topic: \"cdc.{source}.{entity}\"\n    format: native\n"
                                 "checkpoints: {type: file, dir: " +
                                 dir_.file("checkpoints") +
                                 ", interval: 100ms}\n"
                                 "consumers:\n  main:\n    source: log\n    sinks: [events]\n"
                                 // A window of 800 changes: a chunk of 4000 takes several
                                 // round trips, so that kills land mid-stream.
                                 "    batch: {max_events: 200, max_wait: 20ms, max_in_flight: 4}\n"
                                 "metrics: {listen: 127.0.0.1:" +
                                 std::to_string(metrics_port_) + "}\nlog: {level: info}\n");
  }

  std::unique_ptr<ChildProcess> start_daemon() {
    return std::make_unique<ChildProcess>(
        std::vector<std::string>{cdcd_binary(), "run", "--config", config_path_}, dir_.path());
  }

  // The consumer's durable checkpoint, 0 before the first one.
  std::uint64_t checkpoint_lsn() {
    auto json = nlohmann::json::parse(read_file(dir_.file("checkpoints/main.json")), nullptr,
                                      /*allow_exceptions=*/false);
    return json.is_object() ? json.value("lsn", std::uint64_t{0}) : 0;
  }

  void append_changes(std::uint64_t from, std::uint64_t to) {
    std::string chunk;
    for (auto lsn = from; lsn <= to; ++lsn) chunk += change_line(lsn);
    // The commit marker ends the chunk's last transaction at once (docs/sources/jsonl.md).
    chunk += nlohmann::json{{"lsn", to}, {"commit", true}}.dump() + "\n";
    append_file(log_path_, chunk);
  }

  TempDir dir_;
  std::unique_ptr<KafkaMockCluster> cluster_;
  int metrics_port_ = 0;
  std::string log_path_ = dir_.file("changes.jsonl");
  std::string config_path_ = dir_.file("cdcd.yaml");
};

TEST_F(KafkaDaemonTest, SigkillMidStreamThenRestartDeliversEveryChangeAtLeastOnce) {
  constexpr int kKills = 5;
  constexpr std::uint64_t kChunk = 4000;
  // Slow brokers keep messages in flight long enough for the kills to catch some.
  for (int broker = 1; broker <= 3; ++broker)
    cluster_->must("rtt " + std::to_string(broker) + " 15");

  std::mt19937 random(20261121);
  std::uint64_t appended = 0;
  int kills_mid_stream = 0;
  for (int kill = 0; kill < kKills; ++kill) {
    auto daemon = start_daemon();
    append_changes(appended + 1, appended + kChunk);
    appended += kChunk;
    auto before = checkpoint_lsn();
    // Kill once the daemon has made some progress on this chunk, after a random extra delay.
    ASSERT_TRUE(wait_until([&] { return checkpoint_lsn() > before || !daemon->running(); }, 60s))
        << daemon->stderr_text();
    ASSERT_TRUE(daemon->running()) << daemon->stderr_text();
    std::this_thread::sleep_for(std::chrono::milliseconds(random() % 150));
    if (checkpoint_lsn() < appended) ++kills_mid_stream;
    daemon->signal(SIGKILL);
    ASSERT_EQ(daemon->wait(10s), 128 + SIGKILL);
  }
  EXPECT_GE(kills_mid_stream, 3) << "most kills must land before the chunk was checkpointed";

  // A last run catches up, then stops cleanly on SIGTERM.
  auto daemon = start_daemon();
  append_changes(appended + 1, appended + kChunk);
  appended += kChunk;
  ASSERT_TRUE(wait_until([&] { return checkpoint_lsn() == appended; }, 120s))
      << "checkpoint " << checkpoint_lsn() << " of " << appended << "\n"
      << daemon->stderr_text();
  auto metrics = http_get(metrics_port_, "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("cdcd_kafka_produced_messages_total{sink=\"events\",topic=\"" +
                               std::string(kTopic) + "\"}"),
            std::string::npos);
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();

  auto records = cluster_->read_all({kTopic}, 90s);
  std::map<std::string, std::vector<std::uint64_t>> by_key;
  std::set<std::uint64_t> seen;
  for (const auto& record : records) {
    ASSERT_TRUE(record.value);
    auto lsn = nlohmann::json::parse(*record.value).at("lsn").get<std::uint64_t>();
    EXPECT_EQ(record.header("cdcd-lsn"), std::to_string(lsn));
    EXPECT_EQ(record.partition, record.murmur2_partition);
    by_key[record.key.value_or("")].push_back(lsn);
    seen.insert(lsn);
  }
  // At least once: every change of the log is there.
  std::vector<std::uint64_t> missing;
  for (std::uint64_t lsn = 1; lsn <= appended; ++lsn) {
    if (!seen.contains(lsn)) missing.push_back(lsn);
  }
  EXPECT_TRUE(missing.empty()) << missing.size() << " changes missing, first lsn "
                               << missing.front();
  EXPECT_GE(records.size(), appended);
  std::printf("%zu records for %llu changes (%d kills mid-stream)\n", records.size(),
              static_cast<unsigned long long>(appended), kills_mid_stream);
  // Per key, in lsn order: a restart may replay a suffix (changes after the checkpoint), but
  // every change reaches Kafka for the first time after every earlier change of its key.
  EXPECT_EQ(by_key.size(), static_cast<std::size_t>(kKeys));
  for (const auto& [key, lsns] : by_key) {
    std::vector<std::uint64_t> first_seen;
    std::set<std::uint64_t> distinct;
    for (auto lsn : lsns) {
      if (distinct.insert(lsn).second) first_seen.push_back(lsn);
    }
    EXPECT_TRUE(std::is_sorted(first_seen.begin(), first_seen.end())) << "key " << key;
  }
}

}  // namespace
}  // namespace cdcd::test
