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
// block. Every ack has fired by the time stop() returns, so none fires after the sink is destroyed.
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
//
// tests/support/sink_conformance.h checks this contract for every sink (docs/sinks/conformance.md).
class Sink {
 public:
  // Calls stop() (if it was not called) so that every ack has fired before the sink is gone.
  virtual ~Sink() = default;

  // Connects and checks what can be checked (credentials, topic existence). A permanent error
  // stops the daemon before any change flows.
  virtual Status start() = 0;

  // Delivers a batch, in order after every batch this consumer wrote before: the changes of one
  // writer reach each destination stream (file, topic partition, ...) in write order, and the acks
  // of one writer's batches fire in write order as long as they go to one stream (a sink writing
  // to several, like Kafka's partitions, may ack them in any order; the consumer accepts that).
  // Retryable errors are retried inside the sink with backoff (counting metrics.retries) while the
  // batch stays unacknowledged; the sink never drops a change. May block to apply backpressure
  // (full disk, full pipe, full producer queue), but returns promptly once stop() was called, its
  // ack fired with a failure. After stop(), write() acknowledges with a failure before it returns.
  // Changes the sink refuses for good (too large, invalid destination name) are listed in
  // DeliveryReport::rejected, never dropped; a failure means none of the batch counts as
  // delivered. The dead-letter sink of a consumer is an ordinary sink: its rejections stop the
  // consumer.
  virtual void write(BatchPtr batch, AckFn ack) = 0;

  // Waits until every write so far has been acknowledged, or the deadline passes: it returns by
  // the deadline (a write() blocked on a full disk or pipe does not hold it up), with an error
  // whenever a write is still unacknowledged then.
  virtual Status flush(Deadline deadline) = 0;

  // Aborts blocking waits and releases resources; writes in progress return, and acks still
  // pending fire with a failure, before stop() returns. May be called while other threads are in
  // write() (the daemon stops sinks before it joins the consumers), and more than once.
  virtual void stop() = 0;

  // False while the sink is in a failed state or retrying a failed write (readiness): after a
  // failure that does not heal (broken stdout, failed fsync, fatal producer error) it stays false.
  // A rejected change does not make a sink unhealthy. Thread-safe.
  virtual bool healthy() const { return true; }

  // True when the sink writes transaction boundaries (Debezium's transaction metadata): it must
  // learn that a transaction has ended without waiting for the next change. The consumer then sets
  // Batch::transaction_ended_lsn, and when a transaction ends after its last change went out in an
  // earlier batch it writes this sink a batch without changes that only says so (other sinks never
  // get one). Constant after construction.
  virtual bool tracks_transactions() const { return false; }
};

}  // namespace cdcd
