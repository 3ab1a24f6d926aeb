#include "tests/support/fakes.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include <spdlog/sinks/null_sink.h>

namespace cdcd::test {

namespace {

// Commit times well in the past unless a test asks otherwise; lsn-dependent so they differ.
constexpr std::int64_t kBaseTimestampUs = 1'763'719'200'000'000;

std::int64_t timestamp_or_default(std::uint64_t lsn, std::int64_t timestamp_us) {
  return timestamp_us != 0 ? timestamp_us
                           : kBaseTimestampUs + static_cast<std::int64_t>(lsn) * 1000;
}

// Whether a real source positioned at `first_lsn` would skip this event.
bool before_start(const SourceEvent& event, std::uint64_t first_lsn) {
  if (const auto* change = std::get_if<Change>(&event)) return change->lsn < first_lsn;
  if (const auto* end = std::get_if<TransactionEnd>(&event)) return end->lsn < first_lsn;
  return std::get<BadRecord>(event).last_lsn + 1 < first_lsn;
}

}  // namespace

std::shared_ptr<spdlog::logger> null_logger() {
  return std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
}

std::uint64_t end_offset(std::uint64_t lsn) { return lsn * 100; }

Change make_change(std::uint64_t lsn, std::uint32_t seq, std::string entity, Operation op,
                   std::int64_t timestamp_us) {
  Change change;
  change.lsn = lsn;
  change.seq = seq;
  change.timestamp_us = timestamp_or_default(lsn, timestamp_us);
  change.txid = lsn;
  change.entity = std::move(entity);
  change.operation = op;
  const std::string id = std::to_string(lsn * 1000 + seq);
  change.key = "{\"id\":" + id + "}";
  change.new_row = "{\"id\":" + id + ",\"status\":\"new\"}";
  change.offset = end_offset(lsn) - 50 + seq;
  return change;
}

TransactionEnd make_end(std::uint64_t lsn, std::int64_t timestamp_us) {
  return TransactionEnd{lsn, end_offset(lsn), timestamp_or_default(lsn, timestamp_us)};
}

std::vector<SourceEvent> transaction(std::uint64_t lsn, std::uint32_t changes,
                                     const std::string& entity, Operation op,
                                     std::int64_t timestamp_us) {
  std::vector<SourceEvent> events;
  for (std::uint32_t seq = 0; seq < changes; ++seq) {
    events.emplace_back(make_change(lsn, seq, entity, op, timestamp_us));
  }
  events.emplace_back(make_end(lsn, timestamp_us));
  return events;
}

std::vector<SourceEvent> transactions(std::uint64_t first, std::uint64_t last,
                                      std::uint32_t changes, const std::string& entity) {
  std::vector<SourceEvent> events;
  for (std::uint64_t lsn = first; lsn <= last; ++lsn) {
    for (auto& event : transaction(lsn, changes, entity)) events.push_back(std::move(event));
  }
  return events;
}

BadRecord make_bad_record(std::uint64_t last_lsn, std::string raw, std::string reason,
                          std::string location) {
  BadRecord record;
  record.raw = std::move(raw);
  record.reason = std::move(reason);
  record.location = std::move(location);
  record.last_lsn = last_lsn;
  record.offset = end_offset(last_lsn) + 10;
  return record;
}

// FakeSource

void FakeSource::add(std::vector<SourceEvent> events) {
  {
    std::lock_guard lock(mutex_);
    for (auto& event : events) script_.emplace_back(std::move(event));
  }
  added_.notify_all();
}

void FakeSource::add_error(Error error) {
  {
    std::lock_guard lock(mutex_);
    script_.emplace_back(std::move(error));
  }
  added_.notify_all();
}

void FakeSource::add_end_of_log() {
  {
    std::lock_guard lock(mutex_);
    script_.emplace_back(EndOfLog{});
  }
  added_.notify_all();
}

void FakeSource::add_start_error(Error error) {
  std::lock_guard lock(mutex_);
  start_errors_.push_back(std::move(error));
}

void FakeSource::set_head_offset(std::uint64_t offset) {
  std::lock_guard lock(mutex_);
  head_offset_ = offset;
}

Status FakeSource::start(const StartPosition& from) {
  std::lock_guard lock(mutex_);
  ++start_attempts_;
  if (!start_errors_.empty()) {
    Error error = std::move(start_errors_.front());
    start_errors_.pop_front();
    return tl::unexpected<Error>(std::move(error));
  }
  starts_.push_back(from);
  first_lsn_ = from.first_lsn;
  started_ = true;
  return ok();
}

Result<PollOutcome> FakeSource::poll(Emitter& out, Deadline deadline) {
  std::unique_lock lock(mutex_);
  ++polls_;
  while (true) {
    while (!script_.empty() && std::holds_alternative<SourceEvent>(script_.front()) &&
           before_start(std::get<SourceEvent>(script_.front()), first_lsn_)) {
      script_.pop_front();
    }
    if (script_.empty()) {
      added_.wait_until(lock, deadline, [this] { return !script_.empty(); });
      if (script_.empty()) return PollOutcome::kMore;
      continue;
    }
    Step& step = script_.front();
    if (auto* error = std::get_if<Error>(&step)) {
      Error failure = std::move(*error);
      script_.pop_front();
      return tl::unexpected<Error>(std::move(failure));
    }
    if (std::holds_alternative<EndOfLog>(step)) return PollOutcome::kEnd;
    if (!out.wants_more()) {
      ++backpressured_polls_;
      return PollOutcome::kMore;
    }
    SourceEvent event = std::move(std::get<SourceEvent>(step));
    script_.pop_front();
    ++emitted_;
    lock.unlock();
    out.emit(std::move(event));
    lock.lock();
    if (std::chrono::steady_clock::now() >= deadline) return PollOutcome::kMore;
  }
}

void FakeSource::commit(std::uint64_t lsn) {
  std::lock_guard lock(mutex_);
  commits_.push_back(lsn);
}

void FakeSource::stop() {
  std::lock_guard lock(mutex_);
  stopped_ = true;
}

std::uint64_t FakeSource::bytes_behind(std::uint64_t, std::uint64_t offset) const {
  std::lock_guard lock(mutex_);
  return head_offset_ > offset ? head_offset_ - offset : 0;
}

bool FakeSource::connected() const {
  std::lock_guard lock(mutex_);
  return started_ && !stopped_;
}

std::vector<StartPosition> FakeSource::starts() const {
  std::lock_guard lock(mutex_);
  return starts_;
}

std::vector<std::uint64_t> FakeSource::commits() const {
  std::lock_guard lock(mutex_);
  return commits_;
}

std::size_t FakeSource::emitted() const {
  std::lock_guard lock(mutex_);
  return emitted_;
}

std::size_t FakeSource::polls() const {
  std::lock_guard lock(mutex_);
  return polls_;
}

std::size_t FakeSource::backpressured_polls() const {
  std::lock_guard lock(mutex_);
  return backpressured_polls_;
}

std::size_t FakeSource::start_attempts() const {
  std::lock_guard lock(mutex_);
  return start_attempts_;
}

bool FakeSource::stopped() const {
  std::lock_guard lock(mutex_);
  return stopped_;
}

// FakeSink

FakeSink::FakeSink(AckMode mode) : mode_(mode) {
  if (mode_ == AckMode::kAsync) worker_ = std::thread([this] { async_loop(); });
}

FakeSink::~FakeSink() { stop(); }

void FakeSink::fail_at(std::uint64_t lsn, std::string message) {
  std::lock_guard lock(mutex_);
  failures_[lsn] = std::move(message);
}

void FakeSink::reject(std::uint64_t lsn, std::uint32_t seq, std::string reason) {
  std::lock_guard lock(mutex_);
  rejections_[{lsn, seq}] = std::move(reason);
}

DeliveryReport FakeSink::report_for(const Batch& batch) const {
  DeliveryReport report;
  for (std::size_t i = 0; i < batch.changes.size(); ++i) {
    const Change& change = batch.changes[i];
    if (auto failure = failures_.find(change.lsn); failure != failures_.end()) {
      return DeliveryReport{Error{failure->second, false}, {}};
    }
    if (auto rejection = rejections_.find({change.lsn, change.seq});
        rejection != rejections_.end()) {
      report.rejected.push_back(RejectedChange{i, rejection->second});
    }
  }
  return report;
}

void FakeSink::acknowledge(Pending pending) {
  DeliveryReport report;
  {
    std::lock_guard lock(mutex_);
    report =
        stopping_ ? DeliveryReport{Error{"sink stopped", false}, {}} : report_for(*pending.batch);
    --unacknowledged_;
  }
  changed_.notify_all();
  pending.ack(std::move(report));
}

void FakeSink::set_write_blocked(bool blocked) {
  {
    std::lock_guard lock(mutex_);
    write_blocked_ = blocked;
  }
  changed_.notify_all();
}

std::size_t FakeSink::writes_blocked() const {
  std::lock_guard lock(mutex_);
  return writes_blocked_;
}

void FakeSink::write(BatchPtr batch, AckFn ack) {
  {
    std::unique_lock lock(mutex_);
    ++writes_blocked_;
    changed_.wait(lock, [this] { return !write_blocked_ || stopping_; });
    --writes_blocked_;
    batches_.push_back(batch);
    ++unacknowledged_;
    max_unacknowledged_ = std::max(max_unacknowledged_, unacknowledged_);
    const bool held = mode_ == AckMode::kAsync || mode_ == AckMode::kHold ||
                      (mode_ == AckMode::kHoldFirst && batches_.size() == 1);
    if (held && !stopping_) {
      pending_.push_back(Pending{std::move(batch), std::move(ack)});
      changed_.notify_all();
      return;
    }
  }
  acknowledge(Pending{std::move(batch), std::move(ack)});
}

void FakeSink::async_loop() {
  std::unique_lock lock(mutex_);
  while (true) {
    changed_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) return;
    Pending next = std::move(pending_.front());
    pending_.pop_front();
    lock.unlock();
    acknowledge(std::move(next));
    lock.lock();
  }
}

