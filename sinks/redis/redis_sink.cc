#include "sinks/redis/redis_sink.h"

#include <fnmatch.h>

#include <algorithm>
#include <chrono>

#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>

#include "daemon/core/thread_name.h"
#include "daemon/format/json_writer.h"
#include "daemon/redis/cluster_slots.h"
#include "sinks/redis/fence.h"

namespace cdcd {

namespace redis {

namespace {

using Clock = std::chrono::steady_clock;

// Redis refuses an XADD whose explicit id is not above the stream's last one with this text: the
// entry of a replayed change is there already.
constexpr std::string_view kStreamIdTooSmall = "equal or smaller than the target stream top item";

prometheus::Histogram::BucketBoundaries latency_buckets() {
  prometheus::Histogram::BucketBoundaries buckets;
  for (double bound = 0.0005; bound < 4000.0; bound *= 2) buckets.push_back(bound);
  return buckets;
}

prometheus::Counter& counter(prometheus::Registry& registry, const std::string& name,
                             const std::string& help, const std::string& sink) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add({{"sink", sink}});
}

// EVALSHA names a script by the SHA-1 of its text, which Redis computes the same way.
std::string script_sha1(std::string_view script) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(script.data()), script.size(), digest);
  std::string hex;
  for (unsigned char byte : digest) hex += fmt::format("{:02x}", byte);
  return hex;
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "UNLINK of key user:1", from a command's RESP (parsed back with hiredis' reader: only error
// messages need it, so the planned commands do not carry their arguments twice).
std::string describe_command(std::string_view resp, std::size_t key_argument) {
  redisReader* reader = redisReaderCreate();
  if (reader == nullptr) return "a command";
  std::string text = "a command";
  void* parsed = nullptr;
  if (redisReaderFeed(reader, resp.data(), resp.size()) == REDIS_OK &&
      redisReaderGetReply(reader, &parsed) == REDIS_OK && parsed != nullptr) {
    const auto* command = static_cast<const redisReply*>(parsed);
    if (command->type == REDIS_REPLY_ARRAY && command->elements > key_argument) {
      text = reply_text(*command->element[0]) + " of key " +
             reply_text(*command->element[key_argument]);
    }
    freeReplyObject(parsed);
  }
  redisReaderFree(reader);
  return text;
}

}  // namespace

struct RedisSink::Metrics {
  Metrics(prometheus::Registry& registry, const std::string& sink, SinkMetrics sink_metrics)
      : sink_(sink),
        commands(counter(registry, "cdcd_redis_commands_total",
                         "Commands the Redis sink sent that were answered (retries included).",
                         sink)),
        keys_invalidated(counter(registry, "cdcd_redis_keys_invalidated_total",
                                 "Cache keys deleted (or found already fenced by a later change).",
                                 sink)),
        fenced(counter(registry, "cdcd_redis_fenced_total",
                       "Cache keys a change left alone because its fence already held a later "
                       "change's position (a replayed or stale change).",
                       sink)),
        templates_skipped(counter(registry, "cdcd_redis_templates_skipped_total",
                                  "Key templates skipped for a change that lacks a field they "
                                  "name (e.g. {old.email} on an insert).",
                                  sink)),
        second_deletes(counter(registry, "cdcd_redis_second_deletes_total",
                               "double_delete: second deletes Redis confirmed.", sink)),
        second_deletes_dropped(counter(registry, "cdcd_redis_second_deletes_dropped_total",
                                       "double_delete: second deletes still waiting (or "
                                       "unconfirmed) when the sink stopped, never sent.",
                                       sink)),
        notices_published(counter(registry, "cdcd_redis_notices_published_total",
                                  "Change notices PUBLISHed.", sink)),
        stream_entries(counter(registry, "cdcd_redis_stream_entries_total",
                               "Changes added to streams with XADD.", sink)),
        stream_duplicates(counter(registry, "cdcd_redis_stream_duplicates_total",
                                  "XADDs Redis refused because the stream already holds an entry "
                                  "at or after the change's id (a replayed change).",
                                  sink)),
        errors_family(prometheus::BuildCounter()
                          .Name("cdcd_redis_reply_errors_total")
                          .Help("Error replies and connection failures of the Redis sink, by kind "
                                "(the error's first word, or CONNECTION).")
                          .Register(registry)),
        latency(prometheus::BuildHistogram()
                    .Name("cdcd_redis_invalidation_latency_seconds")
                    .Help("Time from a change's commit to Redis confirming its invalidation.")
                    .Register(registry)
                    .Add({{"sink", sink}}, latency_buckets())),
        sink_metrics(sink_metrics) {}

