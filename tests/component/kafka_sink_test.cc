// The Kafka sink against librdkafka's mock cluster, hosted in its own process (three brokers).
// Everything written is read back with python3-confluent-kafka, never with cdcd's code.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "daemon/config/node.h"
#include "daemon/metrics/metrics.h"
#include "daemon/plugin/registry.h"
#include "daemon/plugin/sink.h"
#include "tests/support/kafka_cluster.h"
#include "tests/support/test_util.h"

namespace cdcd {
void register_sink_kafka(PluginRegistry& registry);
}

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

Change make_change(std::uint64_t lsn, const std::string& entity, const std::string& key,
                   Operation operation = Operation::kInsert, std::string new_row = "") {
  Change change;
  change.lsn = lsn;
  change.timestamp_us = 1763719200123456 + static_cast<std::int64_t>(lsn);
  change.entity = entity;
  change.key = key;
  change.operation = operation;
  if (operation == Operation::kDelete) {
    change.old_row = key;
  } else {
    change.new_row = new_row.empty() ? key : std::move(new_row);
  }
  return change;
}

BatchPtr make_batch(std::vector<Change> changes, std::uint64_t id = 1,
                    const std::string& source = "shop") {
  auto batch = std::make_shared<Batch>();
  batch->id = id;
  batch->consumer = "c1";
  batch->source_name = source;
  batch->connector = "jsonl";
  batch->changes = std::move(changes);
  return batch;
}

std::string key_of(int id) { return "{\"id\":" + std::to_string(id) + "}"; }

// Builds sinks through the plugin registry, exactly as the daemon does.
class SinkBuilder {
 public:
  std::unique_ptr<Sink> build(const std::string& yaml) {
    diagnostics_ = config::Diagnostics();
    auto context = std::make_shared<config::ParseContext>();
    context->file = "cdcd.yaml";
    context->diagnostics = &diagnostics_;
    context->env = [](const std::string&) { return std::optional<std::string>(); };
    config::Node options(YAML::Load(yaml), "sinks.events", context);
    options.mark_known({"type"});
    PluginRegistry registry;
    register_sink_kafka(registry);
    SinkContext sink_context{"events", spdlog::default_logger(), metrics_.registry(),
                             metrics_.sink("events")};
    return (*registry.sink("kafka"))(options, sink_context);
  }
  const config::Diagnostics& diagnostics() const { return diagnostics_; }
  Metrics& metrics() { return metrics_; }

 private:
  config::Diagnostics diagnostics_;
  Metrics metrics_;
};

// Writes one batch and waits for its acknowledgement; a second ack would throw on the promise.
DeliveryReport write_and_wait(Sink& sink, BatchPtr batch, std::chrono::seconds timeout = 60s) {
  auto promise = std::make_shared<std::promise<DeliveryReport>>();
  auto future = promise->get_future();
  sink.write(std::move(batch),
             [promise](DeliveryReport report) { promise->set_value(std::move(report)); });
  if (future.wait_for(timeout) != std::future_status::ready) {
    ADD_FAILURE() << "no acknowledgement within " << timeout.count() << "s";
    return DeliveryReport{Error{"timed out waiting for the ack", false}, {}};
  }
  return future.get();
}

std::string failure_of(const DeliveryReport& report) {
  return report.failure ? report.failure->message : "";
}

std::string scrape(Metrics& metrics) {
  return prometheus::TextSerializer().Serialize(metrics.registry()->Collect());
}

