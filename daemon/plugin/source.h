#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <spdlog/logger.h>

#include "daemon/core/change.h"
#include "daemon/core/result.h"
#include "daemon/plugin/checkpoint.h"

namespace cdcd {

using Deadline = std::chrono::steady_clock::time_point;

// Where a source delivers what it reads. Owned by the runtime; used on the source thread only.
class Emitter {
 public:
  virtual ~Emitter() = default;
  // Never blocks. Events must come in log order: a transaction's changes, then its TransactionEnd.
  virtual void emit(SourceEvent&& event) = 0;
  // False once the consumers' queues are full or the daemon is stopping: poll() should return soon
  // (after at most the event it is working on) and leave the rest of the log unread for now.
  virtual bool wants_more() const = 0;
};

// Metrics every source reports; the runtime creates them with the source's label.
struct SourceMetrics {
  prometheus::Gauge* read_lsn = nullptr;
  prometheus::Gauge* head_lsn = nullptr;
  prometheus::Counter* lsn_gaps = nullptr;
  prometheus::Counter* reconnects = nullptr;  // connections re-established after a loss
};

struct SourceContext {
  std::string name;
  std::shared_ptr<spdlog::logger> log;
  std::shared_ptr<prometheus::Registry> registry;  // for plugin-specific metrics
  SourceMetrics metrics;
};

enum class PollOutcome { kMore, kEnd };

// A change log being tailed. Created on the main thread by its factory from the validated config
// (no I/O there); everything else happens on the source's own thread, except the `const` methods,
// which are thread-safe and called from the metrics and status threads.
class Source {
 public:
  virtual ~Source() = default;

  // Opens the log and positions it at `from`. A permanent error (misconfiguration) stops the
  // daemon; a retryable one is retried with backoff.
  virtual Status start(const StartPosition& from) = 0;

  // Reads and emits while out.wants_more() and before `deadline`, then returns. Called in a loop
  // even when the pipeline is backpressured, so that the source can answer keepalives. kEnd: the
  // log is finished (a replay of a file without follow). A retryable error means "disconnected":
  // the runtime backs off and polls again, and the source reconnects where it left off.
  virtual Result<PollOutcome> poll(Emitter& out, Deadline deadline) = 0;

  // Every consumer of this source has durably checkpointed transaction `lsn`: the source may
  // release what precedes it (PostgreSQL: confirm the slot's flush position).
  virtual void commit(std::uint64_t lsn) { (void)lsn; }

  // Releases connections and files. Called on the source thread, once, after the last poll().
  virtual void stop() {}

  // Called from another thread when the daemon stops: a start() or poll() blocked on the log
  // (e.g. a statement waiting on a database server) returns soon with an error. Afterwards only
  // stop() is called. Default: nothing, for sources whose calls never block for long.
  virtual void interrupt() {}

  // False when the source cannot deliver again what precedes its consumers' positions (a
  // PostgreSQL slot keeps only what follows its confirmed position): `cdcd checkpoint` then
  // refuses to rewind a consumer, and `reset` of one consumer alone. Thread-safe, no I/O.
  virtual bool can_rewind() const { return true; }

  // How far the log extends past the position (lsn, offset), in bytes. Thread-safe.
  virtual std::uint64_t bytes_behind(std::uint64_t lsn, std::uint64_t offset) const = 0;

  // True while the source is connected to its log (readiness). Thread-safe.
  virtual bool connected() const = 0;
  // True when the source emits `read` changes (rows of an initial snapshot), so that the config
  // check can warn about a consumer that filters them out.
  virtual bool emits_reads() const { return false; }
};

}  // namespace cdcd