  void reply_error(const std::string& kind) {
    errors_family.Add({{"sink", sink_}, {"kind", kind}}).Increment();
    if (sink_metrics.errors != nullptr) sink_metrics.errors->Increment();
  }

  std::string sink_;
  prometheus::Counter& commands;
  prometheus::Counter& keys_invalidated;
  prometheus::Counter& fenced;
  prometheus::Counter& templates_skipped;
  prometheus::Counter& second_deletes;
  prometheus::Counter& second_deletes_dropped;
  prometheus::Counter& notices_published;
  prometheus::Counter& stream_entries;
  prometheus::Counter& stream_duplicates;
  prometheus::Family<prometheus::Counter>& errors_family;
  prometheus::Histogram& latency;
  SinkMetrics sink_metrics;
};

RedisSink::RedisSink(RedisSinkConfig config, SinkContext context)
    : config_(std::move(config)),
      context_(std::move(context)),
      registry_(context_.registry ? context_.registry : std::make_shared<prometheus::Registry>()),
      metrics_(std::make_unique<Metrics>(*registry_, context_.name, context_.metrics)),
      fence_sha_(script_sha1(kFenceScript)),
      connector_(config_.connection, config_.cluster) {}

RedisSink::~RedisSink() { stop(); }

Status RedisSink::start() {
  std::lock_guard lock(mutex_);
  if (started_) return ok();
  if (stopping_) return fail("redis sink " + context_.name + " is stopped");
  // The connection is handed to the pipeline thread, which runs only after this.
  if (auto connected = ensure_connected(); !connected) return connected;
  started_ = true;
  pipeline_ = std::thread([this] { run_pipeline(); });
  return ok();
}

Status RedisSink::ensure_connected() {
  if (connection_ != nullptr) return ok();
  auto opened = connector_.open(&stopping_);
  if (!opened) return tl::unexpected(opened.error());
  connection_ = std::move(*opened);
  if (config_.fence_ttl) return load_fence_script();
  return ok();
}

Status RedisSink::load_fence_script() {
  auto loaded = connection_->load_script(kFenceScript);
  if (!loaded) {
    connection_.reset();
    return tl::unexpected(loaded.error());
  }
  if (*loaded != fence_sha_) {
    connection_.reset();
    return fail("Redis " + config_.connection.describe() +
                ": SCRIPT LOAD answered an unexpected digest for the fence script");
  }
  return ok();
}

// ---- planning, on the writer's thread ----

RedisSink::PendingPtr RedisSink::plan(BatchPtr batch, AckFn ack) {
  auto pending = std::make_unique<Pending>();
  pending->batch = std::move(batch);
  pending->ack = std::move(ack);
  pending->rejected.assign(pending->batch->changes.size(), false);
  pending->commands.reserve(pending->batch->changes.size() * (config_.publish ? 2 : 1));
  Scratch scratch;
  for (std::size_t i = 0; i < pending->batch->changes.size(); ++i) {
    if (auto planned = plan_change(*pending, i, scratch); !planned) {
      pending->rejected[i] = true;
      pending->report.rejected.push_back(
          {i, "cannot render its cache keys: " + planned.error().message});
    }
  }
  return pending;
}

void RedisSink::add_command(Pending& pending, std::span<const std::string_view> args,
                            CommandKind kind, std::size_t change, std::size_t keys) {
  PlannedCommand command;
  command.offset = static_cast<std::uint32_t>(pending.resp.size());
  append_command(pending.resp, args);
  command.length = static_cast<std::uint32_t>(pending.resp.size() - command.offset);
  command.change = static_cast<std::uint32_t>(change);
  command.keys = static_cast<std::uint32_t>(keys);
  command.kind = kind;
  pending.commands.push_back(command);
}

