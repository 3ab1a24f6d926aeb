#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/metrics/metrics.h"
#include "daemon/plugin/checkpoint_store.h"

namespace cdcd {

// The checkpoint store as the consumers see it: the configured store, with every save counted.
// A consumer retries a failed save at its next interval and nothing is lost meanwhile, but the
// checkpoint stops advancing (a restart would re-deliver more and more), so failures must be
// visible: cdcd_checkpoint_save_errors_total, the time of the last good save, and /readyz.
class InstrumentedCheckpointStore : public CheckpointStore {
 public:
  // `consumers`' metrics exist from the start (a last save time of 0: none yet).
  InstrumentedCheckpointStore(CheckpointStore& store, Metrics& metrics,
                              const std::vector<std::string>& consumers);

  Status start() override { return store_.start(); }
  Result<std::optional<Checkpoint>> load(const std::string& consumer) override {
    return store_.load(consumer);
  }
  Status save(const std::string& consumer, const Checkpoint& checkpoint) override;
  Status remove(const std::string& consumer) override { return store_.remove(consumer); }

  // "consumer NAME cannot save its checkpoint: ERROR" for the first consumer whose last save
  // failed, or nullopt when every last save succeeded. Thread-safe.
  std::optional<std::string> save_failure() const;

 private:
  CheckpointStore& store_;
  Metrics& metrics_;
  CheckpointMetrics& metrics_of(const std::string& consumer);

  mutable std::mutex mutex_;
  std::map<std::string, CheckpointMetrics> consumer_metrics_;
  std::map<std::string, std::string> failing_;  // consumer -> error of its last save
};

}  // namespace cdcd
