#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/logger.h>

#include "daemon/pipeline/consumer.h"
#include "daemon/plugin/checkpoint_store.h"
#include "daemon/plugin/source.h"

namespace cdcd {

// Drives one source on its own thread: starts it at the lowest position its consumers need, polls
// it, fans each event out to the consumers that want it, stops reading while any of their queues
// is full, and tells the source what every consumer has durably checkpointed.
class SourceRunner {
 public:
  // Changes to `store_entities` (the checkpoint store's own table, when the source captures it) are
  // never delivered, nor the end of a transaction that held nothing else: a checkpoint save must
  // not be a change that causes another save.
  SourceRunner(std::string name, Source* source, std::vector<Consumer*> consumers,
               std::shared_ptr<spdlog::logger> log, std::vector<StoreEntity> store_entities = {});
  ~SourceRunner();
  SourceRunner(const SourceRunner&) = delete;
  SourceRunner& operator=(const SourceRunner&) = delete;

  void start();
  // Stops reading; the consumers get end-of-stream and drain what was read. Waits for them to
  // finish (until `deadline`) to commit their final checkpoints to the source, then stops it.
  void request_stop(std::chrono::steady_clock::time_point deadline);
  void join();

  const std::string& name() const { return name_; }
  bool ended() const { return ended_.load(); }
  // When the source thread last went round its loop (polls return by a deadline, waits are
  // sliced): a thread stuck inside the source stops turning. For the service watchdog.
  std::chrono::steady_clock::time_point last_turn() const;

 private:
  class FanOut;

  void run();
  bool start_source();
  void commit_checkpoints();
  void finish_open_transaction(FanOut& fan_out);
  std::chrono::steady_clock::time_point drain_deadline() const;
  void finish();
  void wait_interruptibly(std::chrono::milliseconds duration);
  void note_turn();

  std::string name_;
  Source* source_;
  std::vector<Consumer*> consumers_;
  std::shared_ptr<spdlog::logger> log_;
  std::vector<StoreEntity> store_entities_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> ended_{false};
  std::atomic<std::chrono::steady_clock::rep> last_turn_{
      std::chrono::steady_clock::now().time_since_epoch().count()};
  std::atomic<std::int64_t> drain_deadline_ns_{0};
  std::uint64_t committed_lsn_ = 0;
};

}  // namespace cdcd