Status RedisSink::plan_change(Pending& pending, std::size_t index, Scratch& scratch) {
  const Change& change = pending.batch->changes[index];
  const TemplateInput input(change, pending.batch->source_name);
  auto& args = scratch.args;

  if (config_.mode == SinkMode::kStream) {
    std::string key;
    (void)config_.stream->key.render(input, key);  // names only the change's entity: never skips
    const std::string id = fmt::format("{}-{}", change.lsn, change.seq);
    std::string& entry = scratch.text;
    entry.clear();
    const EncodeContext context{pending.batch->source_name, pending.batch->connector, now_us(),
                                nullptr};
    encode_change(config_.stream->format, change, context, entry);
    const std::string maxlen =
        config_.stream->maxlen ? std::to_string(*config_.stream->maxlen) : std::string();
    args.assign({"XADD", key});
    if (config_.stream->maxlen) args.insert(args.end(), {"MAXLEN", "~", maxlen});
    args.insert(args.end(), {id, "change", entry});
    add_command(pending, args, CommandKind::kStreamAdd, index, 0);
    return ok();
  }

  // The change's distinct keys: scratch.keys[0, key_count), their buffers reused.
  scratch.key_count = 0;
  auto add = [&](const ChangeTemplate& key_template, const TemplateInput& from) -> Status {
    if (scratch.key_count == scratch.keys.size()) scratch.keys.emplace_back();
    std::string& key = scratch.keys[scratch.key_count];
    key.clear();
    auto rendered = key_template.render(from, key);
    if (!rendered) return tl::unexpected(rendered.error());
    if (!*rendered) {
      if (&from == &input) metrics_->templates_skipped.Increment();
      return ok();
    }
    const auto first = scratch.keys.begin();
    if (std::find(first, first + static_cast<std::ptrdiff_t>(scratch.key_count), key) ==
        first + static_cast<std::ptrdiff_t>(scratch.key_count)) {
      ++scratch.key_count;
    }
    return ok();
  };
  const KeyRule* rule = nullptr;
  for (const auto& candidate : config_.keys) {
    if (::fnmatch(candidate.pattern.c_str(), change.entity.c_str(), 0) == 0) {
      rule = &candidate;
      break;
    }
  }
  if (rule != nullptr) {
    std::optional<TemplateInput> old_key_input;
    if (!change.old_key.empty()) {
      old_key_input.emplace(change, pending.batch->source_name, change.old_key);
    }
    for (const auto& key_template : rule->templates) {
      Status added = add(key_template, input);
      // An update that changed the key also invalidates what was cached under the old one.
      if (added && old_key_input && key_template.reads(RowImage::kKey)) {
        added = add(key_template, *old_key_input);
      }
      if (!added) return added;
    }
  }
  const std::span<const std::string> keys(scratch.keys.data(), scratch.key_count);

  if (config_.mode == SinkMode::kInvalidate && !keys.empty()) {
    if (config_.cluster) {
      // In a cluster a command's keys must share a hash slot: one command per slot. A fence key
      // shares its key's slot (fence.h).
      for (const auto& slot_keys : group_by_slot({keys.begin(), keys.end()})) {
        plan_invalidation(pending, index, slot_keys, scratch);
      }
    } else {
      plan_invalidation(pending, index, keys, scratch);
    }
  }

  if (config_.publish) {
    std::string channel;
    (void)config_.publish->render(input, channel);  // names only the change's entity: never skips
    std::string& notice = scratch.text;
    notice.assign("{\"entity\":");
    json::append_string(notice, change.entity);
    notice += ",\"key\":";
    json::append_raw_or_null(notice, change.key);
    notice += ",\"operation\":";
    json::append_string(notice, to_string(change.operation));
    notice += ",\"lsn\":";
    json::append_integer(notice, change.lsn);
    notice += ",\"keys\":[";
    for (std::size_t k = 0; k < keys.size(); ++k) {
      if (k > 0) notice += ',';
      json::append_string(notice, keys[k]);
    }
    notice += "]}";
    args.assign({"PUBLISH", channel, notice});
    add_command(pending, args, CommandKind::kPublish, index, 0);
  }
  return ok();
}

