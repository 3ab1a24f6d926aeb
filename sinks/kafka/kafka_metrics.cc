#include "sinks/kafka/kafka_metrics.h"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace cdcd::kafka {

namespace {

// 0.25 ms doubling up to about 35 min: a healthy cluster answers in milliseconds, while with
// message.timeout.ms=0 a message may wait for a broker for as long as it is down.
prometheus::Histogram::BucketBoundaries latency_buckets() {
  prometheus::Histogram::BucketBoundaries buckets;
  for (double bound = 0.00025; bound < 2100.0; bound *= 2) buckets.push_back(bound);
  return buckets;
}

prometheus::Counter* or_private(prometheus::Counter* counter, prometheus::Registry& registry,
                                const std::string& name, const std::string& sink) {
  if (counter != nullptr) return counter;
  return &prometheus::BuildCounter().Name(name).Register(registry).Add({{"sink", sink}});
}

}  // namespace

KafkaMetrics::KafkaMetrics(std::shared_ptr<prometheus::Registry> registry, const std::string& sink,
                           SinkMetrics sink_metrics)
    : registry_(registry ? std::move(registry) : std::make_shared<prometheus::Registry>()),
      sink_(sink),
      messages_family_(prometheus::BuildCounter()
                           .Name("cdcd_kafka_produced_messages_total")
                           .Help("Messages (tombstones included) the brokers acknowledged, per "
                                 "topic.")
                           .Register(*registry_)),
      bytes_family_(prometheus::BuildCounter()
                        .Name("cdcd_kafka_produced_bytes_total")
                        .Help("Key and value bytes of the messages the brokers acknowledged, per "
                              "topic.")
                        .Register(*registry_)),
      rtt_family_(prometheus::BuildGauge()
                      .Name("cdcd_kafka_broker_rtt_seconds")
                      .Help("Average request round-trip time to each broker over the last "
                            "statistics interval (librdkafka statistics).")
                      .Register(*registry_)),
      latency_bounds_(latency_buckets()),
      latency_(&prometheus::BuildHistogram()
                    .Name("cdcd_kafka_delivery_latency_seconds")
                    .Help("Time from handing a message to the producer to its successful "
                          "delivery report.")
                    .Register(*registry_)
                    .Add({{"sink", sink}}, latency_bounds_)),
      in_flight_(&prometheus::BuildGauge()
                      .Name("cdcd_kafka_in_flight_messages")
                      .Help("Messages handed to the producer that have no delivery report yet.")
                      .Register(*registry_)
                      .Add({{"sink", sink}})),
      queue_messages_(&prometheus::BuildGauge()
                           .Name("cdcd_kafka_producer_queue_messages")
                           .Help("Messages in the producer's queues (librdkafka statistics "
                                 "msg_cnt).")
                           .Register(*registry_)
                           .Add({{"sink", sink}})),
      errors_(or_private(sink_metrics.errors, *registry_, "cdcd_sink_errors_total", sink)),
      retries_(or_private(sink_metrics.retries, *registry_, "cdcd_sink_retries_total", sink)) {}

KafkaMetrics::LatencyTally::LatencyTally(KafkaMetrics& metrics)
    : histogram_(*metrics.latency_),
      bounds_(metrics.latency_bounds_),
      counts_(bounds_.size() + 1, 0.0) {}

void KafkaMetrics::LatencyTally::add(double seconds) {
  // The bucket Histogram::Observe would choose: the first bound at or above the value.
  auto bucket = std::lower_bound(bounds_.begin(), bounds_.end(), seconds) - bounds_.begin();
  counts_[static_cast<std::size_t>(bucket)] += 1;
  sum_ += seconds;
  empty_ = false;
}

void KafkaMetrics::LatencyTally::publish() {
  if (empty_) return;
  histogram_.ObserveMultiple(counts_, sum_);
  std::fill(counts_.begin(), counts_.end(), 0.0);
  sum_ = 0;
  empty_ = true;
}

KafkaMetrics::TopicCounters KafkaMetrics::topic(const std::string& topic) {
  const prometheus::Labels labels{{"sink", sink_}, {"topic", topic}};
  return TopicCounters{&messages_family_.Add(labels), &bytes_family_.Add(labels)};
}

bool KafkaMetrics::on_statistics(std::string_view json, std::int64_t reported) {
  auto stats = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!stats.is_object()) return false;
  queue_messages_->Set(stats.value("msg_cnt", 0.0));
  auto brokers = stats.find("brokers");
  if (brokers == stats.end() || !brokers->is_object()) return false;
  std::int64_t in_transit = 0;
  bool any_up = false;
  for (const auto& [name, broker] : brokers->items()) {
    if (!broker.is_object()) continue;
    any_up = any_up || broker.value("state", "") == "UP";
    in_transit += broker.value("outbuf_msg_cnt", std::int64_t{0}) +
                  broker.value("waitresp_msg_cnt", std::int64_t{0});
    // Bootstrap entries (nodeid -1) are replaced by the real brokers once metadata arrives.
    if (broker.value("nodeid", -1) < 0) continue;
    auto rtt = broker.find("rtt");
    if (rtt == broker.end() || !rtt->is_object()) continue;
    double average_us = rtt->value("avg", 0.0);
    rtt_family_.Add({{"sink", sink_}, {"broker", name}}).Set(average_us / 1e6);
  }
  // librdkafka re-sends a message after a retriable produce error without counting it anywhere
  // but in txmsgs (messages transmitted, retransmissions included). What was transmitted beyond
  // what has been reported on or is awaiting an answer was sent more than once.
  std::int64_t retries = stats.value("txmsgs", std::int64_t{0}) - reported - in_transit;
  if (retries > retries_seen_) {
    retries_->Increment(static_cast<double>(retries - retries_seen_));
    retries_seen_ = retries;
  }
  return any_up;
}

}  // namespace cdcd::kafka
