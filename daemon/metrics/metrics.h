#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "daemon/core/change.h"
#include "daemon/plugin/sink.h"
#include "daemon/plugin/source.h"

namespace cdcd {

struct ConsumerMetrics {
  prometheus::Gauge* checkpoint_lsn = nullptr;
  prometheus::Gauge* lag_bytes = nullptr;
  prometheus::Gauge* lag_seconds = nullptr;
  prometheus::Gauge* queue_bytes = nullptr;
  prometheus::Counter* dead_letters = nullptr;
  prometheus::Gauge* seconds_since_delivery = nullptr;
  // cdcd_consumer_state{state=...}: 1 for the current state, 0 for the others.
  prometheus::Gauge* running = nullptr;
  prometheus::Gauge* failed = nullptr;
  prometheus::Gauge* stopped = nullptr;
};

struct CheckpointMetrics {
  prometheus::Counter* save_errors = nullptr;
  prometheus::Gauge* last_save_time = nullptr;  // Unix time in seconds; 0 until the first save
};

struct ReloadMetrics {
  prometheus::Counter* failures = nullptr;
  prometheus::Gauge* last_successful = nullptr;    // 1 or 0
  prometheus::Gauge* last_success_time = nullptr;  // Unix time in seconds
};

// The daemon's metric families (see the metrics reference in docs/metrics.md). Thread-safe; the
// metric objects it hands out live as long as it does.
class Metrics {
 public:
  Metrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  SourceMetrics source(const std::string& source);
  SinkMetrics sink(const std::string& sink);
  ConsumerMetrics consumer(const std::string& consumer);
  CheckpointMetrics checkpoint(const std::string& consumer);
  ReloadMetrics reload() const { return reload_; }
  prometheus::Histogram& sink_batch_duration(const std::string& sink);
  prometheus::Histogram& commit_to_ack(const std::string& consumer, const std::string& sink);
  prometheus::Counter& events(const std::string& consumer, const std::string& sink, Operation op);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::mutex mutex_;
  prometheus::Family<prometheus::Gauge>& source_read_lsn_;
  prometheus::Family<prometheus::Gauge>& source_head_lsn_;
  prometheus::Family<prometheus::Counter>& lsn_gaps_;
  prometheus::Family<prometheus::Counter>& source_reconnects_;
  prometheus::Family<prometheus::Gauge>& checkpoint_lsn_;
  prometheus::Family<prometheus::Gauge>& lag_bytes_;
  prometheus::Family<prometheus::Gauge>& lag_seconds_;
  prometheus::Family<prometheus::Gauge>& queue_bytes_;
  prometheus::Family<prometheus::Counter>& dead_letters_;
  prometheus::Family<prometheus::Gauge>& seconds_since_delivery_;
  prometheus::Family<prometheus::Gauge>& consumer_state_;
  prometheus::Family<prometheus::Counter>& events_;
  prometheus::Family<prometheus::Histogram>& batch_duration_;
  prometheus::Family<prometheus::Histogram>& commit_to_ack_;
  prometheus::Family<prometheus::Counter>& sink_errors_;
  prometheus::Family<prometheus::Counter>& sink_retries_;
  prometheus::Family<prometheus::Counter>& checkpoint_save_errors_;
  prometheus::Family<prometheus::Gauge>& checkpoint_last_save_time_;
  ReloadMetrics reload_;
};

}  // namespace cdcd