// The value of the sample `series` (name and labels exactly as exposed), or -1 when absent.
double sample(Metrics& metrics, const std::string& series) {
  auto text = scrape(metrics);
  auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

// ---- configuration (no cluster) ---------------------------------------------------------------

TEST(KafkaSinkConfigTest, RefusesPropertiesThatBreakTheGuarantees) {
  SinkBuilder builder;
  auto sink = builder.build(R"(
brokers: 127.0.0.1:9092
topic: "cdc.{source}.{nope}"
key: "{key.id}-{whatever}"
properties:
  enable.idempotence: "false"
  acks: "1"
  max.in.flight.requests.per.connection: "10"
  partitioner: random
  transactional.id: tx
  bootstrap.servers: other:9092
  no.such.property: x
  compresion.type: zstd
  linger.ms: "5"
create_topics: {partitions: 0}
frmat: native
)");
  EXPECT_EQ(sink, nullptr);
  auto text = builder.diagnostics().to_string();
  EXPECT_THAT(text,
              HasSubstr("cdcd.yaml:3:8: error: sinks.events.topic: unknown placeholder {nope}"));
  EXPECT_THAT(text, HasSubstr("sinks.events.key: unknown placeholder {whatever}"));
  EXPECT_THAT(text, HasSubstr("cdcd.yaml:6:23: error: sinks.events.properties.enable.idempotence: "
                              "enable.idempotence must stay true"));
  EXPECT_THAT(text, HasSubstr("properties.acks: acks must stay \"all\""));
  EXPECT_THAT(text, HasSubstr("max.in.flight.requests.per.connection must be between 1 and 5"));
  EXPECT_THAT(text, HasSubstr("partitioner must be murmur2_random"));
  EXPECT_THAT(text, HasSubstr("transactional.id is not supported"));
  EXPECT_THAT(text, HasSubstr("bootstrap.servers is set by the sink's `brokers` option"));
  EXPECT_THAT(text, HasSubstr("properties.no.such.property: librdkafka: No such configuration "
                              "property: \"no.such.property\""));
  EXPECT_THAT(text, HasSubstr("properties.compresion.type: librdkafka: No such configuration "
                              "property: \"compresion.type\"; did you mean \"compression.type\"?"));
  EXPECT_THAT(text, HasSubstr("create_topics.partitions: expected"));
  EXPECT_THAT(text, HasSubstr("missing required key \"replication_factor\""));
  EXPECT_THAT(text, HasSubstr("sinks.events.frmat"));
  EXPECT_THAT(text, Not(HasSubstr("linger.ms")));
}

TEST(KafkaSinkConfigTest, AcceptsAValidConfigWithoutConnecting) {
  SinkBuilder builder;
  // Nothing listens on port 1: a factory must not do I/O.
  auto sink = builder.build(R"(
brokers: 127.0.0.1:1
topic: "cdc.{source}.{schema}.{table}.{operation}"
key: "{entity}:{key.id}"
format: native
tombstones: false
headers: false
properties: {acks: "-1", partitioner: murmur2, linger.ms: "20", compression.type: lz4}
create_topics: {partitions: 6, replication_factor: 3}
)");
  EXPECT_NE(sink, nullptr) << builder.diagnostics().to_string();
}

TEST(KafkaSinkConfigTest, RequiresBrokers) {
  SinkBuilder builder;
  EXPECT_EQ(builder.build("topic: t\n"), nullptr);
  EXPECT_THAT(builder.diagnostics().to_string(), HasSubstr("missing required key \"brokers\""));
}

// ---- against the mock cluster -----------------------------------------------------------------

class KafkaSinkTest : public ::testing::Test {
 protected:
  void SetUp() override { cluster_ = std::make_unique<KafkaMockCluster>(dir_.path()); }

  // A started sink; `extra` adds YAML lines to the sink's options.
  std::unique_ptr<Sink> start_sink(const std::string& extra = "",
                                   const std::string& properties = "") {
    auto sink = builder_.build("brokers: \"" + cluster_->bootstrap() + "\"\n" + extra +
                               "\nproperties:\n  statistics.interval.ms: \"200\"\n" + properties);
    if (sink == nullptr) {
      ADD_FAILURE() << builder_.diagnostics().to_string();
      return nullptr;
    }
    auto started = sink->start();
    EXPECT_TRUE(started) << (started ? "" : started.error().message);
    return sink;
  }

  TempDir dir_;
  std::unique_ptr<KafkaMockCluster> cluster_;
  SinkBuilder builder_;
};

TEST_F(KafkaSinkTest, RoutesTopicsKeysHeadersAndTombstones) {
  auto sink = start_sink("topic: \"cdc.{source}.{schema}.{table}\"\nformat: debezium");
  ASSERT_NE(sink, nullptr);
  const auto written_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  auto report = write_and_wait(
      *sink, make_batch({make_change(10, "public.orders", key_of(1)),
                         make_change(11, "public.orders", key_of(1), Operation::kUpdate,
                                     R"({"id":1,"status":"shipped"})"),
                         make_change(12, "inventory.items", key_of(2)),
                         make_change(13, "public.orders", key_of(1), Operation::kDelete),
                         make_change(14, "noschema", R"({"sku":"a-1"})")}));
  ASSERT_FALSE(report.failure) << failure_of(report);
  EXPECT_TRUE(report.rejected.empty());
  ASSERT_TRUE(sink->flush(std::chrono::steady_clock::now() + 10s));

  auto topics = cluster_->topics();
  EXPECT_TRUE(topics.contains("cdc.shop.public.orders"));
  EXPECT_TRUE(topics.contains("cdc.shop.inventory.items"));
  EXPECT_TRUE(topics.contains("cdc.shop..noschema"));  // no '.': empty schema, table = entity
  auto orders = cluster_->read_all({"cdc.shop.public.orders"});
  ASSERT_EQ(orders.size(), 4u);  // insert, update, delete, tombstone
  std::vector<std::string> operations;
  for (const auto& record : orders) {
    EXPECT_EQ(record.key, key_of(1));
    EXPECT_EQ(record.partition, orders[0].partition) << "one key, one partition";
    EXPECT_EQ(record.partition, record.murmur2_partition) << "Java's murmur2 partitioner";
    EXPECT_EQ(record.header("cdcd-entity"), "public.orders");
    EXPECT_EQ(record.header("cdcd-source"), "shop");
    operations.push_back(record.header("cdcd-operation").value_or("?"));
  }
  EXPECT_EQ(operations, (std::vector<std::string>{"insert", "update", "delete", "delete"}));
  EXPECT_EQ(orders[0].header("cdcd-lsn"), "10");
  EXPECT_EQ(orders[3].header("cdcd-lsn"), "13");
  auto update = nlohmann::json::parse(orders[1].value.value());
  EXPECT_EQ(update["op"], "u");
  EXPECT_EQ(update["after"]["status"], "shipped");
  auto deleted = nlohmann::json::parse(orders[2].value.value());
  EXPECT_EQ(deleted["op"], "d");
  EXPECT_EQ(orders[3].value, std::nullopt) << "a tombstone follows the delete";
  for (const auto& record : orders) {
    EXPECT_EQ(record.timestamp_type, 1) << "CreateTime";
    EXPECT_GE(record.timestamp_ms, written_ms) << "the time the sink produced the batch";
    EXPECT_LE(record.timestamp_ms, written_ms + 10000);
  }
  EXPECT_EQ(orders[3].offset, orders[2].offset + 1);

  auto items = cluster_->read_all({"cdc.shop.inventory.items"});
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].key, key_of(2));
  EXPECT_EQ(nlohmann::json::parse(items[0].value.value())["op"], "c");

  auto metrics = scrape(builder_.metrics());
  EXPECT_THAT(metrics, HasSubstr("cdcd_kafka_produced_messages_total{sink=\"events\",topic=\"cdc."
                                 "shop.public.orders\"} 4"));
  EXPECT_THAT(metrics, HasSubstr("cdcd_kafka_delivery_latency_seconds_count{sink=\"events\"} 6"));
  EXPECT_THAT(metrics, HasSubstr("cdcd_kafka_in_flight_messages{sink=\"events\"}"));
  // librdkafka's statistics (every 200 ms here): queue depth and broker round-trip times.
  EXPECT_TRUE(wait_until(
      [&] {
        return scrape(builder_.metrics()).find("cdcd_kafka_broker_rtt_seconds{") !=
               std::string::npos;
      },
      10s));
  EXPECT_THAT(scrape(builder_.metrics()), HasSubstr("cdcd_kafka_producer_queue_messages{sink="
                                                    "\"events\"} 0"));
  EXPECT_TRUE(sink->healthy());
  sink->stop();
}

