#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/logger.h>

#include "daemon/config/daemon_config.h"
#include "daemon/metrics/metrics.h"
#include "daemon/pipeline/ack_ledger.h"
#include "daemon/pipeline/event_queue.h"
#include "daemon/pipeline/filter.h"
#include "daemon/plugin/checkpoint_store.h"
#include "daemon/plugin/sink.h"
#include "daemon/plugin/source.h"

namespace cdcd {

struct NamedSink {
  std::string name;
  Sink* sink = nullptr;
};

struct ConsumerSetup {
  ConsumerConfig config;
  std::string source_type;
  Source* source = nullptr;  // for lag in bytes (its thread-safe methods only)
  std::vector<NamedSink> sinks;
  std::optional<NamedSink> dead_letter;
  CheckpointStore* store = nullptr;
  std::chrono::milliseconds checkpoint_interval{1000};
  // Deliveries the ack ledger holds before the consumer stops taking events (see AckLedger).
  std::size_t ledger_capacity = AckLedger::kDefaultCapacity;
  Metrics* metrics = nullptr;
  std::shared_ptr<spdlog::logger> log;
  // Called on the consumer's thread once it has stopped (finished or failed), so that whoever
  // waits for consumers need not poll.
  std::function<void()> on_stopped;
};

enum class ConsumerState { kRunning, kFinished, kFailed };

// A snapshot of a consumer for /status and `cdcd status`.
struct ConsumerStatus {
  std::string name;
  std::string source;
  ConsumerState state = ConsumerState::kRunning;
  std::string error;
  std::optional<Checkpoint> checkpoint;  // last saved
  std::uint64_t lag_bytes = 0;
  double lag_seconds = 0;
  std::size_t queue_bytes = 0;
};

// One consumer's worker: takes the events its source thread queued, batches the wanted changes,
// writes each batch to every sink, tracks acknowledgements in order and saves the checkpoint
// frontier every interval. Runs on its own thread; the public methods are thread-safe.
class Consumer {
 public:
  explicit Consumer(ConsumerSetup setup);
  ~Consumer();
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  const std::string& name() const { return setup_.config.name; }

  // Reads the stored checkpoint and decides where this consumer starts. Before start().
  Status load_checkpoint();
  StartPosition start_position() const;

  // Called on the source thread: does this consumer want the event (filters, already-delivered
  // positions)? Events it does not want are never queued.
  bool wants(const SourceEvent& event) const;
  EventQueue& queue() { return queue_; }
  // False once the consumer stopped taking events (finished or failed).
  bool accepting() const { return state_.load() == ConsumerState::kRunning; }

  void start();
  // Gives up waiting for acknowledgements (shutdown timeout): the thread saves what is acknowledged
  // and ends.
  void abort();
  // Stops taking events and fails with `reason` (e.g. its source failed permanently).
  void fail(const std::string& reason);
  void join();

  ConsumerState state() const { return state_.load(); }
  // Recomputes the lag and queue gauges from the consumer's last published progress. Thread-safe:
  // the daemon calls it periodically so that lag keeps growing while a sink blocks the consumer.
  void refresh_metrics();
  // The lsn of the last checkpoint saved (0 when none): what the source may release.
  std::uint64_t saved_lsn() const { return saved_lsn_.load(); }
  ConsumerStatus status() const;
  // When the consumer's thread last went round its loop (waiting for events or acknowledgements
  // counts): a thread stuck inside a sink's write() stops turning. For the service watchdog.
  std::chrono::steady_clock::time_point last_turn() const;

 private:
  struct Ack {
    AckLedger::EntryId entry = 0;
    std::size_t sink = 0;  // index in setup_.sinks; sinks.size() = the dead-letter sink
    BatchPtr batch;
    DeliveryReport report;
    std::chrono::steady_clock::time_point written_at;
  };

