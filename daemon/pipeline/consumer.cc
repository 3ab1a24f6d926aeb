#include "daemon/pipeline/consumer.h"

#include <algorithm>
#include <limits>

#include <simdjson.h>
#include <nlohmann/json.hpp>

#include "daemon/core/thread_name.h"
#include "daemon/format/format.h"
#include "daemon/format/json_writer.h"

namespace cdcd {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kIdleWake = std::chrono::milliseconds(100);
constexpr std::size_t kEventsPerClockCheck = 64;
// The least age of a batch sent because the consumer caught up while earlier ones are in flight.
constexpr auto kBusyBatchAge = std::chrono::milliseconds(1);
constexpr std::int64_t kNone = std::numeric_limits<std::int64_t>::min();
constexpr std::string_view kDeadLetterEntity = "cdcd.dead_letter";

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A dead letter is an ordinary change, so any sink can serve as the dead-letter queue.
Change make_dead_letter(const std::string& consumer, std::uint64_t lsn, nlohmann::json body) {
  Change letter;
  letter.lsn = lsn;
  letter.timestamp_us = now_us();
  letter.entity = kDeadLetterEntity;
  letter.operation = Operation::kInsert;
  body["consumer"] = consumer;
  letter.key = nlohmann::json{{"consumer", consumer}, {"lsn", lsn}}.dump();
  letter.new_row = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return letter;
}

// Puts `bytes` as text under `field`; when they are not valid UTF-8 the text shows U+FFFD in place
// of the invalid sequences, so the exact bytes go beside it as `<field>_base64`.
void put_bytes(nlohmann::json& body, const std::string& field, const std::string& bytes) {
  body[field] = bytes;
  if (simdjson::validate_utf8(bytes.data(), bytes.size())) return;
  std::string encoded;
  json::append_base64(encoded, bytes);
  body[field + "_base64"] = std::move(encoded);
}

}  // namespace

Consumer::Consumer(ConsumerSetup setup)
    : setup_(std::move(setup)),
      filter_(setup_.config.entities, setup_.config.exclude_entities, setup_.config.operations),
      queue_(setup_.config.max_queue_bytes),
      ledger_(std::nullopt, setup_.ledger_capacity),
      inbox_(std::make_shared<AckInbox>()) {
  metrics_ = setup_.metrics->consumer(name());
  for (const auto& sink : setup_.sinks) {
    std::vector<prometheus::Counter*> by_operation;
    for (Operation op : kAllOperations) {
      by_operation.push_back(&setup_.metrics->events(name(), sink.name, op));
    }
    events_counters_.push_back(std::move(by_operation));
    batch_durations_.push_back(&setup_.metrics->sink_batch_duration(sink.name));
    commit_to_ack_.push_back(&setup_.metrics->commit_to_ack(name(), sink.name));
  }
  inbox_->wake = &queue_;
  for (const auto& sink : setup_.sinks) {
    if (sink.sink->tracks_transactions()) tracks_transactions_ = true;
  }
  status_.name = name();
  status_.source = setup_.config.source;
}

Consumer::~Consumer() {
  abort();
  join();
  std::lock_guard lock(inbox_->mutex);
  inbox_->wake = nullptr;
}

Status Consumer::load_checkpoint() {
  auto stored = setup_.store->load(name());
  if (!stored) {
    // Keeps `retryable`: a store that is unreachable for now is waited for, not fatal.
    return tl::unexpected(
        Error{"loading the checkpoint of consumer " + name() + ": " + stored.error().message,
              stored.error().retryable});
  }
  loaded_ = *stored;
  // A checkpoint always wins: `start` only says where a consumer without one begins, so that a
  // restart after a crash never re-delivers what precedes the checkpoint.
  const StartConfig& start = setup_.config.start;
  if (loaded_) {
    first_lsn_ = loaded_->lsn + 1;
  } else if (start.kind == StartConfig::Kind::kLsn) {
    first_lsn_ = start.lsn;
  } else if (start.kind == StartConfig::Kind::kTimestamp) {
    first_timestamp_us_ = start.timestamp_us;
  }
  ledger_ = AckLedger(loaded_, setup_.ledger_capacity);
  last_saved_ = loaded_;
  if (loaded_) saved_lsn_ = loaded_->lsn;
  std::lock_guard lock(status_mutex_);
  status_.checkpoint = loaded_;
  return ok();
}

StartPosition Consumer::start_position() const {
  StartPosition position;
  position.first_lsn = first_lsn_;
  if (loaded_) {
    position.has_resume = true;
    position.resume = *loaded_;
  }
  position.consumers.push_back(ConsumerStart{name(), first_lsn_, first_timestamp_us_, loaded_});
  return position;
}