Status FakeSink::flush(Deadline deadline) {
  std::unique_lock lock(mutex_);
  if (!changed_.wait_until(lock, deadline, [this] { return unacknowledged_ == 0; })) {
    return fail("flush timed out");
  }
  return ok();
}

void FakeSink::stop() {
  std::deque<Pending> abandoned;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (mode_ != AckMode::kAsync) abandoned.swap(pending_);
  }
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
  for (auto& pending : abandoned) acknowledge(std::move(pending));
}

std::vector<BatchPtr> FakeSink::batches() const {
  std::lock_guard lock(mutex_);
  return batches_;
}

std::size_t FakeSink::batch_count() const {
  std::lock_guard lock(mutex_);
  return batches_.size();
}

std::vector<Change> FakeSink::changes() const {
  std::lock_guard lock(mutex_);
  std::vector<Change> all;
  for (const auto& batch : batches_) {
    all.insert(all.end(), batch->changes.begin(), batch->changes.end());
  }
  return all;
}

std::size_t FakeSink::unacknowledged() const {
  std::lock_guard lock(mutex_);
  return unacknowledged_;
}

std::size_t FakeSink::max_unacknowledged() const {
  std::lock_guard lock(mutex_);
  return max_unacknowledged_;
}

std::size_t FakeSink::held() const {
  std::lock_guard lock(mutex_);
  return pending_.size();
}