void RedisSink::plan_invalidation(Pending& pending, std::size_t index,
                                  std::span<const std::string> keys, Scratch& scratch) {
  const Change& change = pending.batch->changes[index];
  auto& args = scratch.args;
  const std::string_view verb = config_.command == DeleteCommand::kDel ? "DEL" : "UNLINK";
  if (config_.fence_ttl) {
    scratch.fences.resize(std::max(scratch.fences.size(), keys.size()));
    for (std::size_t k = 0; k < keys.size(); ++k) scratch.fences[k] = fence_key(keys[k]);
    const std::string count = std::to_string(keys.size() * 2);
    const std::string position = fence_position(change.lsn, change.seq);
    const std::string ttl = std::to_string(config_.fence_ttl->count());
    args.assign({"EVALSHA", fence_sha_, count});
    for (std::size_t k = 0; k < keys.size(); ++k) {
      args.push_back(keys[k]);
      args.push_back(scratch.fences[k]);
    }
    args.insert(args.end(), {position, ttl, verb});
    add_command(pending, args, CommandKind::kFencedDelete, index, keys.size());
  } else {
    args.assign({verb});
    args.insert(args.end(), keys.begin(), keys.end());
    add_command(pending, args, CommandKind::kDelete, index, keys.size());
  }
  if (config_.double_delete) {
    // The second delete is a plain one: the fence already holds this change's position, so
    // the fence script would leave the key alone; deleting a key never makes it stale.
    args.assign({verb});
    args.insert(args.end(), keys.begin(), keys.end());
    if (!pending.second_deletes) pending.second_deletes = std::make_unique<Pending>();
    add_command(*pending.second_deletes, args, CommandKind::kSecondDelete, index, keys.size());
  }
}

void RedisSink::write(BatchPtr batch, AckFn ack) {
  PendingWrites::Guard writing(writers_);
  auto not_running = [this] {
    return DeliveryReport{Error{"redis sink " + context_.name + " is not running", false}, {}};
  };
  if (stopping_) return ack(not_running());
  PendingPtr pending = plan(std::move(batch), std::move(ack));
  const std::size_t commands = pending->window_commands();
  const std::uint64_t bytes = pending->window_bytes();
  std::unique_lock lock(mutex_);
  // A batch larger than the whole window goes alone.
  room_.wait(lock, [&] {
    return stopping_ || window_commands_ == 0 ||
           (window_commands_ + commands <= config_.window_commands &&
            window_bytes_ + bytes <= config_.window_bytes);
  });
  if (stopping_ || !started_) {
    lock.unlock();
    return pending->ack(not_running());
  }
  window_commands_ += commands;
  window_bytes_ += bytes;
  ++unacknowledged_;
  incoming_.push_back(std::move(pending));
  work_.notify_one();
}

// ---- the pipeline thread ----

void RedisSink::run_pipeline() {
  name_this_thread("redis", context_.name);
  while (take_work()) {
    complete_confirmed();
    if (in_flight_.empty()) continue;
    if (Status connected = ensure_connected(); !connected) {
      metrics_->reply_error("CONNECTION");
      if (!connected.error().retryable) {
        fail_in_flight(connected.error());
      } else {
        retry_after(connected.error());
      }
      continue;
    }
    if (draining_ && unreplied_ == 0) {
      // Every reply of the commands sent before the failure has been read: resend from the first
      // unconfirmed one.
      Error error = *draining_;
      draining_.reset();
      if (reload_script_) {
        reload_script_ = false;
        if (Status loaded = load_fence_script(); !loaded) {
          retry_after(loaded.error());
        } else {
          rewind();
        }
      } else {
        retry_after(error);
      }
      continue;
    }
    if (!draining_) send_unsent();
    if (unreplied_ > 0) read_reply();
  }
}

bool RedisSink::take_work() {
  std::unique_lock lock(mutex_);
  while (!stopping_ && incoming_.empty() && in_flight_.empty()) {
    if (delayed_.empty()) {
      work_.wait(lock);
    } else if (delayed_.front().due <= Clock::now()) {
      break;
    } else {
      work_.wait_until(lock, delayed_.front().due);
    }
  }
  if (stopping_) return false;
  for (auto& pending : incoming_) in_flight_.push_back(std::move(pending));
  incoming_.clear();
  lock.unlock();
  const auto now = Clock::now();
  while (!delayed_.empty() && delayed_.front().due <= now) {
    in_flight_.push_back(std::move(delayed_.front().deletes));
    delayed_.pop_front();
  }
  return true;
}

void RedisSink::send_unsent() {
  for (; send_index_ < in_flight_.size(); ++send_index_) {
    Pending& pending = *in_flight_[send_index_];
    if (pending.sent < pending.commands.size()) {
      const std::size_t from = pending.commands[pending.sent].offset;
      connection_->append_formatted(std::string_view(pending.resp).substr(from));
      unreplied_ += pending.commands.size() - pending.sent;
      pending.sent = pending.commands.size();
    }
  }
}

