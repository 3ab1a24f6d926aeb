// The whole daemon under SIGKILL: 100,000 changes through two consumers with different filters
// while the daemon is killed at random moments and restarted, then a clean SIGTERM run. Checks
// at-least-once delivery, per-key order, that re-deliveries only follow the committed checkpoint,
// and that a clean stop leaves nothing to re-deliver.

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/daemon_fixture.h"
#include "tests/support/log_appender.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;

constexpr int kChanges = 100'000;
constexpr int kKeysPerEntity = 500;
constexpr int kKills = 6;
constexpr int kChunkChanges = 400;
constexpr auto kChunkPeriod = 20ms;

// What was on disk once a killed run was dead.
struct KillRecord {
  // The output's complete lines: a kill inside write() can leave part of a line after them, which
  // the file sink removes when the next run starts, so that run's lines begin here.
  std::uint64_t output_size = 0;
  std::uint64_t checkpoint_lsn = 0;  // 0: no checkpoint yet
};

std::uint64_t complete_lines_size(const std::string& path) {
  const std::string text = read_file(path);
  const auto last_newline = text.rfind('\n');
  return last_newline == std::string::npos ? 0 : last_newline + 1;
}

struct ConsumerUnderTest {
  std::string name;
  std::string output;
  std::function<bool(const NativeChange&)> wants;
  std::vector<KillRecord> kills;
};

std::string position(const NativeChange& change) {
  return std::to_string(change.lsn) + "/" + std::to_string(change.seq);
}

bool before(const NativeChange& a, const NativeChange& b) {
  return a.lsn < b.lsn || (a.lsn == b.lsn && a.seq < b.seq);
}

