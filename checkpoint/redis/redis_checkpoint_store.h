#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "daemon/plugin/checkpoint_store.h"
#include "daemon/plugin/registry.h"
#include "daemon/redis/redis_connection.h"

namespace cdcd {

// Registers `checkpoints: {type: redis}`.
void register_checkpoint_redis(PluginRegistry& registry);

namespace redis {

struct RedisCheckpointStoreOptions {
  ConnectionSettings connection;
  // Checkpoints live in the hash KEY_PREFIX + "checkpoints", one field per consumer; the lock in
  // KEY_PREFIX + "checkpoints:lock".
  std::string key_prefix = "cdcd:";
  // After each save, WAIT for this many replicas (0: do not wait).
  int wait_replicas = 0;
  std::chrono::milliseconds wait_timeout{1000};
};

// Checkpoints in a Redis hash (see docs/sinks/redis.md, "Checkpoint store"). A save is one
// HSET, atomic in Redis; it is as durable as the server's persistence (appendonly with
// appendfsync always for a save that survives a power loss), and with `wait` it is also on
// that many replicas when it returns.
//
// One store holds the storage at a time: start() takes a lock whose value names this store's
// Redis connection (server run id and client id). A second store finds the holder's connection
// still open and is refused; a holder that died has no connection left (or the server restarted
// since), so its lock is taken over at once, with no expiry to wait for. Every save and remove
// checks the lock in the same script, so a store that lost it never writes.
class RedisCheckpointStore final : public CheckpointStore {
 public:
  RedisCheckpointStore(RedisCheckpointStoreOptions options, CheckpointStoreContext context);
  ~RedisCheckpointStore() override;

  Status start() override;
  Result<std::optional<Checkpoint>> load(const std::string& consumer) override;
  Status save(const std::string& consumer, const Checkpoint& checkpoint) override;
  Status remove(const std::string& consumer) override;

 private:
  // Connects (again, after a lost connection) and takes the lock. Holds mutex_.
  Status connect_locked();
  Status take_lock_locked();
  // Runs a command on the connection, dropping the connection when it fails.
  Result<Reply> call_locked(const Command& command);
  // Runs a write guarded by the lock: `script` gets KEYS {lock, hash} and ARGV {token, ...}.
  Status guarded_write_locked(const std::string& script, const std::string& consumer,
                              const std::vector<std::string>& arguments);
  std::string describe() const;

  const RedisCheckpointStoreOptions options_;
  const CheckpointStoreContext context_;
  const std::string hash_key_;
  const std::string lock_key_;
  std::mutex mutex_;
  std::unique_ptr<Connection> connection_;
  std::string token_;  // our lock value, while we hold it
  bool started_ = false;
};

}  // namespace redis
}  // namespace cdcd
