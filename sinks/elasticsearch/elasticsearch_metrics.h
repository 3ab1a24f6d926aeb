#pragma once

#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "daemon/plugin/sink.h"
#include "sinks/elasticsearch/bulk_response.h"

namespace cdcd::elasticsearch {

// The sink's own metrics, labelled with its name (docs/sinks/elasticsearch.md, "Metrics"), and the
// runtime's error and retry counters of the sink. Thread-safe.
class ElasticsearchMetrics {
 public:
  // `registry` may be null (a private one is used); so may the counters of `sink_metrics`.
  ElasticsearchMetrics(std::shared_ptr<prometheus::Registry> registry, const std::string& sink,
                       SinkMetrics sink_metrics);

  void observe_request(double seconds, std::size_t body_bytes, std::size_t wire_bytes);
  void count(Outcome outcome, double items = 1);
  void count_superseded_in_batch(double items) { superseded_->Increment(items); }
  void count_retried(double items) { retried_->Increment(items); }
  void in_flight(double delta) { in_flight_->Increment(delta); }
  void count_error() { errors_->Increment(); }
  void count_retry() { retries_->Increment(); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Histogram* duration_;
  prometheus::Counter* created_;
  prometheus::Counter* updated_;
  prometheus::Counter* deleted_;
  prometheus::Counter* superseded_;
  prometheus::Counter* retried_;
  prometheus::Counter* rejected_;
  prometheus::Counter* body_bytes_;
  prometheus::Counter* wire_bytes_;
  prometheus::Gauge* in_flight_;
  prometheus::Counter* errors_;
  prometheus::Counter* retries_;
};

}  // namespace cdcd::elasticsearch
