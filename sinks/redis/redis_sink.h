#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>

#include "daemon/plugin/registry.h"
#include "daemon/plugin/sink.h"
#include "daemon/redis/redis_connection.h"
#include "daemon/redis/redis_connector.h"
#include "sinks/common/pending_writes.h"
#include "sinks/redis/redis_sink_config.h"

namespace cdcd {

// Registers `type: redis`.
void register_sink_redis(PluginRegistry& registry);

namespace redis {

// Invalidates cache keys in Redis (see docs/sinks/redis.md).
//
// Threads: write() runs on the consumers' threads and acknowledges before it returns. Writers take
// turns on one connection (the mutex is held from a batch's first command to its last reply), so
// the commands of a batch, and of every batch written before it, reach Redis in write order.
// A batch's commands are pipelined and it is acknowledged only once every reply has been read and
// checked. Retryable failures (connection loss, LOADING, BUSY, TRYAGAIN, OOM, ...) resend every
// command from the first unconfirmed one on, in order, with backoff, until stop(); a NOSCRIPT
// reply loads the fence script and resends; any other error reply rejects that change.
class RedisSink final : public Sink {
 public:
  RedisSink(RedisSinkConfig config, SinkContext context);
  ~RedisSink() override;
  RedisSink(const RedisSink&) = delete;
  RedisSink& operator=(const RedisSink&) = delete;

  Status start() override;
  void write(BatchPtr batch, AckFn ack) override;
  Status flush(Deadline deadline) override;
  void stop() override;
  bool healthy() const override { return !retrying_ && !stopping_; }

 private:
  struct PlannedCommand {
    Command args;
    std::size_t change = 0;  // index in the batch
    std::size_t keys = 0;    // cache keys it invalidates
  };
  struct Metrics;

  // Appends the command that invalidates the change's keys, if it has any; fails when a row image
  // is not a JSON object.
  Status plan_change(const Batch& batch, std::size_t index, std::vector<PlannedCommand>& out);
  // Runs `commands` until each has a checked reply; rejected changes go to `report`. Returns a
  // failure only when stopped first.
  Status execute(const Batch& batch, const std::vector<PlannedCommand>& commands,
                 DeliveryReport& report);
  Status ensure_connected();
  Status load_fence_script();
  bool sleep_unless_stopping(std::chrono::milliseconds wait);
  void shutdown();

  const RedisSinkConfig config_;
  const SinkContext context_;
  const std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Metrics> metrics_;
  const std::string fence_sha_;  // SHA-1 of kFenceScript

  // Held by write() from a batch's first command to its last reply.
  std::timed_mutex mutex_;
  Connector connector_;  // a server, or a Redis Cluster (cluster: true)
  std::unique_ptr<Client> connection_;
  bool started_ = false;

  PendingWrites pending_;
  std::mutex wake_mutex_;
  std::condition_variable wake_;
  std::once_flag stop_once_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> retrying_{false};
};

}  // namespace redis
}  // namespace cdcd
