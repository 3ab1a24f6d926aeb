#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <spdlog/logger.h>

#include "daemon/core/change.h"
#include "daemon/core/result.h"
#include "daemon/plugin/checkpoint_store.h"
#include "daemon/plugin/sink.h"
#include "daemon/plugin/source.h"

// In-memory stand-ins for the plugin interfaces, scriptable and observable, for pipeline tests.
namespace cdcd::test {

// A logger that discards everything (the pipeline logs on every error path).
std::shared_ptr<spdlog::logger> null_logger();

// A change of transaction `lsn` with an offset derived from (lsn, seq), so that offsets grow with
// the log position like a real source's.
Change make_change(std::uint64_t lsn, std::uint32_t seq = 0, std::string entity = "public.orders",
                   Operation op = Operation::kInsert, std::int64_t timestamp_us = 0);
TransactionEnd make_end(std::uint64_t lsn, std::int64_t timestamp_us = 0);
// Offset just after transaction `lsn` (what make_end uses).
std::uint64_t end_offset(std::uint64_t lsn);
// `changes` changes of one transaction followed by its end.
std::vector<SourceEvent> transaction(std::uint64_t lsn, std::uint32_t changes = 1,
                                     const std::string& entity = "public.orders",
                                     Operation op = Operation::kInsert,
                                     std::int64_t timestamp_us = 0);
// Transactions first..last (inclusive), `changes` changes each, in order.
std::vector<SourceEvent> transactions(std::uint64_t first, std::uint64_t last,
                                      std::uint32_t changes = 1,
                                      const std::string& entity = "public.orders");
BadRecord make_bad_record(std::uint64_t last_lsn, std::string raw, std::string reason,
                          std::string location);

// A source that emits a script of events, with scripted errors and end of log in between.
// Like a real source it starts at the requested lsn (skipping events below it), checks
// wants_more() before every event, and records what the runtime asked of it.
class FakeSource : public Source {
 public:
  struct EndOfLog {};
  using Step = std::variant<SourceEvent, Error, EndOfLog>;

  // Appends to the script; thread-safe, wakes a waiting poll().
  void add(std::vector<SourceEvent> events);
  void add_error(Error error);
  void add_end_of_log();
  // Errors start() returns, one per call, before it succeeds.
  void add_start_error(Error error);
  // Value returned by bytes_behind(): the offset at the end of the log minus `offset`.
  void set_head_offset(std::uint64_t offset);

  Status start(const StartPosition& from) override;
  Result<PollOutcome> poll(Emitter& out, Deadline deadline) override;
  void commit(std::uint64_t lsn) override;
  void stop() override;
  std::uint64_t bytes_behind(std::uint64_t lsn, std::uint64_t offset) const override;
  bool connected() const override;

  std::vector<StartPosition> starts() const;
  std::vector<std::uint64_t> commits() const;
  std::size_t emitted() const;
  std::size_t polls() const;
  // Polls that found wants_more() false with events still to emit.
  std::size_t backpressured_polls() const;
  std::size_t start_attempts() const;
  bool stopped() const;

 private:
  mutable std::mutex mutex_;
  std::condition_variable added_;
  std::deque<Step> script_;
  std::deque<Error> start_errors_;
  std::vector<StartPosition> starts_;
  std::vector<std::uint64_t> commits_;
  std::uint64_t first_lsn_ = 0;
  std::uint64_t head_offset_ = 0;
  std::size_t emitted_ = 0;
  std::size_t polls_ = 0;
  std::size_t backpressured_polls_ = 0;
  std::size_t start_attempts_ = 0;
  bool started_ = false;
  bool stopped_ = false;
};

// How a FakeSink acknowledges its writes.
enum class AckMode {
  kSync,   // inside write()
  kAsync,  // from the sink's own thread, in write order
  kHold,   // only when the test releases them (in any order)
  // Holds the first write until the test releases it, acknowledges every later one inside write():
  // one delivery stuck while the rest flows, as behind a partition that lost its leader.
  kHoldFirst,
};

// A sink recording every batch it gets. Scripted outcomes: a failure for the batch holding a given
// lsn, or a rejection of given changes.
class FakeSink : public Sink {
 public:
  explicit FakeSink(AckMode mode = AckMode::kSync);
  ~FakeSink() override;

  // The batch containing a change with this lsn is reported failed.
  void fail_at(std::uint64_t lsn, std::string message);
  // The change (lsn, seq) is reported rejected.
  void reject(std::uint64_t lsn, std::uint32_t seq, std::string reason);

  // While set, write() blocks, as a sink applying backpressure does, until cleared or stop().
  void set_write_blocked(bool blocked);
  std::size_t writes_blocked() const;

  Status start() override { return ok(); }
  void write(BatchPtr batch, AckFn ack) override;
  Status flush(Deadline deadline) override;
  void stop() override;

  // Written batches, in write order.
  std::vector<BatchPtr> batches() const;
  std::size_t batch_count() const;
  // Changes of every written batch, in write order.
  std::vector<Change> changes() const;
  // Writes not yet acknowledged, and the most there ever were at once.
  std::size_t unacknowledged() const;
  std::size_t max_unacknowledged() const;

  // kHold: acknowledges held writes. Each returns the number released.
  std::size_t held() const;
  bool release_batch(std::uint64_t batch_id);
  std::size_t release_oldest(std::size_t count = 1);
  std::size_t release_newest_first();

 private:
  struct Pending {
    BatchPtr batch;
    AckFn ack;
  };

  DeliveryReport report_for(const Batch& batch) const;  // with mutex_ held
  void acknowledge(Pending pending);
  void async_loop();

  const AckMode mode_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<BatchPtr> batches_;
  std::deque<Pending> pending_;
  std::map<std::uint64_t, std::string> failures_;
  std::map<std::pair<std::uint64_t, std::uint32_t>, std::string> rejections_;
  std::size_t unacknowledged_ = 0;
  std::size_t max_unacknowledged_ = 0;
  bool write_blocked_ = false;
  std::size_t writes_blocked_ = 0;
  bool stopping_ = false;
  std::thread worker_;
};

// A checkpoint store in memory that records every save.
class MemoryCheckpointStore : public CheckpointStore {
 public:
  // Presets a checkpoint, as a previous run would have left it.
  void put(const std::string& consumer, const Checkpoint& checkpoint);
  // While failing, load() and save() return a retryable error.
  void set_failing(bool failing);

  Status start() override { return ok(); }
  Result<std::optional<Checkpoint>> load(const std::string& consumer) override;
  Status save(const std::string& consumer, const Checkpoint& checkpoint) override;
  Status remove(const std::string& consumer) override;

  std::vector<Checkpoint> saves(const std::string& consumer) const;
  std::optional<Checkpoint> latest(const std::string& consumer) const;
  // lsn of the latest checkpoint, 0 when none.
  std::uint64_t latest_lsn(const std::string& consumer) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Checkpoint> current_;
  std::map<std::string, std::vector<Checkpoint>> saves_;
  bool failing_ = false;
};

}  // namespace cdcd::test