TEST_F(KafkaSinkTest, KeyTemplateNativeFormatAndNoTombstonesOrHeaders) {
  auto sink = start_sink(
      "topic: \"t.{table}\"\nkey: \"{key.id}\"\nformat: native\n"
      "tombstones: false\nheaders: false");
  ASSERT_NE(sink, nullptr);
  auto report = write_and_wait(
      *sink, make_batch({make_change(20, "s.a", R"({"id":"seven"})"),
                         make_change(21, "s.a", R"({"other":1})"),  // no id: rejected
                         make_change(22, "s.a", R"({"id":{"x":1}})", Operation::kDelete)}));
  ASSERT_FALSE(report.failure) << failure_of(report);
  ASSERT_EQ(report.rejected.size(), 1u);
  EXPECT_EQ(report.rejected[0].index, 1u);
  EXPECT_THAT(report.rejected[0].reason, HasSubstr("lsn 21"));
  EXPECT_THAT(report.rejected[0].reason, HasSubstr("has no field \"id\""));

  auto records = cluster_->read_all({"t.a"});
  ASSERT_EQ(records.size(), 2u) << "no tombstone after the delete";
  std::map<std::string, KafkaRecord> by_key;
  for (const auto& record : records) by_key[record.key.value_or("")] = record;
  ASSERT_TRUE(by_key.contains("seven"));
  ASSERT_TRUE(by_key.contains(R"({"x":1})"));
  EXPECT_TRUE(by_key["seven"].headers.empty());
  auto native = nlohmann::json::parse(by_key["seven"].value.value());
  EXPECT_EQ(native["lsn"], 20);
  EXPECT_EQ(native["entity"], "s.a");
  EXPECT_EQ(nlohmann::json::parse(by_key[R"({"x":1})"].value.value())["operation"], "delete");
  sink->stop();
}