bool Consumer::wants(const SourceEvent& event) const {
  if (const auto* change = std::get_if<Change>(&event)) {
    return change->lsn >= first_lsn_ && change->timestamp_us >= first_timestamp_us_ &&
           filter_.accepts(*change);
  }
  if (const auto* end = std::get_if<TransactionEnd>(&event)) return end->lsn >= first_lsn_;
  const auto& bad = std::get<BadRecord>(event);
  // A bad record after the last checkpointed transaction may not have been handled yet.
  return first_lsn_ == 0 || bad.last_lsn + 1 >= first_lsn_;
}

void Consumer::start() {
  next_checkpoint_ = Clock::now() + setup_.checkpoint_interval;
  thread_ = std::thread([this] {
    name_this_thread("con", name());
    run();
  });
}

void Consumer::abort() {
  aborted_ = true;
  inbox_->arrived.notify_all();
  queue_.wake();
}

void Consumer::fail(const std::string& reason) {
  {
    std::lock_guard lock(status_mutex_);
    if (status_.error.empty()) status_.error = reason;
  }
  ConsumerState running = ConsumerState::kRunning;
  state_.compare_exchange_strong(running, ConsumerState::kFailed);
  abort();
}

void Consumer::join() {
  if (thread_.joinable()) thread_.join();
}

void Consumer::set_failed(const std::string& reason) {
  setup_.log->error("consumer {} stopped: {}", name(), reason);
  fail(reason);
}

void Consumer::note_turn() { last_turn_ = Clock::now().time_since_epoch().count(); }

std::chrono::steady_clock::time_point Consumer::last_turn() const {
  return Clock::time_point(Clock::duration(last_turn_.load()));
}

void Consumer::run() {
  while (state_ == ConsumerState::kRunning && !aborted_) {
    note_turn();
    if (pending_.empty() && !queue_.end_of_stream()) {
      auto wake = Clock::now() + kIdleWake;
      if (open_batch_) wake = std::min(wake, open_since_ + setup_.config.batch.max_wait);
      if (open_batch_ && setup_.config.batch.send_when_caught_up) {
        wake = std::min(wake, open_since_ + kBusyBatchAge);
      }
      wake = std::min(wake, next_checkpoint_);
      queue_.pop_all(pending_, wake);
    }
    process_acks();
    if (pending_.empty() && queue_.end_of_stream()) {
      // The stream ended (replay finished, or shutdown): pick up what arrived last, then drain.
      queue_.pop_all(pending_, Clock::now());
      if (pending_.empty()) break;
    }
    std::size_t handled = 0;
    while (!pending_.empty() && state_ == ConsumerState::kRunning && !aborted_) {
      // Handled in place (moved from, then popped): one move fewer per event.
      SourceEvent& event = pending_.front();
      const std::size_t bytes = byte_size(event);
      handle(std::move(event));
      pending_.pop_front();
      handled_bytes_ += bytes;
      // Reading the clock (or taking the queue's lock) per event would cost more than handling it.
      if (++handled % kEventsPerClockCheck != 0) continue;
      release_handled_bytes();
      auto now = Clock::now();
      if (open_batch_waited_enough(now)) flush_batch();
      if (now >= next_checkpoint_) save_checkpoint();
    }
    release_handled_bytes();
    const auto now = Clock::now();
    if (open_batch_waited_enough(now) || caught_up_with_open_batch(now)) flush_batch();
    if (now >= next_checkpoint_) save_checkpoint();
    update_metrics();
  }
  if (state_ == ConsumerState::kRunning && !aborted_) {
    flush_batch();
    wait_for_all_acks();
  }
  process_acks();
  save_checkpoint();
  if (state_ == ConsumerState::kRunning) {
    if (aborted_ && !ledger_.empty()) {
      fail("shutdown timeout: stopped with deliveries still unacknowledged");
    } else {
      state_ = ConsumerState::kFinished;
    }
  }
  update_metrics();
  setup_.log->info("consumer {} {} at checkpoint lsn {}", name(),
                   state_ == ConsumerState::kFinished ? "finished" : "stopped",
                   last_saved_ ? last_saved_->lsn : 0);
  if (setup_.on_stopped) setup_.on_stopped();
}

