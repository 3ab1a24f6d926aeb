#include "checkpoint/redis/redis_checkpoint_store.h"

#include <chrono>

#include <hiredis/hiredis.h>
#include <nlohmann/json.hpp>

#include "daemon/redis/redis_options.h"

namespace cdcd {

namespace redis {

namespace {

// KEYS: lock, hash. ARGV: our token, the consumer, [the checkpoint]. Writes only while the lock
// is ours.
constexpr const char* kSaveScript = R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
)lua";

constexpr const char* kRemoveScript = R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
)lua";

// KEYS: lock. ARGV: the holder's token we found dead, our token.
constexpr const char* kTakeOverScript = R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
)lua";

// KEYS: lock. ARGV: our token.
constexpr const char* kReleaseScript = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
)lua";

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string run_id_from_info(const std::string& info) {
  auto at = info.find("run_id:");
  if (at == std::string::npos) return "";
  auto end = info.find_first_of("\r\n", at);
  return info.substr(at + 7, end - at - 7);
}

}  // namespace

RedisCheckpointStore::RedisCheckpointStore(RedisCheckpointStoreOptions options,
                                           CheckpointStoreContext context)
    : options_(std::move(options)),
      context_(std::move(context)),
      hash_key_(options_.key_prefix + "checkpoints"),
      lock_key_(options_.key_prefix + "checkpoints:lock") {}

RedisCheckpointStore::~RedisCheckpointStore() {
  std::lock_guard lock(mutex_);
  if (connection_ != nullptr && !token_.empty()) {
    (void)connection_->call({"EVAL", kReleaseScript, "1", lock_key_, token_});
  }
}

std::string RedisCheckpointStore::describe() const {
  return "Redis checkpoint store " + options_.connection.describe() + " (" + hash_key_ + ")";
}

Status RedisCheckpointStore::start() {
  std::lock_guard lock(mutex_);
  if (auto connected = connect_locked(); !connected) return connected;
  started_ = true;
  return ok();
}

Result<Reply> RedisCheckpointStore::call_locked(const Command& command) {
  if (connection_ == nullptr) {
    if (auto connected = connect_locked(); !connected) return tl::unexpected(connected.error());
  }
  auto reply = connection_->call(command);
  if (!reply) {
    connection_.reset();
    token_.clear();
    return reply;
  }
  if (is_error(**reply)) {
    const std::string message = reply_text(**reply);
    return tl::unexpected(Error{describe() + ": " + command[0] + " failed: " + message,
                                classify_error(message) == ReplyErrorKind::kRetryable});
  }
  return reply;
}

Status RedisCheckpointStore::connect_locked() {
  auto opened = Connection::open(options_.connection);
  if (!opened) return tl::unexpected(opened.error());
  connection_ = std::move(*opened);
  if (auto taken = take_lock_locked(); !taken) {
    connection_.reset();
    return taken;
  }
  return ok();
}

Status RedisCheckpointStore::take_lock_locked() {
  auto id = connection_->call({"CLIENT", "ID"});
  auto info =
      id ? connection_->call({"INFO", "server"}) : Result<Reply>(tl::unexpected(id.error()));
  if (!info) return tl::unexpected(info.error());
  if (is_error(**id) || is_error(**info)) {
    return fail(describe() +
                ": CLIENT ID or INFO refused: " + reply_text(is_error(**id) ? **id : **info));
  }
  const std::string run_id = run_id_from_info(reply_text(**info));
  const std::string token = run_id + ":" + std::to_string((*id)->integer);
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto set = connection_->call({"SET", lock_key_, token, "NX"});
    if (!set) return tl::unexpected(set.error());
    if ((*set)->type == REDIS_REPLY_STATUS) {
      token_ = token;
      return ok();
    }
    auto holder = connection_->call({"GET", lock_key_});
    if (!holder) return tl::unexpected(holder.error());
    if ((*holder)->type != REDIS_REPLY_STRING) continue;  // released meanwhile: try again
    const std::string held_by = reply_text(**holder);
    const auto colon = held_by.rfind(':');
    bool alive = false;
    if (colon != std::string::npos && held_by.substr(0, colon) == run_id) {
      auto clients = connection_->call({"CLIENT", "LIST", "ID", held_by.substr(colon + 1)});
      if (!clients) return tl::unexpected(clients.error());
      alive = !is_error(**clients) && !reply_text(**clients).empty();
    }
    if (alive) {
      return fail(describe() + " is in use by another cdcd process (its Redis connection, client " +
                  held_by.substr(colon + 1) + ", is open)");
    }
    auto taken = connection_->call({"EVAL", kTakeOverScript, "1", lock_key_, held_by, token});
    if (!taken) return tl::unexpected(taken.error());
    if ((*taken)->type == REDIS_REPLY_INTEGER && (*taken)->integer == 1) {
      context_.log->info("{}: took over the lock of a process that is gone ({})", describe(),
                         held_by);
      token_ = token;
      return ok();
    }
  }
  return fail(describe() + " is in use by another cdcd process (its lock keeps changing hands)");
}