TEST_F(KafkaSinkTest, InvalidTopicNameRejectsTheChange) {
  auto sink = start_sink("topic: \"cdc.{entity}\"\nformat: native");
  ASSERT_NE(sink, nullptr);
  auto report = write_and_wait(*sink, make_batch({make_change(1, "ok.table", key_of(1)),
                                                  make_change(2, "bad table!", key_of(2))}));
  ASSERT_FALSE(report.failure) << failure_of(report);
  ASSERT_EQ(report.rejected.size(), 1u);
  EXPECT_EQ(report.rejected[0].index, 1u);
  EXPECT_THAT(report.rejected[0].reason, HasSubstr("character outside [a-zA-Z0-9._-]"));
  EXPECT_EQ(cluster_->message_count("cdc.ok.table"), 1);
  sink->stop();
}

// Two consumers write concurrently while a broker goes down, produce requests fail with retriable
// errors and a broker answers slowly: every change arrives exactly once, each key in lsn order.
TEST_F(KafkaSinkTest, BrokerFailuresMidStreamLoseNothingAndKeepPerKeyOrder) {
  constexpr int kWriters = 2, kBatches = 40, kBatchSize = 100, kKeysPerWriter = 20;
  constexpr int kTotal = kWriters * kBatches * kBatchSize;
  // Declared before the sink: acks still pending when an assertion returns early fire while the
  // sink is destroyed, and must find these alive.
  std::atomic<int> written{0}, acked{0};
  std::mutex failures_mutex;
  std::vector<std::string> failures;
  cluster_->create_topic("orders", 6);
  auto sink = start_sink("topic: orders\nformat: native");
  ASSERT_NE(sink, nullptr);

  std::map<std::string, std::vector<std::uint64_t>> expected;  // key → lsns in write order
  for (int w = 0; w < kWriters; ++w) {
    for (int b = 0; b < kBatches; ++b) {
      for (int i = 0; i < kBatchSize; ++i) {
        std::uint64_t lsn = 1 + static_cast<std::uint64_t>((b * kBatchSize + i) * kWriters + w);
        expected[key_of(w * 1000 + i % kKeysPerWriter)].push_back(lsn);
      }
    }
  }
  auto writer = [&](int w) {
    for (int b = 0; b < kBatches; ++b) {
      std::vector<Change> changes;
      for (int i = 0; i < kBatchSize; ++i) {
        std::uint64_t lsn = 1 + static_cast<std::uint64_t>((b * kBatchSize + i) * kWriters + w);
        changes.push_back(make_change(lsn, "public.orders", key_of(w * 1000 + i % kKeysPerWriter),
                                      Operation::kUpdate));
      }
      sink->write(make_batch(std::move(changes), b + 1), [&](DeliveryReport report) {
        if (report.failure || !report.rejected.empty()) {
          std::lock_guard lock(failures_mutex);
          failures.push_back(report.failure ? report.failure->message : "rejected");
        }
        acked += kBatchSize;
      });
      written += kBatchSize;
      // Paced so that the faults below land mid-stream rather than after the last write.
      std::this_thread::sleep_for(5ms);
    }
  };
  std::vector<std::jthread> writers;  // joined on every way out
  for (int w = 0; w < kWriters; ++w) writers.emplace_back(writer, w);

  ASSERT_TRUE(wait_until([&] { return acked >= kTotal / 5; }, 60s));
  cluster_->broker_down(1);
  cluster_->must("rtt 2 300");
  ASSERT_TRUE(wait_until([&] { return written >= kTotal / 2; }, 60s));
  cluster_->must(
      "push_errors Produce NOT_LEADER_FOR_PARTITION REQUEST_TIMED_OUT NOT_ENOUGH_REPLICAS "
      "NOT_ENOUGH_REPLICAS_AFTER_APPEND LEADER_NOT_AVAILABLE REQUEST_TIMED_OUT");
  ASSERT_TRUE(wait_until([&] { return written >= kTotal * 3 / 4; }, 60s));
  EXPECT_LT(acked.load(), kTotal) << "the outage must hold some messages back";
  cluster_->broker_up(1);
  cluster_->must("rtt 2 0");
  writers.clear();
  ASSERT_TRUE(sink->flush(std::chrono::steady_clock::now() + 90s));
  EXPECT_EQ(acked.load(), kTotal);
  EXPECT_TRUE(failures.empty()) << failures.front();

  auto records = cluster_->read_all({"orders"});
  std::map<std::string, std::vector<std::uint64_t>> actual;
  std::map<std::string, std::set<int>> partitions;
  for (const auto& record : records) {
    auto key = record.key.value_or("");
    actual[key].push_back(std::stoull(record.header("cdcd-lsn").value_or("0")));
    partitions[key].insert(record.partition);
    EXPECT_EQ(record.partition, record.murmur2_partition);
  }
  EXPECT_EQ(records.size(), static_cast<std::size_t>(kTotal)) << "the idempotent producer "
                                                                 "neither loses nor duplicates";
  for (const auto& [key, lsns] : expected) {
    EXPECT_EQ(actual[key], lsns) << "key " << key;
    EXPECT_EQ(partitions[key].size(), 1u) << "key " << key;
  }
  // The injected errors were retried by librdkafka (its statistics feed the sink's counter).
  EXPECT_TRUE(wait_until(
      [&] { return sample(builder_.metrics(), "cdcd_sink_retries_total{sink=\"events\"}") > 0; },
      10s));
  EXPECT_TRUE(sink->healthy());
  sink->stop();
}

