#include "daemon/metrics/metrics.h"

namespace cdcd {

namespace {

prometheus::Family<prometheus::Gauge>& gauge_family(prometheus::Registry& registry,
                                                    const std::string& name,
                                                    const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry);
}

prometheus::Family<prometheus::Counter>& counter_family(prometheus::Registry& registry,
                                                        const std::string& name,
                                                        const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
}

// 0.5 ms doubling up to about 33 s: a file sink's fsync and a remote bulk request both land in the
// middle, and a stuck broker still shows up below +Inf.
prometheus::Histogram::BucketBoundaries batch_duration_buckets() {
  prometheus::Histogram::BucketBoundaries buckets;
  for (double bound = 0.0005; bound < 40.0; bound *= 2) buckets.push_back(bound);
  return buckets;
}

}  // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      source_read_lsn_(gauge_family(*registry_, "cdcd_source_read_lsn",
                                    "Lsn of the last change read from the source.")),
      source_head_lsn_(gauge_family(*registry_, "cdcd_source_head_lsn",
                                    "Lsn at the end of the source's log, as last observed.")),
      lsn_gaps_(counter_family(*registry_, "cdcd_lsn_gaps_total",
                               "Times the source's lsn jumped by more than one between "
                               "consecutive transactions (sources with dense lsns only).")),
      source_reconnects_(counter_family(*registry_, "cdcd_source_reconnects_total",
                                        "Times the source re-established its connection to the "
                                        "database after losing it.")),
      checkpoint_lsn_(gauge_family(*registry_, "cdcd_consumer_checkpoint_lsn",
                                   "Lsn of the consumer's last durably saved checkpoint.")),
      lag_bytes_(gauge_family(*registry_, "cdcd_consumer_lag_bytes",
                              "Bytes of the source's log past the position every sink of the "
                              "consumer has acknowledged.")),
      lag_seconds_(gauge_family(*registry_, "cdcd_consumer_lag_seconds",
                                "Now minus the commit time of the oldest change not yet "
                                "acknowledged by every sink of the consumer; 0 when caught up.")),
      queue_bytes_(gauge_family(*registry_, "cdcd_queue_bytes",
                                "Bytes of changes queued between the source and the consumer.")),
      dead_letters_(counter_family(*registry_, "cdcd_dead_letters_total",
                                   "Records the consumer sent to its dead-letter sink.")),
      seconds_since_delivery_(gauge_family(
          *registry_, "cdcd_consumer_seconds_since_last_delivery",
          "Seconds since a sink of the consumer last acknowledged a change (or since the "
          "consumer started, before its first).")),
      consumer_state_(gauge_family(*registry_, "cdcd_consumer_state",
                                   "1 for the consumer's current state (running; failed: stopped "
                                   "by an error; stopped: finished or shut down), 0 for the "
                                   "others.")),
      events_(counter_family(*registry_, "cdcd_events_total",
                             "Changes a sink acknowledged as delivered (rejected ones excluded).")),
      batch_duration_(prometheus::BuildHistogram()
                          .Name("cdcd_sink_batch_duration_seconds")
                          .Help("Time from handing a batch to the sink to its acknowledgement.")
                          .Register(*registry_)),
      commit_to_ack_(prometheus::BuildHistogram()
                         .Name("cdcd_sink_commit_to_ack_seconds")
                         .Help("Time from a change's commit in the source to the sink's "
                               "acknowledgement of it (changes without a commit time excluded).")
                         .Register(*registry_)),
      sink_errors_(counter_family(*registry_, "cdcd_sink_errors_total",
                                  "Failed write attempts of the sink, retried or not.")),
      sink_retries_(counter_family(*registry_, "cdcd_sink_retries_total",
                                   "Write attempts the sink repeated after a retryable error.")),
      checkpoint_save_errors_(counter_family(
          *registry_, "cdcd_checkpoint_save_errors_total",
          "Checkpoint saves of the consumer that the checkpoint store refused or failed.")),
      checkpoint_last_save_time_(
          gauge_family(*registry_, "cdcd_checkpoint_last_save_timestamp_seconds",
                       "Unix time of the consumer's last successful checkpoint save; 0 before "
                       "the first one.")) {
  gauge_family(*registry_, "cdcd_build_info", "Build information; the value is always 1.")
      .Add({{"version", CDCD_VERSION}})
      .Set(1);
  reload_.failures = &counter_family(*registry_, "cdcd_config_reload_failures_total",
                                     "Reloads (SIGHUP) refused because the config was invalid.")
                          .Add({});
  reload_.last_successful =
      &gauge_family(*registry_, "cdcd_config_last_reload_successful",
                    "1 when the last reload succeeded (or none happened yet), 0 when it was "
                    "refused and the previous config still runs.")
           .Add({});
  reload_.last_successful->Set(1);
  reload_.last_success_time =
      &gauge_family(*registry_, "cdcd_config_last_reload_success_timestamp_seconds",
                    "Unix time the running config was loaded.")
           .Add({});
  reload_.last_success_time->SetToCurrentTime();
}

