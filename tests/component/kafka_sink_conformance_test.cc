// The sink conformance suite (tests/support/sink_conformance.h) for the Kafka sink, against
// librdkafka's mock cluster in its own process; read back with python3-confluent-kafka.

#include <chrono>
#include <future>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/kafka_cluster.h"
#include "tests/support/sink_conformance.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kTopic = "conformance";

// One topic of one partition: a single ordered stream. Blocked: every broker down, after the sink
// has learnt the topic's leader, with a producer queue of 10 messages.
class KafkaHarness : public SinkHarness {
 public:
  KafkaHarness() : cluster_(dir_.path()) { cluster_.create_topic(kTopic, 1); }

  std::unique_ptr<Sink> make_sink() override { return started(""); }

  std::unique_ptr<Sink> make_blocked_sink() override {
    auto sink = started("  queue.buffering.max.messages: \"10\"\n");
    if (sink == nullptr) return nullptr;
    // The topic's metadata first, so that the messages wait for a leader that is down rather
    // than for metadata.
    auto warmed = std::make_shared<std::promise<DeliveryReport>>();
    auto batch = std::make_shared<Batch>();
    batch->source_name = "warmup";
    batch->changes.resize(1);
    batch->changes[0].entity = "warmup.t";
    batch->changes[0].key = batch->changes[0].new_row = "{\"id\":0}";
    sink->write(batch, [warmed](DeliveryReport report) { warmed->set_value(std::move(report)); });
    auto report = warmed->get_future().get();
    if (report.failure) {
      ADD_FAILURE() << report.failure->message;
      return nullptr;
    }
    for (int broker = 1; broker <= 3; ++broker) cluster_.broker_down(broker);
    return sink;
  }

  std::vector<DeliveredChange> delivered() override {
    std::vector<DeliveredChange> changes;
    for (const auto& record : cluster_.read_all({kTopic})) {
      auto value = nlohmann::json::parse(record.value.value_or("null"));
      changes.push_back({value.value("entity", ""), value.value("lsn", std::uint64_t{0})});
    }
    return changes;
  }

  // A write() waits for room in the producer's queue (backpressure).
  bool write_blocks() const override { return true; }

 private:
  std::unique_ptr<Sink> started(const std::string& properties) {
    auto sink =
        build_plugin_sink("kafka",
                          "brokers: \"" + cluster_.bootstrap() + "\"\ntopic: " + kTopic +
                              "\nformat: native\nproperties:\n  linger.ms: \"1\"\n" + properties,
                          metrics_);
    if (sink == nullptr) return nullptr;
    if (auto status = sink->start(); !status) {
      ADD_FAILURE() << status.error().message;
      return nullptr;
    }
    return sink;
  }

  TempDir dir_;
  KafkaMockCluster cluster_;
  Metrics metrics_;
};

CDCD_SINK_CONFORMANCE_SUITE(Kafka, SinkConformanceCase{
                                       "kafka", [] { return std::make_unique<KafkaHarness>(); }});

}  // namespace
}  // namespace cdcd::test
