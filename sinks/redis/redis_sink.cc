#include "sinks/redis/redis_sink.h"

#include <fnmatch.h>

#include <algorithm>
#include <chrono>

#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>

#include "daemon/core/backoff.h"
#include "daemon/redis/cluster_slots.h"
#include "sinks/redis/fence.h"

namespace cdcd {

namespace redis {

namespace {

// Commands sent before their replies are read: large enough to hide the round trip, small enough
// that a retry after a lost connection resends little.
constexpr std::size_t kPipelineWindow = 8192;

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

}  // namespace

struct RedisSink::Metrics {
  Metrics(prometheus::Registry& registry, const std::string& sink, SinkMetrics sink_metrics)
      : registry_(registry),
        sink_(sink),
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

  prometheus::Registry& registry_;
  std::string sink_;
  prometheus::Counter& commands;
  prometheus::Counter& keys_invalidated;
  prometheus::Counter& fenced;
  prometheus::Counter& templates_skipped;
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
  if (auto connected = ensure_connected(); !connected) return connected;
  started_ = true;
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
    return fail("Redis " + config_.connection.describe() +
                ": SCRIPT LOAD answered an unexpected digest for the fence script");
  }
  return ok();
}

Status RedisSink::plan_change(const Batch& batch, std::size_t index,
                              std::vector<PlannedCommand>& out) {
  const Change& change = batch.changes[index];
  const KeyRule* rule = nullptr;
  for (const auto& candidate : config_.keys) {
    if (::fnmatch(candidate.pattern.c_str(), change.entity.c_str(), 0) == 0) {
      rule = &candidate;
      break;
    }
  }
  if (rule == nullptr) return ok();
  const TemplateInput input(change, batch.source_name);
  std::optional<TemplateInput> old_key_input;
  if (!change.old_key.empty()) old_key_input.emplace(change, batch.source_name, change.old_key);

  std::vector<std::string> keys;
  auto add = [&](const ChangeTemplate& key_template, const TemplateInput& from) -> Status {
    std::string key;
    auto rendered = key_template.render(from, key);
    if (!rendered) return tl::unexpected(rendered.error());
    if (!*rendered) {
      if (&from == &input) metrics_->templates_skipped.Increment();
      return ok();
    }
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(std::move(key));
    return ok();
  };
  for (const auto& key_template : rule->templates) {
    Status added = add(key_template, input);
    // An update that changed the key also invalidates what was cached under the old one.
    if (added && old_key_input && key_template.reads(RowImage::kKey)) {
      added = add(key_template, *old_key_input);
    }
    if (!added) return added;
  }
  if (keys.empty()) return ok();

  const std::string verb = config_.command == DeleteCommand::kDel ? "DEL" : "UNLINK";
  // In a cluster a command's keys must share a hash slot: one command per slot. A fence key
  // shares its key's slot (fence.h).
  auto groups = config_.cluster ? group_by_slot(std::move(keys))
                                : std::vector<std::vector<std::string>>{std::move(keys)};
  for (auto& slot_keys : groups) {
    PlannedCommand command;
    command.change = index;
    command.keys = slot_keys.size();
    if (config_.fence_ttl) {
      command.args.reserve(slot_keys.size() * 2 + 6);
      command.args = {"EVALSHA", fence_sha_, std::to_string(slot_keys.size() * 2)};
      for (auto& key : slot_keys) {
        command.args.push_back(key);
        command.args.push_back(fence_key(key));
      }
      command.args.push_back(fence_position(change.lsn, change.seq));
      command.args.push_back(std::to_string(config_.fence_ttl->count()));
      command.args.push_back(verb);
    } else {
      command.args.reserve(slot_keys.size() + 1);
      command.args.push_back(verb);
      for (auto& key : slot_keys) command.args.push_back(std::move(key));
    }
    out.push_back(std::move(command));
  }
  return ok();
}

void RedisSink::write(BatchPtr batch, AckFn ack) {
  PendingWrites::Guard pending(pending_);
  DeliveryReport report;
  std::vector<PlannedCommand> commands;
  for (std::size_t i = 0; i < batch->changes.size(); ++i) {
    if (auto planned = plan_change(*batch, i, commands); !planned) {
      report.rejected.push_back({i, "cannot render its cache keys: " + planned.error().message});
    }
  }
  std::lock_guard lock(mutex_);
  if (stopping_ || !started_) {
    return ack(DeliveryReport{Error{"redis sink " + context_.name + " is not running", false}, {}});
  }
  if (auto done = execute(*batch, commands, report); !done) {
    return ack(DeliveryReport{done.error(), {}});
  }
  const std::int64_t acknowledged_us = now_us();
  for (const auto& change : batch->changes) {
    if (change.timestamp_us > 0) {
      metrics_->latency.Observe(
          static_cast<double>(std::max<std::int64_t>(0, acknowledged_us - change.timestamp_us)) /
          1e6);
    }
  }
  std::sort(report.rejected.begin(), report.rejected.end(),
            [](const RejectedChange& a, const RejectedChange& b) { return a.index < b.index; });
  ack(std::move(report));
}

Status RedisSink::execute(const Batch& batch, const std::vector<PlannedCommand>& commands,
                          DeliveryReport& report) {
  std::vector<bool> rejected(batch.changes.size(), false);
  for (const auto& r : report.rejected) rejected[r.index] = true;
  Backoff backoff(std::chrono::milliseconds(100), std::chrono::seconds(5));
  std::size_t next = 0;  // the first command without a checked reply
  while (next < commands.size()) {
    if (stopping_) break;
    Status connected = ensure_connected();
    std::optional<Error> transient;
    bool reload_script = false;
    if (!connected) {
      if (!connected.error().retryable) return connected;
      transient = connected.error();
      metrics_->reply_error("CONNECTION");
    } else {
      const std::size_t end = std::min(commands.size(), next + kPipelineWindow);
      for (std::size_t i = next; i < end; ++i) {
        connection_->append(commands[i].args);
      }
      // Every reply is read, also after a failure, so that the connection stays in step. From
      // the first command that must be retried on, every later one is resent too, in order.
      std::optional<std::size_t> first_unconfirmed;
      for (std::size_t i = next; i < end; ++i) {
        auto reply = connection_->read_reply();
        if (!reply) {
          transient = reply.error();
          metrics_->reply_error("CONNECTION");
          connection_.reset();
          if (!first_unconfirmed) first_unconfirmed = i;
          break;
        }
        metrics_->commands.Increment();
        const redisReply& answer = **reply;
        const PlannedCommand& command = commands[i];
        if (!is_error(answer)) {
          if (first_unconfirmed) continue;
          metrics_->keys_invalidated.Increment(static_cast<double>(command.keys));
          if (answer.type == REDIS_REPLY_INTEGER && config_.fence_ttl && answer.integer > 0) {
            metrics_->fenced.Increment(static_cast<double>(answer.integer));
          }
          continue;
        }
        const std::string message = reply_text(answer);
        metrics_->reply_error(error_code(message));
        switch (classify_error(message)) {
          case ReplyErrorKind::kRetryable:
            transient = Error{"Redis " + config_.connection.describe() + ": " + message, true};
            if (!first_unconfirmed) first_unconfirmed = i;
            break;
          case ReplyErrorKind::kNoScript:
            reload_script = true;
            if (!first_unconfirmed) first_unconfirmed = i;
            break;
          case ReplyErrorKind::kMoved:
          case ReplyErrorKind::kAsk:
          case ReplyErrorKind::kPermanent:
            if (first_unconfirmed) break;  // resent with the rest; judged then
            if (!rejected[command.change]) {
              rejected[command.change] = true;
              report.rejected.push_back(
                  {command.change, "Redis refused " + command.args[0] + " of key " +
                                       command.args[config_.fence_ttl ? 3 : 1] + ": " + message});
            }
            break;
        }
      }
      next = first_unconfirmed.value_or(end);
    }
    if (reload_script && !transient && connection_ != nullptr) {
      if (auto loaded = load_fence_script(); !loaded) transient = loaded.error();
      if (!transient) continue;
    }
    if (!transient) {
      backoff.reset();
      retrying_ = false;
      continue;
    }
    retrying_ = true;
    auto wait = backoff.next();
    context_.log->warn("redis sink '{}': {}; resending {} command(s) in {} ms", context_.name,
                       transient->message, commands.size() - next, wait.count());
    if (sleep_unless_stopping(wait)) break;
    if (context_.metrics.retries != nullptr) context_.metrics.retries->Increment();
  }
  retrying_ = false;
  if (next < commands.size()) {
    return fail_retryable("redis sink " + context_.name + " stopped before Redis confirmed " +
                          std::to_string(commands.size() - next) + " command(s)");
  }
  return ok();
}

bool RedisSink::sleep_unless_stopping(std::chrono::milliseconds wait) {
  std::unique_lock lock(wake_mutex_);
  return wake_.wait_for(lock, wait, [this] { return stopping_.load(); });
}

Status RedisSink::flush(Deadline deadline) {
  if (!pending_.wait_idle(deadline)) {
    return fail_retryable("redis sink " + context_.name +
                          ": a write is still waiting for Redis to confirm it");
  }
  return ok();
}

void RedisSink::stop() {
  std::call_once(stop_once_, [this] { shutdown(); });
}

void RedisSink::shutdown() {
  {
    std::lock_guard lock(wake_mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  // Writers see stopping_ within one I/O slice, fail their acks and return.
  pending_.wait_idle();
  std::lock_guard lock(mutex_);
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
