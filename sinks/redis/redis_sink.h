#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "daemon/core/backoff.h"
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

// Invalidates cache keys in Redis, or appends changes to streams, or publishes notices of them
// (see docs/sinks/redis.md).
//
// Threads: write() runs on the consumers' threads. It turns the batch into RESP commands there,
// queues them (blocking while the window of unconfirmed commands is full: backpressure) and
// returns; one pipeline thread owns the connection. It sends every queued command as soon as it is
// queued, also while earlier batches' replies are still outstanding, reads and checks the replies
// in order, and acknowledges each batch (in write order, exactly once) when the last of its
// replies has been checked. Batches are queued in the order of their write() calls, so every
// writer's commands reach Redis in its write order.
//
// Retryable failures (connection loss, timeout, LOADING, BUSY, TRYAGAIN, OOM, ...) resend every
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
  enum class CommandKind : std::uint8_t {
    kDelete,        // UNLINK/DEL of a change's keys
    kFencedDelete,  // EVALSHA of the fence script
    kSecondDelete,  // double_delete's later UNLINK/DEL
    kPublish,       // PUBLISH of a change's notice
    kStreamAdd,     // XADD of a change
  };
  struct PlannedCommand {
    std::uint32_t offset = 0;  // of its RESP in Pending::resp
    std::uint32_t length = 0;
    std::uint32_t change = 0;  // index in the batch
    std::uint32_t keys = 0;    // cache keys it deletes
    CommandKind kind = CommandKind::kDelete;
  };
  // The commands of one batch, queued and not yet acknowledged; or, without a batch, the second
  // deletes of one (double_delete).
  struct Pending {
    BatchPtr batch;
    AckFn ack;
    std::string resp;  // every command, back to back
    std::vector<PlannedCommand> commands;
    DeliveryReport report;
    std::vector<bool> rejected;  // by change index
    // double_delete: the second deletes, queued once this batch is acknowledged.
    std::unique_ptr<Pending> second_deletes;
    std::size_t sent = 0;       // commands sent on the current connection
    std::size_t confirmed = 0;  // commands whose reply has been read and checked

    // Its share of the window, with its second deletes.
    std::size_t window_commands() const {
      return commands.size() + (second_deletes ? second_deletes->commands.size() : 0);
    }
    std::size_t window_bytes() const {
      return resp.size() + (second_deletes ? second_deletes->resp.size() : 0);
    }
  };
  using PendingPtr = std::unique_ptr<Pending>;
  struct DelayedDeletes {
    std::chrono::steady_clock::time_point due;
    PendingPtr deletes;
  };
  struct Metrics;
  // Buffers reused from one change of a batch to the next.
  struct Scratch {
    std::vector<std::string> keys;
    std::size_t key_count = 0;
    std::vector<std::string> fences;
    std::vector<std::string_view> args;
    std::string text;
  };

  // Turns a batch into its commands (on the writer's thread). Changes whose keys cannot be
  // rendered are rejected in the report.
  PendingPtr plan(BatchPtr batch, AckFn ack);
  // Appends the commands of one change; fails when a row image is not a JSON object.
  Status plan_change(Pending& pending, std::size_t index, Scratch& scratch);
  // The deletes (fenced or not, and the second ones) of `keys` of change `index`.
  void plan_invalidation(Pending& pending, std::size_t index, std::span<const std::string> keys,
                         Scratch& scratch);
  static void add_command(Pending& pending, std::span<const std::string_view> args,
                          CommandKind kind, std::size_t change, std::size_t keys);

  // The pipeline thread.
  void run_pipeline();
  // Moves queued batches and due second deletes to in_flight_, waiting while there is nothing to
  // do; false once stopping.
  bool take_work();
  void send_unsent();
  void read_reply();
  void check_reply(Pending& pending, const PlannedCommand& command, const redisReply& reply);
  // Acknowledges the batches at the front whose every reply has been checked.
  void complete_confirmed();
  // Waits out a backoff after a retryable failure and rewinds to the first unconfirmed command.
  void retry_after(const Error& error);
  void rewind();
  // Fails every batch in flight (a permanent connection failure, or stop()).
  void fail_in_flight(const Error& error);
  // Gives back the window share of `commands` commands of `bytes` bytes.
  void release_window(std::size_t commands, std::uint64_t bytes);
  Status ensure_connected();
  Status load_fence_script();
  void shutdown();

  const RedisSinkConfig config_;
  const SinkContext context_;
  const std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Metrics> metrics_;
  const std::string fence_sha_;  // SHA-1 of kFenceScript

  // Shared between writers, flush() and the pipeline thread.
  std::mutex mutex_;
  std::condition_variable work_;  // the pipeline thread: something queued, or stop
  std::condition_variable room_;  // writers: the window has room
  std::condition_variable idle_;  // flush(): an ack fired
  std::vector<PendingPtr> incoming_;
  std::size_t window_commands_ = 0;
  std::uint64_t window_bytes_ = 0;
  std::size_t unacknowledged_ = 0;      // write() calls whose ack has not fired
  std::size_t second_deletes_due_ = 0;  // second-delete commands not yet confirmed
  bool started_ = false;

  // Owned by the pipeline thread.
  Connector connector_;  // a server, or a Redis Cluster (cluster: true)
  std::unique_ptr<Client> connection_;
  std::deque<PendingPtr> in_flight_;
  std::size_t send_index_ = 0;     // the first entry of in_flight_ with unsent commands
  std::size_t unreplied_ = 0;      // commands sent whose reply has not been read
  std::optional<Error> draining_;  // a retry is due once the outstanding replies are read
  bool reload_script_ = false;
  std::deque<DelayedDeletes> delayed_;
  Backoff backoff_{std::chrono::milliseconds(100), std::chrono::seconds(5)};

  std::thread pipeline_;
  PendingWrites writers_;
  std::once_flag stop_once_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> retrying_{false};
};

}  // namespace redis
}  // namespace cdcd
