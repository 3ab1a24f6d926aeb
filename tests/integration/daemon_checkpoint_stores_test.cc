// Issue 11: consumers that keep their checkpoints in stores of their own, named by URL (a real
// redis-server, a second directory) beside the top-level store. Each store holds only its own
// consumers' checkpoints; `cdcd checkpoint` and a restart use the consumer's own store.

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/daemon_fixture.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;

constexpr int kChanges = 200;

bool has_file(const std::string& dir, const std::string& name) {
  return std::filesystem::exists(std::filesystem::path(dir) / name);
}

class DaemonCheckpointStoresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    generate_changelog(log_path_, kChanges, 30, 5, 1763719200000000);
    log_ = read_native_file(log_path_);
    ASSERT_EQ(log_.changes.size(), static_cast<std::size_t>(kChanges));
    config_ = write_config(dir_, R"(
sources:
  log: {type: jsonl, path: )" + log_path_ +
                                     R"(, follow: false}
sinks:
  top_out: {type: file, path: )" + out("top") +
                                     R"(, format: native}
  cache_out: {type: file, path: )" + out("cache") +
                                     R"(, format: native}
  archive_out: {type: file, path: )" +
                                     out("archive") + R"(, format: native}
checkpoints: {type: file, dir: )" + top_dir_ +
                                     R"(, interval: 100ms}
consumers:
  top: {source: log, sinks: [top_out]}
  cache:
    source: log
    sinks: [cache_out]
    checkpoints: "redis://127.0.0.1:)" +
                                     std::to_string(redis_.port()) + R"(/0?key=cdcd:test:"
  archive: {source: log, sinks: [archive_out], checkpoints: "file://)" +
                                     archive_dir_ + R"("}
log: {level: info}
)");
  }

  std::string out(const std::string& consumer) const { return dir_.file(consumer + ".jsonl"); }

  CommandResult checkpoint(const std::vector<std::string>& args, const std::string& consumer) {
    std::vector<std::string> argv{"checkpoint"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--config", config_, "--consumer", consumer});
    return run_cdcd(argv);
  }

  // The lsns delivered to `consumer`'s sink, in order.
  std::vector<std::uint64_t> delivered(const std::string& consumer) const {
    std::vector<std::uint64_t> lsns;
    for (const auto& change : read_native_file(out(consumer)).changes) lsns.push_back(change.lsn);
    return lsns;
  }

  std::vector<std::uint64_t> log_lsns(std::uint64_t after = 0) const {
    std::vector<std::uint64_t> lsns;
    for (const auto& change : log_.changes) {
      if (change.lsn > after) lsns.push_back(change.lsn);
    }
    return lsns;
  }

  TempDir dir_;
  RedisServer redis_;
  std::string log_path_ = dir_.file("changes.jsonl");
  std::string top_dir_ = dir_.file("top-checkpoints");
  std::string archive_dir_ = dir_.file("archive-checkpoints");
  NativeFile log_;
  std::string config_;
};

TEST_F(DaemonCheckpointStoresTest, EachConsumerKeepsItsCheckpointInItsOwnStore) {
  auto validated = run_cdcd({"validate", "--config", config_});
  ASSERT_EQ(validated.exit_code, 0) << validated.err << validated.out;

  auto run = run_cdcd({"run", "--config", config_}, scaled(60s));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  for (const std::string consumer : {"top", "cache", "archive"}) {
    EXPECT_EQ(delivered(consumer), log_lsns()) << consumer;
  }

  // Each store holds exactly its own consumers' checkpoints.
  EXPECT_TRUE(has_file(top_dir_, "top.json"));
  EXPECT_FALSE(has_file(top_dir_, "cache.json"));
  EXPECT_FALSE(has_file(top_dir_, "archive.json"));
  EXPECT_TRUE(has_file(archive_dir_, "archive.json"));
  EXPECT_FALSE(has_file(archive_dir_, "top.json"));
  EXPECT_EQ(redis_.cli({"HKEYS", "cdcd:test:checkpoints"}), "cache");

  const std::string last = std::to_string(log_.changes.back().lsn);
  for (const std::string consumer : {"top", "cache", "archive"}) {
    auto shown = checkpoint({"show"}, consumer);
    EXPECT_EQ(shown.exit_code, 0) << shown.err;
    EXPECT_NE(shown.out.find("lsn " + last + ","), std::string::npos) << consumer << shown.out;
  }

  // Rewinding the consumer whose store is Redis replays it alone.
  const std::uint64_t middle = log_.changes[kChanges / 2].lsn;
  auto set = checkpoint({"set", "--lsn", std::to_string(middle)}, "cache");
  ASSERT_EQ(set.exit_code, 0) << set.err;
  run = run_cdcd({"run", "--config", config_}, scaled(60s));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(delivered("top"), log_lsns());
  EXPECT_EQ(delivered("archive"), log_lsns());
  auto expected_cache = log_lsns();
  for (auto lsn : log_lsns(middle)) expected_cache.push_back(lsn);
  EXPECT_EQ(delivered("cache"), expected_cache);
}

TEST_F(DaemonCheckpointStoresTest, AnUnreachableConsumerStoreIsNamedWhileStarting) {
  redis_.stop();
  DaemonProcess daemon(config_, dir_.path());
  daemon.start();
  EXPECT_TRUE(wait_until(
      [&] {
        return daemon.stderr_text().find("checkpoint store consumers.cache.checkpoints (redis)") !=
               std::string::npos;
      },
      scaled(30s)))
      << daemon.stderr_text();
  EXPECT_EQ(daemon.stderr_text().find("127.0.0.1:" + std::to_string(redis_.port()) + "/0?key"),
            std::string::npos);
  redis_.start();
  EXPECT_EQ(daemon.wait(scaled(60s)), 0) << daemon.stderr_text();
  EXPECT_EQ(delivered("cache"), log_lsns());
}

}  // namespace
}  // namespace cdcd::test