void RedisSink::read_reply() {
  auto reply = connection_->read_reply();
  if (!reply) {
    metrics_->reply_error("CONNECTION");
    connection_.reset();
    unreplied_ = 0;
    draining_.reset();
    reload_script_ = false;
    if (!stopping_) retry_after(reply.error());
    return;
  }
  --unreplied_;
  metrics_->commands.Increment();
  // Replies come in the order the commands were sent, from the first unconfirmed one on.
  auto at = std::find_if(in_flight_.begin(), in_flight_.end(), [](const PendingPtr& pending) {
    return pending->confirmed < pending->commands.size();
  });
  Pending& pending = **at;
  const PlannedCommand& command = pending.commands[pending.confirmed];
  if (draining_) {
    // Sent after a command that must be retried: resent with it, judged then. The reply is
    // read only to keep the connection in step; which command it answers does not matter.
    if (is_error(**reply)) metrics_->reply_error(error_code(reply_text(**reply)));
    return;
  }
  check_reply(pending, command, **reply);
  if (draining_) return;  // this command is resent, so is everything after it
  ++pending.confirmed;
  backoff_.reset();
  retrying_ = false;
  if (pending.confirmed == pending.commands.size()) complete_confirmed();
}

void RedisSink::check_reply(Pending& pending, const PlannedCommand& command,
                            const redisReply& reply) {
  if (!is_error(reply)) {
    switch (command.kind) {
      case CommandKind::kFencedDelete:
        if (reply.type == REDIS_REPLY_INTEGER && reply.integer > 0) {
          metrics_->fenced.Increment(static_cast<double>(reply.integer));
        }
        [[fallthrough]];
      case CommandKind::kDelete:
        metrics_->keys_invalidated.Increment(static_cast<double>(command.keys));
        break;
      case CommandKind::kSecondDelete:
        metrics_->second_deletes.Increment();
        break;
      case CommandKind::kPublish:
        metrics_->notices_published.Increment();
        break;
      case CommandKind::kStreamAdd:
        metrics_->stream_entries.Increment();
        break;
    }
    return;
  }
  const std::string message = reply_text(reply);
  metrics_->reply_error(error_code(message));
  switch (classify_error(message)) {
    case ReplyErrorKind::kRetryable:
      draining_ = Error{"Redis " + config_.connection.describe() + ": " + message, true};
      return;
    case ReplyErrorKind::kNoScript:
      draining_ = Error{"Redis " + config_.connection.describe() + ": " + message, true};
      reload_script_ = true;
      return;
    case ReplyErrorKind::kMoved:
    case ReplyErrorKind::kAsk:
    case ReplyErrorKind::kPermanent:
      break;
  }
  if (command.kind == CommandKind::kStreamAdd &&
      message.find(kStreamIdTooSmall) != std::string::npos) {
    metrics_->stream_duplicates.Increment();
    return;
  }
  const std::size_t key_argument = command.kind == CommandKind::kFencedDelete ? 3 : 1;
  const std::string what = describe_command(
      std::string_view(pending.resp).substr(command.offset, command.length), key_argument);
  if (pending.batch == nullptr) {
    context_.log->warn("redis sink '{}': Redis refused the second delete {}: {}", context_.name,
                       what, message);
    return;
  }
  if (!pending.rejected[command.change]) {
    pending.rejected[command.change] = true;
    pending.report.rejected.push_back({command.change, "Redis refused " + what + ": " + message});
  }
}

void RedisSink::complete_confirmed() {
  while (!in_flight_.empty() &&
         in_flight_.front()->confirmed == in_flight_.front()->commands.size()) {
    PendingPtr done = std::move(in_flight_.front());
    in_flight_.pop_front();
    if (send_index_ > 0) --send_index_;
    if (done->batch == nullptr) {  // second deletes
      {
        std::lock_guard lock(mutex_);
        second_deletes_due_ -= done->commands.size();
      }
      release_window(done->commands.size(), done->resp.size());
      continue;
    }
    if (done->second_deletes) {
      // They keep their share of the window until Redis confirms them too.
      {
        std::lock_guard lock(mutex_);
        second_deletes_due_ += done->second_deletes->commands.size();
      }
      delayed_.push_back({Clock::now() + *config_.double_delete, std::move(done->second_deletes)});
    }
    const std::int64_t acknowledged_us = now_us();
    for (const auto& change : done->batch->changes) {
      if (change.timestamp_us > 0) {
        metrics_->latency.Observe(
            static_cast<double>(std::max<std::int64_t>(0, acknowledged_us - change.timestamp_us)) /
            1e6);
      }
    }
    std::sort(done->report.rejected.begin(), done->report.rejected.end(),
              [](const RejectedChange& a, const RejectedChange& b) { return a.index < b.index; });
    done->ack(std::move(done->report));
    {
      std::lock_guard lock(mutex_);
      --unacknowledged_;
    }
    release_window(done->commands.size(), done->resp.size());
  }
}

