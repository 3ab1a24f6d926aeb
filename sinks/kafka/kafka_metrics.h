#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "daemon/plugin/sink.h"

namespace cdcd::kafka {

// The Kafka sink's own metrics (labelled with the sink's name), plus the runtime's error and
// retry counters of the sink, which librdkafka's statistics feed.
class KafkaMetrics {
 public:
  struct TopicCounters {
    prometheus::Counter* messages = nullptr;
    prometheus::Counter* bytes = nullptr;
  };

  // `registry` may be null (a private one is used); so may the counters of `sink_metrics`.
  KafkaMetrics(std::shared_ptr<prometheus::Registry> registry, const std::string& sink,
               SinkMetrics sink_metrics);

  // Thread-safe; the counters live as long as this object.
  TopicCounters topic(const std::string& topic);

  // Delivery latencies gathered on one thread and published in one step: Histogram::Observe takes
  // a lock per call, too much to pay once per message.
  class LatencyTally {
   public:
    explicit LatencyTally(KafkaMetrics& metrics);
    void add(double seconds);
    void publish();

   private:
    prometheus::Histogram& histogram_;
    const prometheus::Histogram::BucketBoundaries& bounds_;
    std::vector<double> counts_;  // per bucket, +Inf last; not cumulative
    double sum_ = 0;
    bool empty_ = true;
  };

  void set_in_flight(std::int64_t messages) { in_flight_->Set(static_cast<double>(messages)); }
  void count_error() { errors_->Increment(); }

  // Reads librdkafka's statistics JSON: queue depth, per-broker round-trip time, and retried
  // messages (added to the sink's retry counter). `reported` is the number of delivery reports
  // received so far. Returns whether some broker is connected.
  bool on_statistics(std::string_view json, std::int64_t reported);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::string sink_;
  prometheus::Family<prometheus::Counter>& messages_family_;
  prometheus::Family<prometheus::Counter>& bytes_family_;
  prometheus::Family<prometheus::Gauge>& rtt_family_;
  const prometheus::Histogram::BucketBoundaries latency_bounds_;
  prometheus::Histogram* latency_;
  prometheus::Gauge* in_flight_;
  prometheus::Gauge* queue_messages_;
  prometheus::Counter* errors_;
  prometheus::Counter* retries_;
  std::int64_t retries_seen_ = 0;  // the retry estimate already added to retries_
};

}  // namespace cdcd::kafka
