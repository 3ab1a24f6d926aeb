// Issue 11: the whole daemon invalidating Redis keys (jsonl source -> `type: redis` with the
// version fence) while it is SIGKILLed at random moments as the log grows. Every key was filled
// before the first run: afterwards each key that a change touched is gone, and each key that no
// change touched is still there. An acknowledgement before Redis confirmed a delete would leave a
// touched key behind once the checkpoint passed its change.

#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/daemon_fixture.h"
#include "tests/support/log_appender.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;

constexpr int kChanges = 30'000;
constexpr int kKeysPerEntity = 400;
constexpr int kUntouchedKeysPerEntity = 50;
constexpr int kKills = 5;
constexpr std::size_t kChunkChanges = 150;
constexpr auto kChunkPeriod = 40ms;

std::string cache_key(const std::string& entity, long id) {
  return entity + ":" + std::to_string(id);
}

TEST(RedisCrashTest, EveryTouchedKeyIsInvalidatedThroughSigkills) {
  TempDir dir;
  RedisServer redis;
  const std::string generated = dir.file("generated.jsonl");
  const std::string log_path = dir.file("changes.jsonl");
  generate_changelog(generated, kChanges, kKeysPerEntity);
  const std::string text = read_file(generated);
  const NativeFile log = read_native_file(generated);
  ASSERT_EQ(log.changes.size(), static_cast<std::size_t>(kChanges));

  std::set<std::string> entities;
  std::set<std::string> touched;
  for (const auto& change : log.changes) {
    entities.insert(change.entity);
    touched.insert(cache_key(change.entity, nlohmann::json::parse(change.key)["id"].get<long>()));
  }
  std::vector<std::string> fill{"MSET"};
  for (const auto& entity : entities) {
    for (long id = 1; id <= kKeysPerEntity + kUntouchedKeysPerEntity; ++id) {
      fill.push_back(cache_key(entity, id));
      fill.push_back("cached");
    }
  }
  ASSERT_EQ(redis.cli(fill), "OK");

  write_file(log_path, "");
  const std::string checkpoints = dir.file("checkpoints");
  write_config(dir, "sources:\n  log: {type: jsonl, path: " + log_path +
                        ", follow: true, poll_interval: 20ms}\n"
                        "sinks:\n  cache:\n    type: redis\n    url: \"" +
                        redis.url() +
                        "\"\n    keys: {\"*\": [\"{schema}.{table}:{key.id}\"]}\n"
                        "    fence: {ttl: 10m}\n"
                        "checkpoints: {type: file, dir: " +
                        checkpoints +
                        ", interval: 100ms}\n"
                        "consumers:\n  c:\n    source: log\n    sinks: [cache]\n"
                        "    batch: {max_events: 300, max_wait: 20ms}\n"
                        "log: {level: info}\n");

  DaemonProcess daemon(dir.file("cdcd.yaml"), dir.path());
  LogAppender appender(log_path, log, text, kChunkChanges, kChunkPeriod);
  appender.start();
  ASSERT_TRUE(kill_at_random_moments(daemon, appender, checkpoints + "/c.json", kKills));
  appender.join();
  ASSERT_EQ(appender.error(), "");
  daemon.start();
  ASSERT_TRUE(wait_for_checkpoint(checkpoints + "/c.json", log.changes.back().lsn, scaled(120s)))
      << daemon.stderr_text();
  EXPECT_EQ(daemon.stop(scaled(30s)), 0) << daemon.stderr_text();

  std::vector<std::string> keys;
  // --no-raw: one numbered line per value, "(nil)" for a missing key.
  std::vector<std::string> get{"--no-raw", "MGET"};
  for (const auto& entity : entities) {
    for (long id = 1; id <= kKeysPerEntity + kUntouchedKeysPerEntity; ++id) {
      keys.push_back(cache_key(entity, id));
      get.push_back(keys.back());
    }
  }
  std::vector<std::string> values;
  std::istringstream lines(redis.cli(get));
  for (std::string line; std::getline(lines, line);) values.push_back(line);
  ASSERT_EQ(values.size(), keys.size());
  std::size_t left_behind = 0;
  std::size_t lost = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const bool exists = values[i].find("\"cached\"") != std::string::npos;
    if (touched.count(keys[i]) && exists && ++left_behind <= 5) {
      ADD_FAILURE() << keys[i] << " was touched by a change but is still cached";
    }
    if (!touched.count(keys[i]) && !exists && ++lost <= 5) {
      ADD_FAILURE() << keys[i] << " was touched by no change but is gone";
    }
  }
  EXPECT_EQ(left_behind, 0u);
  EXPECT_EQ(lost, 0u);
  EXPECT_GT(touched.size(), 1000u);
}

}  // namespace
}  // namespace cdcd::test