void Consumer::handle(SourceEvent&& event) {
  if (auto* change = std::get_if<Change>(&event)) {
    add_change(std::move(*change));
  } else if (auto* end = std::get_if<TransactionEnd>(&event)) {
    // Before the ledger's transaction end: a batch that says so must be delivered before the
    // checkpoint may pass the transaction.
    note_transaction_end(*end);
    ledger_.add_transaction_end(
        Checkpoint{end->lsn, end->offset, end->timestamp_us, 0, end->segment});
  } else {
    const auto& bad = std::get<BadRecord>(event);
    if (setup_.config.on_error == OnError::kStop) {
      // Deliver and checkpoint everything before the bad record, so that the stop position does
      // not depend on batch timing.
      flush_batch();
      wait_for_all_acks();
      save_checkpoint();
      set_failed(bad.location + ": " + bad.reason + " (after lsn " + std::to_string(bad.last_lsn) +
                 ")");
    } else {
      dead_letter_bad_record(bad);
    }
  }
}

void Consumer::release_handled_bytes() {
  queue_.release(handled_bytes_);
  handled_bytes_ = 0;
}

bool Consumer::open_new_batch(std::int64_t timestamp_us) {
  wait_for_delivery_room();
  if (state_ != ConsumerState::kRunning || aborted_) return false;
  open_batch_ = std::make_shared<Batch>();
  open_batch_->id = next_batch_id_++;
  open_batch_->consumer = name();
  open_batch_->source_name = setup_.config.source;
  open_batch_->connector = setup_.source_type;
  open_batch_->changes.reserve(std::min<std::size_t>(setup_.config.batch.max_events, 4096));
  open_entry_ = ledger_.add_delivery(setup_.sinks.size(), timestamp_us);
  open_since_ = Clock::now();
  return true;
}

void Consumer::note_transaction_end(const TransactionEnd& end) {
  if (!tracks_transactions_) return;
  if (open_batch_) {
    open_batch_->transaction_ended_lsn = end.lsn;
    return;
  }
  if (unended_lsn_ != end.lsn) return;
  // The transaction's last change went out in an earlier batch. Waiting for the next change to
  // carry the news could take forever on an idle database: a batch without changes carries it
  // (it stays open for max_wait, so changes that follow soon join it).
  if (!open_new_batch(end.timestamp_us)) return;
  open_batch_->transaction_ended_lsn = end.lsn;
}

void Consumer::add_change(Change&& change) {
  if (!open_batch_ && !open_new_batch(change.timestamp_us)) return;
  open_batch_->bytes += change.byte_size();
  open_batch_->changes.push_back(std::move(change));
  if (open_batch_->changes.size() >= setup_.config.batch.max_events ||
      open_batch_->bytes >= setup_.config.batch.max_bytes) {
    flush_batch();
  }
}

bool Consumer::open_batch_waited_enough(Clock::time_point now) const {
  return open_batch_ && now >= open_since_ + setup_.config.batch.max_wait;
}

// Every change the source handed over is in the open batch: waiting longer only adds latency.
// While earlier batches are in flight, the batch is at least kBusyBatchAge old: at high rates a
// batch per hand-over from the source costs CPU per change (a write, an acknowledgement, and
// for Kafka wake-ups of librdkafka's threads) and gains little.
bool Consumer::caught_up_with_open_batch(Clock::time_point now) const {
  if (!open_batch_ || !setup_.config.batch.send_when_caught_up || !pending_.empty()) return false;
  if (batches_in_flight() > 0 && now < open_since_ + kBusyBatchAge) return false;
  return !queue_.has_queued();
}

std::size_t Consumer::batches_in_flight() const {
  return ledger_.deliveries_in_flight() - (open_batch_ ? 1 : 0);
}

void Consumer::wait_for_delivery_room() {
  auto no_room = [this] {
    return batches_in_flight() >= setup_.config.batch.max_in_flight || ledger_.full();
  };
  if (!no_room()) return;
  // A batch still open (before a dead letter) would wait with this thread, and it may be the
  // ledger's oldest delivery, which only sending it can complete.
  flush_batch();
  wait_for_acks_while(no_room);
}

void Consumer::wait_for_acks_while(const std::function<bool()>& condition) {
  // What is handled no longer needs the queue's room while this thread waits.
  release_handled_bytes();
  while (condition() && state_ == ConsumerState::kRunning && !aborted_) {
    note_turn();
    {
      std::unique_lock lock(inbox_->mutex);
      inbox_->arrived.wait_for(lock, kIdleWake,
                               [this] { return !inbox_->acks.empty() || aborted_; });
    }
    process_acks();
    if (Clock::now() >= next_checkpoint_) save_checkpoint();
    update_metrics();
  }
}