// With the brokers down nothing is delivered, so a producer queue of 10 messages full while a
// batch of 100 is being written proves that write() is blocked in it.
TEST_F(KafkaSinkTest, FullProducerQueueBlocksTheWriterAndLosesNothing) {
  constexpr int kBatches = 20, kBatchSize = 100;
  const std::string in_flight = "cdcd_kafka_in_flight_messages{sink=\"events\"}";
  auto sink = start_sink("topic: small\nformat: native",
                         "  queue.buffering.max.messages: \"10\"\n  linger.ms: \"1\"\n");
  ASSERT_NE(sink, nullptr);
  // The topic's leader is known before the brokers go away.
  ASSERT_FALSE(write_and_wait(*sink, make_batch({make_change(1, "s.t", key_of(0))})).failure);
  for (int id = 1; id <= 3; ++id) cluster_->broker_down(id);

  std::vector<std::future<DeliveryReport>> acks;
  std::atomic<int> returned{0};
  auto write_batches = [&](int first, int count) {
    for (int b = first; b < first + count; ++b) {
      std::vector<Change> changes;
      for (int i = 0; i < kBatchSize; ++i) {
        changes.push_back(
            make_change(static_cast<std::uint64_t>(b * kBatchSize + i + 2), "s.t", key_of(i % 7)));
      }
      auto promise = std::make_shared<std::promise<DeliveryReport>>();
      acks.push_back(promise->get_future());
      sink->write(make_batch(std::move(changes), b + 2),
                  [promise](DeliveryReport report) { promise->set_value(std::move(report)); });
      ++returned;
    }
  };
  std::optional<std::jthread> writer;
  writer.emplace(write_batches, 0, kBatches);
  ASSERT_TRUE(wait_until([&] { return sample(builder_.metrics(), in_flight) >= 10; }, 30s));
  EXPECT_EQ(returned.load(), 0) << "the first write() returned with 90 of its changes not queued";
  for (int id = 1; id <= 3; ++id) cluster_->broker_up(id);
  writer.reset();  // joins: every write returned once the brokers came back
  EXPECT_EQ(returned.load(), kBatches);
  for (auto& ack : acks) {
    ASSERT_EQ(ack.wait_for(60s), std::future_status::ready);
    auto report = ack.get();
    EXPECT_FALSE(report.failure) << failure_of(report);
  }
  auto records = cluster_->read_all({"small"});
  std::set<std::string> lsns;
  for (const auto& record : records) lsns.insert(record.header("cdcd-lsn").value_or(""));
  EXPECT_EQ(records.size(), static_cast<std::size_t>(kBatches * kBatchSize + 1));
  EXPECT_EQ(lsns.size(), static_cast<std::size_t>(kBatches * kBatchSize + 1));

  // Blocked again; stop() unblocks the writer and fails its batch.
  acks.clear();
  returned = 0;
  for (int id = 1; id <= 3; ++id) cluster_->broker_down(id);
  writer.emplace(write_batches, kBatches, 1);
  ASSERT_TRUE(wait_until([&] { return sample(builder_.metrics(), in_flight) >= 10; }, 30s));
  EXPECT_EQ(returned.load(), 0) << "write() returned with 90 of its changes not queued";
  sink->stop();
  ASSERT_TRUE(wait_until([&] { return returned == 1; }, 15s)) << "stop() left write() blocked";
  writer.reset();
  ASSERT_EQ(acks.size(), 1u);
  ASSERT_EQ(acks[0].wait_for(0s), std::future_status::ready) << "stop() returned before the ack";
  EXPECT_TRUE(acks[0].get().failure);
  for (int id = 1; id <= 3; ++id) cluster_->broker_up(id);
}

