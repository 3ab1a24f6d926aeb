#include "daemon/runtime/instrumented_checkpoint_store.h"

#include <chrono>

namespace cdcd {

InstrumentedCheckpointStore::InstrumentedCheckpointStore(CheckpointStore& store, Metrics& metrics,
                                                         const std::vector<std::string>& consumers)
    : store_(store), metrics_(metrics) {
  for (const auto& consumer : consumers) metrics_of(consumer);
}

CheckpointMetrics& InstrumentedCheckpointStore::metrics_of(const std::string& consumer) {
  auto found = consumer_metrics_.find(consumer);
  if (found == consumer_metrics_.end()) {
    found = consumer_metrics_.emplace(consumer, metrics_.checkpoint(consumer)).first;
  }
  return found->second;
}

Status InstrumentedCheckpointStore::save(const std::string& consumer,
                                         const Checkpoint& checkpoint) {
  Status saved = store_.save(consumer, checkpoint);
  std::lock_guard lock(mutex_);
  CheckpointMetrics& metrics = metrics_of(consumer);
  if (saved) {
    failing_.erase(consumer);
    metrics.last_save_time->Set(
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  } else {
    failing_[consumer] = saved.error().message;
    metrics.save_errors->Increment();
  }
  return saved;
}

std::optional<std::string> InstrumentedCheckpointStore::save_failure() const {
  std::lock_guard lock(mutex_);
  if (failing_.empty()) return std::nullopt;
  const auto& [consumer, error] = *failing_.begin();
  return "consumer " + consumer + " cannot save its checkpoint: " + error;
}

}  // namespace cdcd