SourceMetrics Metrics::source(const std::string& source) {
  std::lock_guard lock(mutex_);
  const prometheus::Labels labels{{"source", source}};
  return SourceMetrics{&source_read_lsn_.Add(labels), &source_head_lsn_.Add(labels),
                       &lsn_gaps_.Add(labels), &source_reconnects_.Add(labels)};
}

SinkMetrics Metrics::sink(const std::string& sink) {
  std::lock_guard lock(mutex_);
  const prometheus::Labels labels{{"sink", sink}};
  return SinkMetrics{&sink_errors_.Add(labels), &sink_retries_.Add(labels)};
}

ConsumerMetrics Metrics::consumer(const std::string& consumer) {
  std::lock_guard lock(mutex_);
  const prometheus::Labels labels{{"consumer", consumer}};
  auto state = [&](const char* name) {
    return &consumer_state_.Add({{"consumer", consumer}, {"state", name}});
  };
  return ConsumerMetrics{&checkpoint_lsn_.Add(labels),
                         &lag_bytes_.Add(labels),
                         &lag_seconds_.Add(labels),
                         &queue_bytes_.Add(labels),
                         &dead_letters_.Add(labels),
                         &seconds_since_delivery_.Add(labels),
                         state("running"),
                         state("failed"),
                         state("stopped")};
}

CheckpointMetrics Metrics::checkpoint(const std::string& consumer) {
  std::lock_guard lock(mutex_);
  const prometheus::Labels labels{{"consumer", consumer}};
  return CheckpointMetrics{&checkpoint_save_errors_.Add(labels),
                           &checkpoint_last_save_time_.Add(labels)};
}

prometheus::Histogram& Metrics::sink_batch_duration(const std::string& sink) {
  std::lock_guard lock(mutex_);
  return batch_duration_.Add({{"sink", sink}}, batch_duration_buckets());
}

prometheus::Histogram& Metrics::commit_to_ack(const std::string& consumer,
                                              const std::string& sink) {
  // Fine around the tens of milliseconds a streaming pipeline should hold, coarse beyond.
  static const prometheus::Histogram::BucketBoundaries kBuckets{
      0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
      0.1,   0.25,   0.5,   1,      2.5,  5,     10,   30,   60,   300};
  std::lock_guard lock(mutex_);
  return commit_to_ack_.Add({{"consumer", consumer}, {"sink", sink}}, kBuckets);
}

prometheus::Counter& Metrics::events(const std::string& consumer, const std::string& sink,
                                     Operation op) {
  std::lock_guard lock(mutex_);
  return events_.Add(
      {{"consumer", consumer}, {"sink", sink}, {"operation", std::string(to_string(op))}});
}

}  // namespace cdcd