  void run();
  void handle(SourceEvent&& event);
  void add_change(Change&& change);
  // Opens the batch that changes go into (waiting for room first); false once stopping.
  bool open_new_batch(std::int64_t timestamp_us);
  // Tells sinks that track transactions that one has ended (Sink::tracks_transactions).
  void note_transaction_end(const TransactionEnd& end);
  void flush_batch();
  // `why` names what is dead-lettered and why, for the log.
  void write_dead_letter(Change&& letter, AckLedger::EntryId entry, const std::string& why);
  void dead_letter_bad_record(const BadRecord& record);
  AckFn make_ack(AckLedger::EntryId entry, std::size_t sink, BatchPtr batch);
  void process_acks();
  void process_ack(Ack& ack);
  // Waits until a new delivery fits the in-flight window and the ledger's bound.
  void wait_for_delivery_room();
  // Hands the bytes of the events handled so far back to the queue's bound.
  void release_handled_bytes();
  void wait_for_all_acks();
  // Processes acknowledgements (and checkpoints on time) while `condition` holds.
  void wait_for_acks_while(const std::function<bool()>& condition);
  void save_checkpoint();
  void note_turn();
  void update_metrics();
  void set_failed(const std::string& reason);
  bool open_batch_waited_enough(std::chrono::steady_clock::time_point now) const;
  bool caught_up_with_open_batch(std::chrono::steady_clock::time_point now) const;
  std::size_t batches_in_flight() const;

  ConsumerSetup setup_;
  ChangeFilter filter_;
  EventQueue queue_;
  std::thread thread_;

  // Start position.
  std::uint64_t first_lsn_ = 0;
  std::int64_t first_timestamp_us_ = 0;
  std::optional<Checkpoint> loaded_;

  // Consumer-thread state.
  EventBacklog pending_;
  std::size_t handled_bytes_ = 0;  // of events taken from queue_, handled, not yet released
  AckLedger ledger_;
  std::shared_ptr<Batch> open_batch_;
  AckLedger::EntryId open_entry_ = 0;
  std::chrono::steady_clock::time_point open_since_;
  std::uint64_t next_batch_id_ = 1;
  // Some sink tracks transactions (Sink::tracks_transactions).
  bool tracks_transactions_ = false;
  // The transaction whose last written change went out without its end being known yet.
  std::optional<std::uint64_t> unended_lsn_;
  std::optional<Checkpoint> last_saved_;
  std::chrono::steady_clock::time_point next_checkpoint_;
  std::vector<std::vector<prometheus::Counter*>> events_counters_;  // [sink][operation]
  std::vector<prometheus::Histogram*> batch_durations_;
  std::vector<prometheus::Histogram*> commit_to_ack_;  // per sink
  ConsumerMetrics metrics_;

  // Shared with acknowledgement callbacks (any thread).
  struct AckInbox {
    std::mutex mutex;
    std::condition_variable arrived;
    std::vector<Ack> acks;
    EventQueue* wake = nullptr;  // cleared when the consumer goes away before a late ack
  };
  std::shared_ptr<AckInbox> inbox_;

  std::atomic<ConsumerState> state_{ConsumerState::kRunning};
  std::atomic<bool> aborted_{false};
  // When a sink last acknowledged a change (the consumer's start before the first).
  std::atomic<std::chrono::steady_clock::rep> last_delivery_{
      std::chrono::steady_clock::now().time_since_epoch().count()};
  std::atomic<std::chrono::steady_clock::rep> last_turn_{
      std::chrono::steady_clock::now().time_since_epoch().count()};
  std::atomic<std::uint64_t> saved_lsn_{0};
  // Progress published by the consumer thread for refresh_metrics().
  std::atomic<std::int64_t> oldest_unacknowledged_us_{std::numeric_limits<std::int64_t>::min()};
  std::atomic<std::uint64_t> frontier_lsn_{0};
  std::atomic<std::uint64_t> frontier_offset_{0};
  mutable std::mutex status_mutex_;
  ConsumerStatus status_;
};

}  // namespace cdcd