// Checks one consumer's output against the change log after kills.size() killed runs and one
// final run.
void verify_consumer(const ConsumerUnderTest& consumer, const NativeFile& log) {
  SCOPED_TRACE("consumer " + consumer.name);
  NativeFile output = read_native_file(consumer.output);
  EXPECT_TRUE(output.unparsed.empty())
      << output.unparsed.size() << " unparseable lines in " << consumer.output
      << " (a line torn by SIGKILL?), first: " << output.unparsed.front();
  EXPECT_TRUE(output.ends_with_newline);

  std::map<std::string, const NativeChange*> expected;
  for (const auto& change : log.changes) {
    if (consumer.wants(change)) expected[position(change)] = &change;
  }
  ASSERT_GT(expected.size(), 10'000u);

  // The run each output line belongs to: run r ended with kills[r] (the last run ended cleanly).
  auto run_of = [&](std::uint64_t offset) {
    std::size_t run = 0;
    while (run < consumer.kills.size() && offset >= consumer.kills[run].output_size) ++run;
    return run;
  };

  std::map<std::string, std::size_t> first_run;  // position -> run of its first occurrence
  std::map<std::string, const NativeChange*> last_of_key_first;
  std::map<std::pair<std::size_t, std::string>, const NativeChange*> last_of_key_in_run;
  std::size_t duplicates = 0;
  int reported = 0;
  auto report = [&](const std::string& message) {
    ADD_FAILURE() << message;
    return ++reported < 20;
  };
  for (const auto& change : output.changes) {
    const std::string pos = position(change);
    auto wanted = expected.find(pos);
    if (wanted == expected.end()) {
      if (!report("delivered a change the consumer does not want: " + change.describe())) return;
      continue;
    }
    if (!change.same_change(*wanted->second)) {
      if (!report("delivered " + change.describe() + " differs from the log's " +
                  wanted->second->describe()))
        return;
    }
    const std::size_t run = run_of(change.offset);
    if (run > 0 && change.lsn <= consumer.kills[run - 1].checkpoint_lsn) {
      if (!report("run " + std::to_string(run) + " delivered " + change.describe() +
                  " at or before the checkpoint committed when run " + std::to_string(run - 1) +
                  " was killed (lsn " + std::to_string(consumer.kills[run - 1].checkpoint_lsn) +
                  ")"))
        return;
    }
    const std::string key = change.entity + change.key;
    auto& previous_in_run = last_of_key_in_run[{run, key}];
    if (previous_in_run && !before(*previous_in_run, change)) {
      if (!report("run " + std::to_string(run) + " delivered " + change.describe() + " after " +
                  previous_in_run->describe()))
        return;
    }
    previous_in_run = &change;

    auto [first, inserted] = first_run.emplace(pos, run);
    if (!inserted) {
      ++duplicates;
      // A re-delivery is legitimate only in a later run, after a crash.
      if (first->second == run) {
        if (!report("delivered twice within run " + std::to_string(run) + ": " + change.describe()))
          return;
      }
      continue;
    }
    auto& previous_first = last_of_key_first[key];
    if (previous_first && !before(*previous_first, change)) {
      if (!report("first delivery of " + change.describe() + " came after that of " +
                  previous_first->describe()))
        return;
    }
    previous_first = &change;
  }

  // What a checkpoint names was in the output when the run died: nothing is lost by resuming there.
  for (std::size_t kill = 0; kill < consumer.kills.size(); ++kill) {
    std::set<std::string> written;
    for (const auto& change : output.changes) {
      if (change.end <= consumer.kills[kill].output_size) written.insert(position(change));
    }
    std::size_t absent = 0;
    for (const auto& [pos, change] : expected) {
      if (change->lsn > consumer.kills[kill].checkpoint_lsn || written.count(pos)) continue;
      if (++absent <= 3) {
        ADD_FAILURE() << "the checkpoint at lsn " << consumer.kills[kill].checkpoint_lsn
                      << " left by kill " << kill << " covers " << change->describe()
                      << ", which was not in the output yet";
      }
    }
  }

  std::size_t missing = 0;
  for (const auto& [pos, change] : expected) {
    if (first_run.count(pos)) continue;
    if (++missing <= 5) ADD_FAILURE() << "never delivered: " << change->describe();
  }
  EXPECT_EQ(missing, 0u) << "of " << expected.size() << " expected changes";
  std::cout << "consumer " << consumer.name << ": " << expected.size() << " expected, "
            << output.changes.size() << " lines, " << duplicates << " re-delivered after kills\n";
}

TEST(DaemonCrashTest, SigkillAtRandomMomentsLosesNothingAndKeepsPerKeyOrder) {
  const auto test_start = std::chrono::steady_clock::now();
  TempDir dir;
  const std::string generated = dir.file("generated.jsonl");
  const std::string log_path = dir.file("changes.jsonl");
  const std::string checkpoints = dir.file("checkpoints");
  generate_changelog(generated, kChanges, kKeysPerEntity);
  const std::string log_text = read_file(generated);
  const NativeFile log = read_native_file(generated);
  ASSERT_EQ(log.changes.size(), static_cast<std::size_t>(kChanges));
  ASSERT_TRUE(log.unparsed.empty());
  const std::uint64_t last_lsn = log.changes.back().lsn;
  write_file(log_path, "");

  std::vector<ConsumerUnderTest> consumers{
      {"a",
       dir.file("a.jsonl"),
       [](const NativeChange& c) { return c.entity.rfind("public.", 0) == 0; },
       {}},
      {"b",
       dir.file("b.jsonl"),
       [](const NativeChange& c) {
         return c.entity != "public.orders" &&
                (c.operation == "insert" || c.operation == "update" || c.operation == "delete");
       },
       {}}};

  int port = 0;
  auto write_daemon_config = [&] {
    port = free_port();
    write_config(dir, R"(
sources:
  log: {type: jsonl, path: )" +
                          log_path + R"(, follow: true, poll_interval: 20ms}
sinks:
  out_a: {type: file, path: )" +
                          consumers[0].output + R"(, format: native, fsync: never}
  out_b: {type: file, path: )" +
                          consumers[1].output + R"(, format: native, fsync: never}
checkpoints: {type: file, dir: )" +
                          checkpoints + R"(, interval: 200ms}
consumers:
  a:
    source: log
    sinks: [out_a]
    entities: ["public.*"]
    batch: {max_events: 200, max_wait: 20ms}
  b:
    source: log
    sinks: [out_b]
    exclude_entities: ["public.orders"]
    operations: [insert, update, delete]
    batch: {max_events: 200, max_wait: 20ms}
metrics: {listen: 127.0.0.1:)" +
                          std::to_string(port) + R"(}
log: {level: info}
)");
  };
  auto checkpoint_of = [&](const ConsumerUnderTest& consumer) -> std::uint64_t {
    auto checkpoint = read_checkpoint_file(checkpoints + "/" + consumer.name + ".json");
    return checkpoint ? checkpoint->lsn : 0;
  };

  std::uint64_t seed = std::random_device{}();
  if (const char* fixed = std::getenv("CDCD_TEST_SEED")) seed = std::strtoull(fixed, nullptr, 10);
  std::cout << "kill schedule seed " << seed << " (set CDCD_TEST_SEED to repeat it)\n";
  std::mt19937_64 random(seed);
  std::uniform_int_distribution<int> delay_ms(100, 700);

  write_daemon_config();
  DaemonProcess daemon(dir.file("cdcd.yaml"), dir.path());
  std::vector<std::string> run_logs;
  LogAppender appender(log_path, log, log_text, kChunkChanges, kChunkPeriod);
  appender.start();

  for (int kill = 0; kill < kKills; ++kill) {
    write_daemon_config();
    daemon.start();
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(random)));
    ASSERT_TRUE(daemon.running()) << "the daemon exited on its own before kill " << kill << ":\n"
                                  << daemon.stderr_text();
    EXPECT_FALSE(appender.done()) << "kill " << kill << " came after the whole log was written";
    daemon.kill();
    run_logs.push_back(daemon.stderr_text());
    // The checkpoint files as the dead process left them: where the restart resumes.
    for (auto& consumer : consumers) {
      consumer.kills.push_back({complete_lines_size(consumer.output), checkpoint_of(consumer)});
      if (auto torn = file_size(consumer.output) - consumer.kills.back().output_size) {
        std::cout << "kill " << kill << " left " << torn << " bytes of a partial line in "
                  << consumer.name << "'s output\n";
      }
    }
    std::cout << "kill " << kill << ": " << appender.chunks_written() << "/" << appender.chunks()
              << " chunks appended, checkpoints a=" << consumers[0].kills.back().checkpoint_lsn
              << " b=" << consumers[1].kills.back().checkpoint_lsn << "\n";
  }
  appender.join();
  ASSERT_EQ(appender.error(), "");

  // Checkpoints never move backwards across crashes.
  for (const auto& consumer : consumers) {
    for (std::size_t i = 1; i < consumer.kills.size(); ++i) {
      EXPECT_GE(consumer.kills[i].checkpoint_lsn, consumer.kills[i - 1].checkpoint_lsn)
          << consumer.name << " after kill " << i;
    }
  }

  // The final run reads to the end and stops cleanly on SIGTERM.
  write_daemon_config();
  daemon.start();
  for (const auto& consumer : consumers) {
    ASSERT_TRUE(
        wait_for_checkpoint(checkpoints + "/" + consumer.name + ".json", last_lsn, scaled(90s)))
        << consumer.name << " never checkpointed lsn " << last_lsn << "; at "
        << checkpoint_of(consumer) << "\n"
        << daemon.stderr_text();
  }
  EXPECT_EQ(daemon.stop(scaled(30s)), 0) << daemon.stderr_text();
  for (const auto& consumer : consumers) EXPECT_EQ(checkpoint_of(consumer), last_lsn);
  run_logs.push_back(daemon.stderr_text());
  // Restarts resume at the checkpointed byte offset (no rescan), and nothing goes wrong on the way.
  for (std::size_t run = 0; run < run_logs.size(); ++run) {
    for (const char* problem : {" error [", " critical [", "no longer matches", "truncated"}) {
      EXPECT_EQ(run_logs[run].find(problem), std::string::npos)
          << "run " << run << " logged \"" << problem << "\":\n"
          << run_logs[run];
    }
  }

  for (const auto& consumer : consumers) verify_consumer(consumer, log);

  // A restart after the clean stop has nothing to re-deliver. Proof that it had every chance to:
  // one more transaction, wanted by both consumers, appended after the restart. The log is read
  // and checkpointed in order, so once each consumer checkpointed it, each had read, handled and
  // seen acknowledged everything before it; by then a re-delivery would have been counted.
  std::map<std::string, std::size_t> lines;
  for (const auto& consumer : consumers) {
    lines[consumer.name] = read_native_file(consumer.output).changes.size();
  }
  const std::uint64_t sentinel_lsn = last_lsn + 1;
  const std::string sentinel =
      R"({"lsn":)" + std::to_string(sentinel_lsn) + R"(,"seq":0,"timestamp":)" +
      std::to_string(log.changes.back().timestamp_us + 1000) +
      R"(,"entity":"public.customers","key":{"id":-1},"operation":"insert","old":null,)" +
      R"("new":{"id":-1,"note":"after the clean stop"}})" + "\n" + commit_marker_line(sentinel_lsn);
  write_daemon_config();
  daemon.start();
  {
    int fd = ::open(log_path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, sentinel.data(), sentinel.size()), static_cast<ssize_t>(sentinel.size()));
    ::close(fd);
  }
  std::vector<MetricSample> samples;
  ASSERT_TRUE(wait_until(
      [&] {
        samples = scrape(port);
        return metric_value(samples, "cdcd_consumer_checkpoint_lsn", {{"consumer", "a"}}) ==
                   static_cast<double>(sentinel_lsn) &&
               metric_value(samples, "cdcd_consumer_checkpoint_lsn", {{"consumer", "b"}}) ==
                   static_cast<double>(sentinel_lsn);
      },
      scaled(30s)))
      << daemon.stderr_text();
  for (const auto& consumer : consumers) {
    EXPECT_EQ(metric_sum(samples, "cdcd_events_total", {{"consumer", consumer.name}}), 1)
        << consumer.name << ": only the new transaction is delivered";
  }
  EXPECT_EQ(daemon.stop(scaled(30s)), 0) << daemon.stderr_text();
  for (const auto& consumer : consumers) {
    NativeFile output = read_native_file(consumer.output);
    ASSERT_EQ(output.changes.size(), lines[consumer.name] + 1)
        << consumer.name << ": the restart after a clean stop re-delivered changes";
    EXPECT_EQ(output.changes.back().lsn, sentinel_lsn) << consumer.name;
    EXPECT_EQ(checkpoint_of(consumer), sentinel_lsn);
  }
  std::cout << "took "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - test_start)
                   .count()
            << " ms\n";
}

}  // namespace
}  // namespace cdcd::test