void RedisSink::release_window(std::size_t commands, std::uint64_t bytes) {
  {
    std::lock_guard lock(mutex_);
    window_commands_ -= commands;
    window_bytes_ -= bytes;
  }
  room_.notify_all();
  idle_.notify_all();
}

void RedisSink::rewind() {
  for (auto& pending : in_flight_) pending->sent = pending->confirmed;
  send_index_ = 0;
}

void RedisSink::retry_after(const Error& error) {
  retrying_ = true;
  std::size_t unconfirmed = 0;
  for (const auto& pending : in_flight_)
    unconfirmed += pending->commands.size() - pending->confirmed;
  const auto wait = backoff_.next();
  context_.log->warn("redis sink '{}': {}; resending {} command(s) in {} ms", context_.name,
                     error.message, unconfirmed, wait.count());
  {
    std::unique_lock lock(mutex_);
    work_.wait_for(lock, wait, [this] { return stopping_.load(); });
  }
  if (context_.metrics.retries != nullptr) context_.metrics.retries->Increment();
  rewind();
}

void RedisSink::fail_in_flight(const Error& error) {
  std::size_t dropped = 0;
  for (auto& pending : in_flight_) {
    if (pending->batch == nullptr) {
      dropped += pending->commands.size();
      release_window(pending->commands.size(), pending->resp.size());
      continue;
    }
    if (pending->second_deletes) {
      release_window(pending->second_deletes->commands.size(),
                     pending->second_deletes->resp.size());
    }
    pending->ack(DeliveryReport{error, {}});
    {
      std::lock_guard lock(mutex_);
      --unacknowledged_;
    }
    release_window(pending->commands.size(), pending->resp.size());
  }
  in_flight_.clear();
  send_index_ = 0;
  unreplied_ = 0;
  draining_.reset();
  if (dropped > 0) {
    metrics_->second_deletes_dropped.Increment(static_cast<double>(dropped));
    std::lock_guard lock(mutex_);
    second_deletes_due_ -= dropped;
  }
}

Status RedisSink::flush(Deadline deadline) {
  std::unique_lock lock(mutex_);
  if (!idle_.wait_until(lock, deadline,
                        [this] { return unacknowledged_ == 0 && second_deletes_due_ == 0; })) {
    return fail_retryable("redis sink " + context_.name + ": " + std::to_string(unacknowledged_) +
                          " write(s) still waiting for Redis to confirm them, and " +
                          std::to_string(second_deletes_due_) + " second delete(s)");
  }
  return ok();
}

void RedisSink::stop() {
  std::call_once(stop_once_, [this] { shutdown(); });
}

void RedisSink::shutdown() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  room_.notify_all();
  // The pipeline thread sees stopping_ within one I/O slice.
  if (pipeline_.joinable()) pipeline_.join();
  {
    std::lock_guard lock(mutex_);
    for (auto& pending : incoming_) in_flight_.push_back(std::move(pending));
    incoming_.clear();
  }
  for (auto& waiting : delayed_) in_flight_.push_back(std::move(waiting.deletes));
  delayed_.clear();
  std::size_t second_deletes = 0;
  for (const auto& pending : in_flight_) {
    if (pending->batch == nullptr) second_deletes += pending->commands.size();
  }
  if (second_deletes > 0) {
    context_.log->warn(
        "redis sink '{}': stopped with {} second delete(s) (double_delete) not yet confirmed; "
        "they are dropped",
        context_.name, second_deletes);
  }
  fail_in_flight(
      Error{"redis sink " + context_.name + " stopped before Redis confirmed the batch", true});
  // Writers see stopping_, fail their acks and return.
  writers_.wait_idle();
  connection_.reset();
}

}  // namespace redis

namespace {

std::unique_ptr<Sink> make_redis_sink(config::Node& options, const SinkContext& context) {
  auto config = redis::parse_redis_sink_config(options);
  if (!config) return nullptr;
  return std::make_unique<redis::RedisSink>(std::move(*config), context);
}

}  // namespace

void register_sink_redis(PluginRegistry& registry) { registry.add_sink("redis", make_redis_sink); }

}  // namespace cdcd