// An update that changed the key: a tombstone for the old key goes first (Debezium's order), keyed
// as the key template renders the old key.
TEST_F(KafkaSinkTest, KeyChangingUpdateSendsATombstoneForTheOldKeyFirst) {
  cluster_->create_topic("moved", 1);
  cluster_->create_topic("moved.templated", 1);
  cluster_->create_topic("moved.quiet", 1);
  auto moved = [](std::uint64_t lsn, int from, int to) {
    auto change = make_change(lsn, "s.t", key_of(to), Operation::kUpdate);
    change.old_key = key_of(from);
    return change;
  };
  auto changes = [&] {
    return std::vector<Change>{make_change(1, "s.t", key_of(1)), moved(2, 1, 2),
                               make_change(3, "s.t", key_of(2), Operation::kUpdate)};
  };
  {
    auto sink = start_sink("topic: moved\nformat: native");
    ASSERT_NE(sink, nullptr);
    auto report = write_and_wait(*sink, make_batch(changes()));
    ASSERT_FALSE(report.failure) << failure_of(report);
    EXPECT_TRUE(report.rejected.empty());
    sink->stop();
  }
  auto records = cluster_->read_all({"moved"});
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records[0].key, key_of(1));
  EXPECT_EQ(records[1].key, key_of(1)) << "the old key's tombstone";
  EXPECT_EQ(records[1].value, std::nullopt);
  EXPECT_EQ(records[1].header("cdcd-lsn"), "2");
  EXPECT_EQ(records[1].header("cdcd-operation"), "update");
  EXPECT_EQ(records[2].key, key_of(2)) << "then the update under its new key";
  ASSERT_TRUE(records[2].value);
  EXPECT_EQ(nlohmann::json::parse(*records[2].value)["lsn"], 2);
  EXPECT_EQ(records[3].key, key_of(2)) << "an update that kept its key has no tombstone";
  EXPECT_TRUE(records[3].value);

  {
    auto sink = start_sink("topic: moved.templated\nkey: \"k{key.id}\"\nformat: native");
    ASSERT_NE(sink, nullptr);
    auto without_id = moved(4, 3, 4);
    without_id.old_key = R"({"other":3})";
    // Another key column changed: the template renders both keys "k5", nothing to drop.
    auto same_rendered = make_change(5, "s.t", R"({"id":5,"region":"b"})", Operation::kUpdate);
    same_rendered.old_key = R"({"id":5,"region":"a"})";
    auto report = write_and_wait(*sink, make_batch({moved(2, 1, 2), without_id, same_rendered}));
    ASSERT_FALSE(report.failure) << failure_of(report);
    ASSERT_EQ(report.rejected.size(), 1u);
    EXPECT_EQ(report.rejected[0].index, 1u);
    EXPECT_THAT(report.rejected[0].reason, HasSubstr("cannot build the old key"));
    sink->stop();
  }
  auto templated = cluster_->read_all({"moved.templated"});
  ASSERT_EQ(templated.size(), 3u) << "nothing of the rejected change goes out";
  EXPECT_EQ(templated[0].key, "k1");
  EXPECT_EQ(templated[0].value, std::nullopt);
  EXPECT_EQ(templated[1].key, "k2");
  EXPECT_EQ(templated[2].key, "k5");
  EXPECT_TRUE(templated[2].value) << "no tombstone for a key that renders unchanged";

  {
    auto sink = start_sink("topic: moved.quiet\ntombstones: false\nformat: native");
    ASSERT_NE(sink, nullptr);
    ASSERT_FALSE(write_and_wait(*sink, make_batch(changes())).failure);
    sink->stop();
  }
  auto quiet = cluster_->read_all({"moved.quiet"});
  ASSERT_EQ(quiet.size(), 3u) << "no tombstones when they are off";
  for (const auto& record : quiet) EXPECT_TRUE(record.value);
}

TEST_F(KafkaSinkTest, CreatesTopicsWithTheConfiguredPartitionsOrSaysWhyNot) {
  auto sink = start_sink(
      "topic: \"made.{table}\"\ncreate_topics: {partitions: 5, replication_factor: 3}\n"
      "format: native");
  ASSERT_NE(sink, nullptr);
  auto report = write_and_wait(
      *sink, make_batch({make_change(1, "s.one", key_of(1)), make_change(2, "s.two", key_of(2))}));
  if (!cluster_->advertises_controller()) {
    // librdkafka 2.0's mock cluster: CreateTopics waits for a controller that never appears.
    ASSERT_TRUE(report.failure);
    EXPECT_THAT(report.failure->message, HasSubstr("cannot create topic 'made.one'"));
    EXPECT_THAT(report.failure->message, HasSubstr("waiting for controller"));
    EXPECT_THAT(report.failure->message, HasSubstr("lsn 1"));
    EXPECT_EQ(cluster_->message_count("made.one"), 0);
    sink->stop();
    return;
  }
  ASSERT_FALSE(report.failure) << failure_of(report);
  auto topics = cluster_->topics();
  // Auto-created topics of the mock have 4 partitions: 5 means the admin API made them.
  EXPECT_EQ(topics["made.one"], 5);
  EXPECT_EQ(topics["made.two"], 5);
  sink->stop();
}

