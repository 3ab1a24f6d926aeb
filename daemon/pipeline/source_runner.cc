#include "daemon/pipeline/source_runner.h"

#include <algorithm>
#include <limits>

#include "daemon/core/backoff.h"
#include "daemon/core/thread_name.h"

namespace cdcd {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPollSlice = std::chrono::milliseconds(100);
constexpr std::size_t kChunkEvents = 512;
// How long a stop inside a transaction may read on to the transaction's end.
constexpr auto kFinishTransactionLimit = std::chrono::seconds(2);

}  // namespace

// The Emitter handed to the source: buffers events per consumer and hands them over in chunks.
class SourceRunner::FanOut : public Emitter {
 public:
  FanOut(std::vector<Consumer*> consumers, const std::atomic<bool>& stop,
         std::vector<StoreEntity> store_entities)
      : consumers_(std::move(consumers)),
        stop_(stop),
        store_entities_(std::move(store_entities)),
        chunks_(consumers_.size()),
        chunk_bytes_(consumers_.size(), 0),
        wanted_(consumers_.size(), false) {
    for (auto& chunk : chunks_) chunk.reserve(kChunkEvents);
  }

  void emit(SourceEvent&& event) override {
    ++emitted_;
    if (std::holds_alternative<Change>(event)) transaction_open_ = true;
    if (std::holds_alternative<TransactionEnd>(event)) transaction_open_ = false;
    if (!store_entities_.empty() && is_store_write(event)) return;
    std::size_t bytes = byte_size(event);
    int last = -1;
    for (std::size_t i = 0; i < consumers_.size(); ++i) {
      wanted_[i] = consumers_[i]->accepting() && consumers_[i]->wants(event);
      if (wanted_[i]) last = static_cast<int>(i);
    }
    for (int i = 0; i <= last; ++i) {
      if (!wanted_[i]) continue;
      chunks_[i].push_back(i == last ? std::move(event) : SourceEvent(event));
      chunk_bytes_[i] += bytes;
      if (chunks_[i].size() >= kChunkEvents) hand_over(i);
    }
  }

  bool wants_more() const override {
    if (stop_ && !finishing_transaction_) return false;
    for (std::size_t i = 0; i < consumers_.size(); ++i) {
      if (consumers_[i]->accepting() && !consumers_[i]->queue().has_room()) return false;
    }
    return true;
  }

  // Whether changes were emitted since the last transaction end.
  bool transaction_open() const { return transaction_open_; }
  std::size_t emitted() const { return emitted_; }
  // While set, a stop does not end wants_more(): the open transaction is read to its end.
  void finish_transaction(bool finishing) { finishing_transaction_ = finishing; }

  void hand_over_all() {
    for (std::size_t i = 0; i < consumers_.size(); ++i) hand_over(i);
  }

  void end_stream() {
    for (std::size_t i = 0; i < consumers_.size(); ++i) {
      consumers_[i]->queue().push(std::move(chunks_[i]), chunk_bytes_[i], true);
      chunk_bytes_[i] = 0;
    }
  }

  // Waits a little for the fullest queue to drain.
  void wait_for_room(Clock::time_point deadline) {
    for (Consumer* consumer : consumers_) {
      if (consumer->accepting() && !consumer->queue().has_room()) {
        consumer->queue().wait_for_room(deadline);
        return;
      }
    }
  }

 private:
  // A change to the store's own entities, or the end of a transaction that held only such changes.
  bool is_store_write(const SourceEvent& event) {
    if (const auto* change = std::get_if<Change>(&event)) {
      bool own = std::any_of(
          store_entities_.begin(), store_entities_.end(), [&](const StoreEntity& entity) {
            return entity.entity == change->entity && entity.source == change->source;
          });
      (own ? store_changes_ : other_changes_) = true;
      return own;
    }
    if (std::holds_alternative<TransactionEnd>(event)) {
      bool only_store = store_changes_ && !other_changes_;
      store_changes_ = other_changes_ = false;
      return only_store;
    }
    return false;
  }

  void hand_over(std::size_t i) {
    if (chunks_[i].empty()) return;
    consumers_[i]->queue().push(std::move(chunks_[i]), chunk_bytes_[i]);
    chunk_bytes_[i] = 0;
    // The moved chunk left no capacity behind: growing it again event by event would move every
    // event several more times.
    chunks_[i].reserve(kChunkEvents);
  }

  std::vector<Consumer*> consumers_;
  const std::atomic<bool>& stop_;
  std::vector<StoreEntity> store_entities_;
  bool store_changes_ = false;  // in the current transaction
  bool other_changes_ = false;
  std::vector<std::vector<SourceEvent>> chunks_;
  std::vector<std::size_t> chunk_bytes_;
  std::vector<char> wanted_;
  bool transaction_open_ = false;
  bool finishing_transaction_ = false;
  std::size_t emitted_ = 0;
};

SourceRunner::SourceRunner(std::string name, Source* source, std::vector<Consumer*> consumers,
                           std::shared_ptr<spdlog::logger> log,
                           std::vector<StoreEntity> store_entities)
    : name_(std::move(name)),
      source_(source),
      consumers_(std::move(consumers)),
      log_(std::move(log)),
      store_entities_(std::move(store_entities)) {}

SourceRunner::~SourceRunner() {
  request_stop(Clock::now());
  join();
}

void SourceRunner::start() {
  thread_ = std::thread([this] {
    name_this_thread("src", name_);
    run();
  });
}

void SourceRunner::request_stop(Clock::time_point deadline) {
  drain_deadline_ns_ = deadline.time_since_epoch().count();
  stop_ = true;
  // A start() or poll() blocked on the log would otherwise hold the source thread past the
  // deadline.
  source_->interrupt();
}

