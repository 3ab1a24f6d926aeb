#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <spdlog/logger.h>

#include "daemon/core/change.h"
#include "daemon/core/result.h"
#include "daemon/plugin/source.h"

namespace cdcd {

// A change of a batch that the sink permanently refused (too large, rejected by the server).
struct RejectedChange {
  std::size_t index = 0;  // position in Batch::changes
  std::string reason;
};

// The outcome of one write(). `failure` set: the sink is broken and nothing of the batch may be
// taken as delivered; the consumer stops. Otherwise every change not listed in `rejected` was
// delivered; rejected ones go to the consumer's on_error policy (stop or dead-letter).
struct DeliveryReport {
  std::optional<Error> failure;
  std::vector<RejectedChange> rejected;
};

// Called exactly once per write(), from any thread (possibly before write() returns). Must not
// block.
using AckFn = std::function<void(DeliveryReport)>;

struct SinkMetrics {
  prometheus::Counter* errors = nullptr;   // failed attempts (retried or not)
  prometheus::Counter* retries = nullptr;  // attempts repeated after a retryable error
};

struct SinkContext {
  std::string name;
  std::shared_ptr<spdlog::logger> log;
  std::shared_ptr<prometheus::Registry> registry;  // for plugin-specific metrics
  SinkMetrics metrics;
};

// A destination of changes. One instance per configured sink, shared by every consumer that names
// it: write() is called from several consumer threads and must be thread-safe.
class Sink {
 public:
  virtual ~Sink() = default;

  // Connects and checks what can be checked (credentials, topic existence). A permanent error
  // stops the daemon before any change flows.
  virtual Status start() = 0;

  // Delivers a batch, in order after every batch this consumer wrote before. Retryable errors are
  // retried inside the sink with backoff (counting metrics.retries) while the batch stays
  // unacknowledged; the sink never drops a change. May block to apply backpressure; must return
  // once `stop()` was called.
  virtual void write(BatchPtr batch, AckFn ack) = 0;

  // Waits until every write so far has been acknowledged, or the deadline passes.
  virtual Status flush(Deadline deadline) = 0;

  // Aborts blocking waits and releases resources; acks still pending fire with a failure.
  virtual void stop() = 0;

  // False while the sink is in a failed state (readiness). Thread-safe.
  virtual bool healthy() const { return true; }
};

}  // namespace cdcd