// ---- fatal errors: each one named, each failing (or rejecting) the batch ------------------------

TEST_F(KafkaSinkTest, AuthorizationFailureFailsTheBatchNamingTopicAndLsn) {
  auto sink = start_sink("topic: secret\nformat: native");
  ASSERT_NE(sink, nullptr);
  ASSERT_FALSE(write_and_wait(*sink, make_batch({make_change(1, "s.t", key_of(1))})).failure);
  cluster_->must("push_errors Produce TOPIC_AUTHORIZATION_FAILED");
  auto report = write_and_wait(*sink, make_batch({make_change(77, "s.t", key_of(1))}, 2));
  ASSERT_TRUE(report.failure);
  EXPECT_THAT(report.failure->message, HasSubstr("topic 'secret'"));
  EXPECT_THAT(report.failure->message, HasSubstr("lsn 77"));
  EXPECT_THAT(report.failure->message, HasSubstr("TOPIC_AUTHORIZATION_FAILED"));
  EXPECT_FALSE(sink->healthy());
  sink->stop();
}

TEST_F(KafkaSinkTest, UnknownTopicWithoutAutoCreationFailsTheBatch) {
  // The mock cannot turn auto-creation off; a topic whose metadata says "unknown" is the same
  // thing for the producer.
  cluster_->must("topic_error missing UNKNOWN_TOPIC_OR_PART");
  auto sink = start_sink("topic: missing\nformat: native",
                         "  topic.metadata.propagation.max.ms: \"500\"\n");
  ASSERT_NE(sink, nullptr);
  auto report = write_and_wait(
      *sink, make_batch({make_change(5, "s.t", key_of(1)), make_change(6, "s.t", key_of(2))}));
  ASSERT_TRUE(report.failure);
  EXPECT_THAT(report.failure->message, HasSubstr("topic 'missing'"));
  EXPECT_THAT(report.failure->message, HasSubstr("UNKNOWN_TOPIC_OR_PART"));
  EXPECT_THAT(report.failure->message, HasSubstr("lsn 5"));
  sink->stop();
}

TEST_F(KafkaSinkTest, MessageTooLargeRejectsOnlyThatChange) {
  auto sink = start_sink("topic: big\nformat: native", "  message.max.bytes: \"2000\"\n");
  ASSERT_NE(sink, nullptr);
  std::string huge = R"({"id":2,"blob":")" + std::string(5000, 'x') + "\"}";
  auto report =
      write_and_wait(*sink, make_batch({make_change(1, "s.t", key_of(1)),
                                        make_change(2, "s.t", key_of(2), Operation::kInsert, huge),
                                        make_change(3, "s.t", key_of(3))}));
  ASSERT_FALSE(report.failure) << failure_of(report);
  ASSERT_EQ(report.rejected.size(), 1u);
  EXPECT_EQ(report.rejected[0].index, 1u);
  EXPECT_THAT(report.rejected[0].reason, HasSubstr("MSG_SIZE_TOO_LARGE"));
  EXPECT_THAT(report.rejected[0].reason, HasSubstr("lsn 2"));
  EXPECT_THAT(report.rejected[0].reason, HasSubstr("topic 'big'"));
  auto records = cluster_->read_all({"big"});
  std::set<std::string> lsns;
  for (const auto& record : records) lsns.insert(record.header("cdcd-lsn").value_or(""));
  EXPECT_EQ(lsns, (std::set<std::string>{"1", "3"}));
  EXPECT_TRUE(sink->healthy()) << "a rejected change does not break the sink";
  sink->stop();
}

TEST_F(KafkaSinkTest, BrokerRefusingABatchAsTooLargeFailsInsteadOfDeadLetteringIt) {
  auto sink = start_sink("topic: limited\nformat: native");
  ASSERT_NE(sink, nullptr);
  ASSERT_FALSE(write_and_wait(*sink, make_batch({make_change(1, "s.t", key_of(1))})).failure);
  cluster_->must("push_errors Produce MSG_SIZE_TOO_LARGE");
  auto report = write_and_wait(
      *sink, make_batch({make_change(2, "s.t", key_of(1)), make_change(3, "s.t", key_of(1))}, 2));
  ASSERT_TRUE(report.failure);
  EXPECT_TRUE(report.rejected.empty());
  EXPECT_THAT(report.failure->message, HasSubstr("topic 'limited'"));
  EXPECT_THAT(report.failure->message, HasSubstr("MSG_SIZE_TOO_LARGE"));
  EXPECT_THAT(report.failure->message, HasSubstr("set properties.message.max.bytes"));
  sink->stop();
}