Result<std::optional<Checkpoint>> RedisCheckpointStore::load(const std::string& consumer) {
  std::lock_guard lock(mutex_);
  auto reply = call_locked({"HGET", hash_key_, consumer});
  if (!reply) return tl::unexpected(reply.error());
  if ((*reply)->type == REDIS_REPLY_NIL) return std::optional<Checkpoint>();
  try {
    auto json = nlohmann::json::parse(reply_text(**reply));
    Checkpoint checkpoint;
    checkpoint.lsn = json.at("lsn").get<std::uint64_t>();
    checkpoint.offset = json.at("offset").get<std::uint64_t>();
    checkpoint.commit_time_us = json.at("commit_time_us").get<std::int64_t>();
    checkpoint.saved_at_us = json.at("saved_at_us").get<std::int64_t>();
    checkpoint.segment = json.value("segment", std::uint64_t{0});
    return std::optional<Checkpoint>(checkpoint);
  } catch (const nlohmann::json::exception& error) {
    return fail(describe() + ": the checkpoint of consumer " + consumer +
                " is not what cdcd writes: " + error.what());
  }
}

Status RedisCheckpointStore::guarded_write_locked(const std::string& script,
                                                  const std::string& consumer,
                                                  const std::vector<std::string>& arguments) {
  if (!started_) return fail(describe() + " is not started");
  Command command{"EVAL", script, "2", lock_key_, hash_key_, token_, consumer};
  command.insert(command.end(), arguments.begin(), arguments.end());
  if (connection_ == nullptr) {
    if (auto connected = connect_locked(); !connected) return connected;
    command[5] = token_;
  }
  auto reply = call_locked(command);
  if (!reply) return tl::unexpected(reply.error());
  if ((*reply)->type != REDIS_REPLY_INTEGER || (*reply)->integer != 1) {
    token_.clear();
    return fail(describe() + " is in use by another cdcd process: it took the lock over");
  }
  if (options_.wait_replicas > 0) {
    auto waited = call_locked({"WAIT", std::to_string(options_.wait_replicas),
                               std::to_string(options_.wait_timeout.count())});
    if (!waited) return tl::unexpected(waited.error());
    if ((*waited)->integer < options_.wait_replicas) {
      return fail_retryable(describe() + ": only " + std::to_string((*waited)->integer) + " of " +
                            std::to_string(options_.wait_replicas) +
                            " replicas confirmed the checkpoint within the wait timeout");
    }
  }
  return ok();
}

Status RedisCheckpointStore::save(const std::string& consumer, const Checkpoint& checkpoint) {
  nlohmann::json json = {{"lsn", checkpoint.lsn},
                         {"offset", checkpoint.offset},
                         {"commit_time_us", checkpoint.commit_time_us},
                         {"saved_at_us", now_us()},
                         {"segment", checkpoint.segment}};
  std::lock_guard lock(mutex_);
  return guarded_write_locked(kSaveScript, consumer, {json.dump()});
}

Status RedisCheckpointStore::remove(const std::string& consumer) {
  std::lock_guard lock(mutex_);
  return guarded_write_locked(kRemoveScript, consumer, {});
}

}  // namespace redis

namespace {

// redis://[:PASSWORD@]HOST:PORT/DB?key=PREFIX (or rediss://): the connection URL, and the prefix
// of the store's keys from `key`, the only query parameter.
Result<YAML::Node> options_from_redis_url(const std::string& url) {
  YAML::Node options;
  auto query = url.find('?');
  options["url"] = url.substr(0, query);
  if (query == std::string::npos) return options;
  const std::string parameter = url.substr(query + 1);
  if (parameter.rfind("key=", 0) != 0 || parameter.size() == 4 ||
      parameter.find('&') != std::string::npos) {
    return fail("the only query parameter of a redis checkpoint store URL is key=PREFIX, got \"?" +
                parameter + "\"");
  }
  options["key_prefix"] = parameter.substr(4);
  return options;
}

}  // namespace

void register_checkpoint_redis(PluginRegistry& registry) {
  registry.add_checkpoint_store_scheme("redis", "redis", options_from_redis_url);
  registry.add_checkpoint_store_scheme("rediss", "redis", options_from_redis_url);
  registry.add_checkpoint_store(
      "redis",
      [](config::Node& options,
         const CheckpointStoreContext& context) -> std::unique_ptr<CheckpointStore> {
        const auto errors = options.diagnostics().errors();
        options.mark_known({"interval"});  // the runtime's commit interval, not the store's
        redis::RedisCheckpointStoreOptions parsed;
        if (auto connection = redis::parse_connection_options(options)) {
          parsed.connection = *connection;
        }
        parsed.key_prefix = options.string("key_prefix").value_or(parsed.key_prefix);
        config::Node wait = options.child("wait");
        if (wait.defined() && wait.expect_map()) {
          parsed.wait_replicas =
              static_cast<int>(wait.integer("replicas", 1, 1000, /*required=*/true).value_or(1));
          parsed.wait_timeout = wait.duration("timeout").value_or(parsed.wait_timeout);
          wait.check_unknown_keys();
        }
        options.check_unknown_keys();
        if (options.diagnostics().errors() != errors) return nullptr;
        return std::make_unique<redis::RedisCheckpointStore>(std::move(parsed), context);
      });
}

}  // namespace cdcd