void Consumer::flush_batch() {
  if (!open_batch_) return;
  // A sink's write() may block for long: publish the lag it is about to hold first.
  update_metrics();
  BatchPtr batch = std::move(open_batch_);
  open_batch_.reset();
  if (tracks_transactions_) {
    unended_lsn_.reset();
    if (!batch->changes.empty() && batch->transaction_ended_lsn != batch->changes.back().lsn) {
      unended_lsn_ = batch->changes.back().lsn;
    }
  }
  for (std::size_t i = 0; i < setup_.sinks.size(); ++i) {
    auto ack = make_ack(open_entry_, i, batch);
    // A batch that only ends a transaction means nothing to a sink that does not track them.
    if (batch->changes.empty() && !setup_.sinks[i].sink->tracks_transactions()) {
      ack(DeliveryReport{});
      continue;
    }
    setup_.sinks[i].sink->write(batch, std::move(ack));
  }
}

AckFn Consumer::make_ack(AckLedger::EntryId entry, std::size_t sink, BatchPtr batch) {
  auto written_at = Clock::now();
  return [inbox = inbox_, entry, sink, batch = std::move(batch),
          written_at](DeliveryReport report) mutable {
    std::lock_guard lock(inbox->mutex);
    inbox->acks.push_back(Ack{entry, sink, std::move(batch), std::move(report), written_at});
    inbox->arrived.notify_all();
    if (inbox->wake) inbox->wake->wake();
  };
}

void Consumer::process_acks() {
  std::vector<Ack> acks;
  {
    std::lock_guard lock(inbox_->mutex);
    acks.swap(inbox_->acks);
  }
  for (auto& ack : acks) process_ack(ack);
  ledger_.advance();
}

void Consumer::process_ack(Ack& ack) {
  const bool from_dead_letter_sink = ack.sink == setup_.sinks.size();
  const std::string& sink_name =
      from_dead_letter_sink ? setup_.dead_letter->name : setup_.sinks[ack.sink].name;
  const auto& changes = ack.batch->changes;
  if (ack.report.failure) {
    std::string range = changes.empty() ? std::string("empty batch")
                                        : "lsn " + std::to_string(changes.front().lsn) + ".." +
                                              std::to_string(changes.back().lsn);
    set_failed("sink " + sink_name + " failed on " + range + ": " + ack.report.failure->message);
    return;
  }
  if (from_dead_letter_sink && !ack.report.rejected.empty()) {
    // Nowhere left to put it: stopping is the only way not to lose the record.
    set_failed("dead-letter sink " + sink_name + " rejected a dead letter for lsn " +
               std::to_string(changes.front().lsn) + ": " + ack.report.rejected.front().reason);
    return;
  }
  if (!from_dead_letter_sink) {
    batch_durations_[ack.sink]->Observe(
        std::chrono::duration<double>(Clock::now() - ack.written_at).count());
    std::vector<bool> rejected(changes.size(), false);
    for (const auto& rejection : ack.report.rejected) {
      if (rejection.index < changes.size()) rejected[rejection.index] = true;
    }
    const std::int64_t acked_at_us = now_us();
    for (std::size_t i = 0; i < changes.size(); ++i) {
      if (rejected[i]) continue;
      events_counters_[ack.sink][static_cast<int>(changes[i].operation)]->Increment();
      if (changes[i].timestamp_us > 0) {
        commit_to_ack_[ack.sink]->Observe(
            static_cast<double>(acked_at_us - changes[i].timestamp_us) / 1e6);
      }
    }
    if (ack.report.rejected.size() < changes.size()) {
      last_delivery_ = Clock::now().time_since_epoch().count();
    }
    for (const auto& rejection : ack.report.rejected) {
      if (rejection.index >= changes.size()) continue;
      const Change& change = changes[rejection.index];
      std::string where = "sink " + sink_name + " rejected the change at lsn " +
                          std::to_string(change.lsn) + " (" + change.entity +
                          "): " + rejection.reason;
      if (setup_.config.on_error == OnError::kStop) {
        set_failed(where);
        return;
      }
      std::string native;
      encode_change(Format::kNative, change,
                    EncodeContext{setup_.config.source, setup_.source_type}, native);
      nlohmann::json body{{"reason", where}, {"sink", sink_name}};
      // nlohmann refuses invalid UTF-8 (a row image kept verbatim may hold some).
      auto parsed = nlohmann::json::parse(native, nullptr, false);
      if (parsed.is_discarded()) {
        put_bytes(body, "change", native);
      } else {
        body["change"] = std::move(parsed);
      }
      ledger_.expect_more(ack.entry, 1);
      write_dead_letter(make_dead_letter(name(), change.lsn, std::move(body)), ack.entry, where);
    }
  }
  ledger_.acknowledge(ack.entry);
}