TEST_F(KafkaSinkTest, IdempotenceFatalErrorFailsTheSinkForGood) {
  auto sink = start_sink("topic: fatal\nformat: native");
  ASSERT_NE(sink, nullptr);
  ASSERT_FALSE(write_and_wait(*sink, make_batch({make_change(1, "s.t", key_of(1))})).failure);
  cluster_->must("push_errors Produce OUT_OF_ORDER_SEQUENCE_NUMBER");
  auto report = write_and_wait(*sink, make_batch({make_change(2, "s.t", key_of(1))}, 2));
  ASSERT_TRUE(report.failure);
  EXPECT_THAT(report.failure->message, HasSubstr("topic 'fatal'"));
  EXPECT_THAT(report.failure->message, HasSubstr("lsn 2"));
  EXPECT_THAT(report.failure->message, HasSubstr("fatal producer error OUT_OF_ORDER_SEQUENCE"));
  EXPECT_FALSE(sink->healthy());
  // The producer cannot recover: later batches fail at once with the same cause.
  auto later = write_and_wait(*sink, make_batch({make_change(3, "s.t", key_of(1))}, 3), 5s);
  ASSERT_TRUE(later.failure);
  EXPECT_THAT(later.failure->message, HasSubstr("fatal producer error"));
  sink->stop();
}

TEST_F(KafkaSinkTest, DeliveryTimeoutFailsTheBatchInsteadOfLosingIt) {
  auto sink = start_sink("topic: slow\nformat: native", "  message.timeout.ms: \"1500\"\n");
  ASSERT_NE(sink, nullptr);
  ASSERT_FALSE(write_and_wait(*sink, make_batch({make_change(1, "s.t", key_of(1))})).failure);
  for (int id = 1; id <= 3; ++id) cluster_->broker_down(id);
  auto report = write_and_wait(*sink, make_batch({make_change(9, "s.t", key_of(1))}, 2));
  ASSERT_TRUE(report.failure);
  EXPECT_THAT(report.failure->message, HasSubstr("lsn 9"));
  EXPECT_THAT(report.failure->message, HasSubstr("_MSG_TIMED_OUT"));
  EXPECT_FALSE(sink->healthy());
  for (int id = 1; id <= 3; ++id) cluster_->broker_up(id);
  sink->stop();
}

TEST_F(KafkaSinkTest, StopFailsWhatIsStillUnconfirmedAndFlushReportsTheDeadline) {
  auto sink = start_sink("topic: held\nformat: native");
  ASSERT_NE(sink, nullptr);
  ASSERT_FALSE(write_and_wait(*sink, make_batch({make_change(1, "s.t", key_of(1))})).failure);
  for (int id = 1; id <= 3; ++id) cluster_->broker_down(id);
  auto promise = std::make_shared<std::promise<DeliveryReport>>();
  auto future = promise->get_future();
  sink->write(make_batch({make_change(2, "s.t", key_of(1))}, 2),
              [promise](DeliveryReport report) { promise->set_value(std::move(report)); });
  // With the default message.timeout.ms=0 the message waits for the brokers indefinitely.
  auto flushed = sink->flush(std::chrono::steady_clock::now() + 1500ms);
  ASSERT_FALSE(flushed);
  EXPECT_THAT(flushed.error().message, HasSubstr("1 batches still await delivery reports"));
  EXPECT_EQ(future.wait_for(0s), std::future_status::timeout);
  sink->stop();
  ASSERT_EQ(future.wait_for(10s), std::future_status::ready);
  auto report = future.get();
  ASSERT_TRUE(report.failure);
  for (int id = 1; id <= 3; ++id) cluster_->broker_up(id);
}

TEST_F(KafkaSinkTest, StartFailsWhenNoBrokerAnswers) {
  int port = free_port();
  auto sink = builder_.build("brokers: \"127.0.0.1:" + std::to_string(port) + "\"\ntopic: t\n");
  ASSERT_NE(sink, nullptr);
  auto started = sink->start();
  ASSERT_FALSE(started);
  EXPECT_TRUE(started.error().retryable);
  EXPECT_THAT(started.error().message, HasSubstr("cannot reach the brokers 127.0.0.1:"));
  sink->stop();
}

}  // namespace
}  // namespace cdcd::test