void SourceRunner::join() {
  if (thread_.joinable()) thread_.join();
}

// The deadline of the last request_stop() (a later one may move it); none before the first.
Clock::time_point SourceRunner::drain_deadline() const {
  const auto deadline_ns = drain_deadline_ns_.load();
  return deadline_ns == 0 ? Clock::time_point::max()
                          : Clock::time_point(Clock::duration(deadline_ns));
}

void SourceRunner::note_turn() { last_turn_ = Clock::now().time_since_epoch().count(); }

Clock::time_point SourceRunner::last_turn() const {
  return Clock::time_point(Clock::duration(last_turn_.load()));
}

void SourceRunner::wait_interruptibly(std::chrono::milliseconds duration) {
  auto until = Clock::now() + duration;
  while (!stop_ && Clock::now() < until) {
    note_turn();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool SourceRunner::start_source() {
  // The source starts at the lowest position any consumer needs; with a checkpoint there, the
  // source may seek to it instead of scanning.
  StartPosition from;
  from.first_lsn = std::numeric_limits<std::uint64_t>::max();
  std::vector<ConsumerStart> needs;
  for (Consumer* consumer : consumers_) {
    StartPosition wanted = consumer->start_position();
    needs.insert(needs.end(), wanted.consumers.begin(), wanted.consumers.end());
    if (wanted.first_lsn < from.first_lsn ||
        (wanted.first_lsn == from.first_lsn && wanted.has_resume && !from.has_resume)) {
      from = std::move(wanted);
    }
  }
  from.consumers = std::move(needs);
  Backoff backoff;
  while (!stop_) {
    note_turn();
    auto started = source_->start(from);
    if (started) {
      log_->info("source {} started at lsn {}", name_, from.first_lsn);
      return true;
    }
    if (!started.error().retryable) {
      for (Consumer* consumer : consumers_) {
        consumer->fail("source " + name_ + ": " + started.error().message);
      }
      log_->error("source {} cannot start: {}", name_, started.error().message);
      return false;
    }
    auto wait = backoff.next();
    log_->warn("source {} cannot start yet ({}); retrying in {} ms", name_, started.error().message,
               wait.count());
    wait_interruptibly(wait);
  }
  return false;
}

void SourceRunner::run() {
  FanOut fan_out(consumers_, stop_, store_entities_);
  bool started = start_source();
  Backoff backoff;
  while (started && !stop_) {
    note_turn();
    auto outcome = source_->poll(fan_out, Clock::now() + kPollSlice);
    fan_out.hand_over_all();
    commit_checkpoints();
    if (!outcome) {
      if (!outcome.error().retryable) {
        log_->error("source {} failed: {}", name_, outcome.error().message);
        for (Consumer* consumer : consumers_) {
          consumer->fail("source " + name_ + ": " + outcome.error().message);
        }
        break;
      }
      auto wait = backoff.next();
      log_->warn("source {}: {}; retrying in {} ms", name_, outcome.error().message, wait.count());
      wait_interruptibly(wait);
      continue;
    }
    backoff.reset();
    if (*outcome == PollOutcome::kEnd) {
      log_->info("source {} reached the end of its log", name_);
      break;
    }
    if (std::none_of(consumers_.begin(), consumers_.end(),
                     [](Consumer* c) { return c->accepting(); })) {
      break;
    }
    if (!fan_out.wants_more()) fan_out.wait_for_room(Clock::now() + kPollSlice);
  }
  if (started && stop_) finish_open_transaction(fan_out);
  fan_out.end_stream();
  ended_ = true;
  finish();
}

// A stop that falls inside a transaction: the consumers may deliver the part they have, but a
// checkpoint names only transaction ends, so the next start (a restart, or a reload) would deliver
// that part again. Reading on to the transaction's end avoids it when the source has the rest at
// hand; it gives up when a poll brings nothing (the rest is not written yet), when the consumers
// stay full, and after kFinishTransactionLimit or at the drain deadline.
void SourceRunner::finish_open_transaction(FanOut& fan_out) {
  const auto deadline = std::min(drain_deadline(), Clock::now() + kFinishTransactionLimit);
  fan_out.finish_transaction(true);
  while (fan_out.transaction_open() && Clock::now() < deadline) {
    note_turn();
    if (!fan_out.wants_more()) {
      fan_out.wait_for_room(std::min(deadline, Clock::now() + kPollSlice));
      if (!fan_out.wants_more()) break;
    }
    const std::size_t emitted = fan_out.emitted();
    auto outcome = source_->poll(fan_out, std::min(deadline, Clock::now() + kPollSlice));
    fan_out.hand_over_all();
    if (!outcome || *outcome == PollOutcome::kEnd || fan_out.emitted() == emitted) break;
  }
  fan_out.finish_transaction(false);
}

void SourceRunner::finish() {
  // Consumers are draining what was read; their last checkpoints may still release log for the
  // source, so wait for them (bounded by the shutdown deadline) before closing the source.
  while (Clock::now() < drain_deadline() &&
         std::any_of(consumers_.begin(), consumers_.end(),
                     [](Consumer* c) { return c->state() == ConsumerState::kRunning; })) {
    note_turn();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  commit_checkpoints();
  source_->stop();
}

void SourceRunner::commit_checkpoints() {
  std::uint64_t lowest = std::numeric_limits<std::uint64_t>::max();
  for (Consumer* consumer : consumers_) lowest = std::min(lowest, consumer->saved_lsn());
  if (lowest != std::numeric_limits<std::uint64_t>::max() && lowest > committed_lsn_) {
    source_->commit(lowest);
    committed_lsn_ = lowest;
  }
}

}  // namespace cdcd