void Consumer::dead_letter_bad_record(const BadRecord& record) {
  // A dead letter is a delivery like a batch: it waits for room in the window and the ledger.
  wait_for_delivery_room();
  if (state_ != ConsumerState::kRunning || aborted_) return;
  nlohmann::json body{{"reason", record.reason}, {"location", record.location}};
  put_bytes(body, "raw", record.raw);
  auto entry = ledger_.add_delivery(1, now_us());
  write_dead_letter(make_dead_letter(name(), record.last_lsn, std::move(body)), entry,
                    record.location + ": " + record.reason + " (after lsn " +
                        std::to_string(record.last_lsn) + ")");
}

void Consumer::write_dead_letter(Change&& letter, AckLedger::EntryId entry,
                                 const std::string& why) {
  metrics_.dead_letters->Increment();
  setup_.log->warn("consumer {}: dead-lettering to {}: {}", name(), setup_.dead_letter->name, why);
  auto batch = std::make_shared<Batch>();
  batch->id = 0;
  batch->consumer = name();
  batch->source_name = setup_.config.source;
  batch->connector = setup_.source_type;
  batch->bytes = letter.byte_size();
  batch->changes.push_back(std::move(letter));
  setup_.dead_letter->sink->write(batch, make_ack(entry, setup_.sinks.size(), batch));
}

void Consumer::wait_for_all_acks() {
  wait_for_acks_while([this] { return !ledger_.empty(); });
}

void Consumer::save_checkpoint() {
  next_checkpoint_ = Clock::now() + setup_.checkpoint_interval;
  const auto& frontier = ledger_.advance();
  if (!frontier || (last_saved_ && last_saved_->lsn == frontier->lsn)) return;
  Checkpoint checkpoint = *frontier;
  checkpoint.saved_at_us = now_us();
  if (auto saved = setup_.store->save(name(), checkpoint); !saved) {
    // Not fatal: the next interval tries again, and nothing past the old checkpoint is lost.
    setup_.log->error("consumer {}: saving checkpoint at lsn {} failed: {}", name(), checkpoint.lsn,
                      saved.error().message);
    return;
  }
  last_saved_ = checkpoint;
  saved_lsn_ = checkpoint.lsn;
  std::lock_guard lock(status_mutex_);
  status_.checkpoint = checkpoint;
}

void Consumer::update_metrics() {
  // Publishes the consumer thread's view; refresh_metrics() turns it into gauges from any thread,
  // so that lag keeps growing while this thread is stuck in a sink's write().
  std::optional<std::int64_t> oldest = ledger_.oldest_unacknowledged_timestamp();
  if (!oldest) oldest = pending_.oldest_change_timestamp();
  oldest_unacknowledged_us_ = oldest.value_or(kNone);
  const auto& frontier = ledger_.frontier();
  frontier_lsn_ = frontier ? frontier->lsn : 0;
  frontier_offset_ = frontier ? frontier->offset : 0;
  refresh_metrics();
}

void Consumer::refresh_metrics() {
  std::size_t queued = queue_.bytes();
  std::optional<std::int64_t> oldest;
  if (auto published = oldest_unacknowledged_us_.load(); published != kNone) oldest = published;
  if (!oldest) oldest = queue_.oldest_change_timestamp();
  double lag_seconds = oldest ? std::max(0.0, (now_us() - *oldest) / 1e6) : 0.0;
  std::uint64_t lag_bytes = setup_.source->bytes_behind(frontier_lsn_, frontier_offset_);
  metrics_.queue_bytes->Set(static_cast<double>(queued));
  metrics_.lag_seconds->Set(lag_seconds);
  metrics_.lag_bytes->Set(static_cast<double>(lag_bytes));
  metrics_.seconds_since_delivery->Set(
      std::chrono::duration<double>(Clock::now() -
                                    Clock::time_point(Clock::duration(last_delivery_.load())))
          .count());
  const ConsumerState state = state_.load();
  metrics_.running->Set(state == ConsumerState::kRunning ? 1 : 0);
  metrics_.failed->Set(state == ConsumerState::kFailed ? 1 : 0);
  metrics_.stopped->Set(state == ConsumerState::kFinished ? 1 : 0);
  std::lock_guard lock(status_mutex_);
  if (status_.checkpoint)
    metrics_.checkpoint_lsn->Set(static_cast<double>(status_.checkpoint->lsn));
  status_.state = state_.load();
  status_.lag_bytes = lag_bytes;
  status_.lag_seconds = lag_seconds;
  status_.queue_bytes = queued;
}

ConsumerStatus Consumer::status() const {
  std::lock_guard lock(status_mutex_);
  ConsumerStatus copy = status_;
  copy.state = state_.load();
  return copy;
}

}  // namespace cdcd