bool FakeSink::release_batch(std::uint64_t batch_id) {
  std::optional<Pending> found;
  {
    std::lock_guard lock(mutex_);
    auto it = std::find_if(pending_.begin(), pending_.end(),
                           [batch_id](const Pending& p) { return p.batch->id == batch_id; });
    if (it == pending_.end()) return false;
    found = std::move(*it);
    pending_.erase(it);
  }
  acknowledge(std::move(*found));
  return true;
}

std::size_t FakeSink::release_oldest(std::size_t count) {
  std::deque<Pending> released;
  {
    std::lock_guard lock(mutex_);
    while (count-- > 0 && !pending_.empty()) {
      released.push_back(std::move(pending_.front()));
      pending_.pop_front();
    }
  }
  for (auto& pending : released) acknowledge(std::move(pending));
  return released.size();
}

std::size_t FakeSink::release_newest_first() {
  std::deque<Pending> released;
  {
    std::lock_guard lock(mutex_);
    released.swap(pending_);
  }
  for (auto it = released.rbegin(); it != released.rend(); ++it) acknowledge(std::move(*it));
  return released.size();
}

// MemoryCheckpointStore

void MemoryCheckpointStore::put(const std::string& consumer, const Checkpoint& checkpoint) {
  std::lock_guard lock(mutex_);
  current_[consumer] = checkpoint;
}

void MemoryCheckpointStore::set_failing(bool failing) {
  std::lock_guard lock(mutex_);
  failing_ = failing;
}

Result<std::optional<Checkpoint>> MemoryCheckpointStore::load(const std::string& consumer) {
  std::lock_guard lock(mutex_);
  if (failing_) return fail_retryable("store unavailable");
  if (auto it = current_.find(consumer); it != current_.end()) {
    return std::optional<Checkpoint>(it->second);
  }
  return std::optional<Checkpoint>();
}

Status MemoryCheckpointStore::save(const std::string& consumer, const Checkpoint& checkpoint) {
  std::lock_guard lock(mutex_);
  if (failing_) return fail_retryable("store unavailable");
  current_[consumer] = checkpoint;
  saves_[consumer].push_back(checkpoint);
  return ok();
}

Status MemoryCheckpointStore::remove(const std::string& consumer) {
  std::lock_guard lock(mutex_);
  current_.erase(consumer);
  return ok();
}

std::vector<Checkpoint> MemoryCheckpointStore::saves(const std::string& consumer) const {
  std::lock_guard lock(mutex_);
  auto it = saves_.find(consumer);
  return it == saves_.end() ? std::vector<Checkpoint>{} : it->second;
}

std::optional<Checkpoint> MemoryCheckpointStore::latest(const std::string& consumer) const {
  std::lock_guard lock(mutex_);
  auto it = saves_.find(consumer);
  if (it == saves_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::uint64_t MemoryCheckpointStore::latest_lsn(const std::string& consumer) const {
  auto checkpoint = latest(consumer);
  return checkpoint ? checkpoint->lsn : 0;
}

}  // namespace cdcd::test
