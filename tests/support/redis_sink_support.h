#pragma once

#include <hiredis/hiredis.h>

#include <memory>
#include <string>
#include <vector>

#include "daemon/core/change.h"
#include "daemon/metrics/metrics.h"
#include "daemon/plugin/sink.h"

namespace cdcd::test {

// What the Redis sink's tests share: a plain hiredis client and a MONITOR reader, independent of
// the sink's own connection code, and the sink driven one batch at a time.

class RedisClient {
 public:
  explicit RedisClient(int port);
  ~RedisClient() { redisFree(context_); }
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // The reply as text: a string, status, error ("ERR ..."), integer, or "(nil)".
  std::string run(const std::vector<std::string>& args);
  bool exists(const std::string& key) { return run({"EXISTS", key}) == "1"; }
  redisContext* context() { return context_; }

  static std::string describe(const redisReply& reply);

 private:
  redisContext* context_;
};

// Follows MONITOR: every UNLINK the server executed (directly or inside the fence script), in
// order. A sentinel ECHO marks how far the feed must be read.
class Monitor {
 public:
  explicit Monitor(int port);
  std::vector<std::string> unlinked_keys();

 private:
  RedisClient client_;
  RedisClient control_;
  int sentinels_ = 0;
  std::vector<std::string> keys_;
};

// A `type: redis` sink from its YAML options, started; null (and a test failure) when it cannot be.
std::unique_ptr<Sink> started_sink(const std::string& yaml, Metrics& metrics);

BatchPtr batch_of(std::vector<Change> changes);
DeliveryReport write_and_wait(Sink& sink, BatchPtr batch);
// The sum of every sample of metric `name` in `metrics`' registry.
double metric(Metrics& metrics, const std::string& name);

}  // namespace cdcd::test
