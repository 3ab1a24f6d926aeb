// The Redis checkpoint store against a real redis-server: the checkpoint store conformance suite
// (the tests the file store passes), the lock's take-over after a holder dies, and WAIT.

#include <memory>

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "checkpoint/redis/redis_checkpoint_store.h"
#include "tests/support/checkpoint_store_conformance.h"
#include "tests/support/redis_server.h"

namespace cdcd::redis {
namespace {

using test::RedisServer;

std::unique_ptr<CheckpointStore> make_store(const RedisServer& server, int wait_replicas = 0) {
  RedisCheckpointStoreOptions options;
  options.connection = *parse_url(server.url());
  options.key_prefix = "test:";
  options.wait_replicas = wait_replicas;
  options.wait_timeout = std::chrono::milliseconds(200);
  return std::make_unique<RedisCheckpointStore>(options,
                                                CheckpointStoreContext{spdlog::default_logger()});
}

// Each harness: a fresh redis-server (fresh, empty storage).
class RedisStoreHarness : public test::CheckpointStoreHarness {
 public:
  std::unique_ptr<CheckpointStore> make_store() override { return redis::make_store(server_); }

 private:
  RedisServer server_;
};

const bool registered = [] {
  test::register_checkpoint_store_conformance("RedisCheckpointStoreConformance",
                                              [] { return std::make_unique<RedisStoreHarness>(); });
  return true;
}();

TEST(RedisCheckpointStoreTest, TheLockOfAProcessThatIsGoneIsTakenOverAtOnce) {
  RedisServer server;
  const std::string info = server.cli({"INFO", "server"});
  const auto at = info.find("run_id:") + 7;
  const std::string run_id = info.substr(at, info.find_first_of("\r\n", at) - at);
  // Holders that died without releasing the lock (kill -9): one whose connection is gone, one
  // from before a server restart.
  for (const std::string& dead : {run_id + ":99999", std::string("an-earlier-server-run:3")}) {
    server.cli({"SET", "test:checkpoints:lock", dead});
    auto store = make_store(server);
    auto started = store->start();
    ASSERT_TRUE(started) << dead << ": " << started.error().message;
    ASSERT_TRUE(store->save("orders", Checkpoint{7, 8, 9, 0, 10}));
  }
}

TEST(RedisCheckpointStoreTest, AStoreWhoseLockWasTakenOverNeverWritesAgain) {
  RedisServer server;
  auto store = make_store(server);
  ASSERT_TRUE(store->start());
  ASSERT_TRUE(store->save("orders", Checkpoint{1, 1, 1, 0, 0}));
  server.cli({"SET", "test:checkpoints:lock", "someone-else:1"});
  auto saved = store->save("orders", Checkpoint{2, 2, 2, 0, 0});
  ASSERT_FALSE(saved);
  EXPECT_NE(saved.error().message.find("in use"), std::string::npos) << saved.error().message;
  EXPECT_NE(server.cli({"HGET", "test:checkpoints", "orders"}).find("\"lsn\":1"),
            std::string::npos);
}

TEST(RedisCheckpointStoreTest, WaitFailsASaveNoReplicaConfirmed) {
  RedisServer server;
  auto store = make_store(server, /*wait_replicas=*/1);
  ASSERT_TRUE(store->start());
  auto saved = store->save("orders", Checkpoint{1, 1, 1, 0, 0});
  ASSERT_FALSE(saved);
  EXPECT_TRUE(saved.error().retryable);
  EXPECT_NE(saved.error().message.find("replicas"), std::string::npos) << saved.error().message;
}

}  // namespace
}  // namespace cdcd::redis
