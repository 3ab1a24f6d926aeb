// The cdcd command line against the real binary: validate, --version, checkpoint show|set|reset
// and their effect on a replay (a jsonl source without follow, which ends with exit 0), on_error
// policies, and the start modes.

#include <algorithm>
#include <functional>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/support/daemon_fixture.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;

constexpr int kChanges = 300;
constexpr std::int64_t kStartTimeUs = 1763719200000000;  // 2025-11-21T10:00:00Z

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

class DaemonCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    generate_changelog(log_path_, kChanges, 40, 7, kStartTimeUs);
    log_ = read_native_file(log_path_);
    ASSERT_EQ(log_.changes.size(), static_cast<std::size_t>(kChanges));
  }

  // A replay config: the jsonl source without follow, a native file sink, file checkpoints, and
  // `consumer_options` (YAML lines indented for the consumer's map).
  std::string write_replay_config(const std::string& consumer_options = "",
                                  const std::string& source_path = "") {
    return write_config(dir_, R"(
sources:
  log: {type: jsonl, path: )" + (source_path.empty() ? log_path_ : source_path) +
                                  R"(, follow: false}
sinks:
  out: {type: file, path: )" + out_path_ +
                                  R"(, format: native}
  dead: {type: file, path: )" + dead_path_ +
                                  R"(, format: native}
checkpoints: {type: file, dir: )" +
                                  dir_.file("checkpoints") + R"(, interval: 100ms}
consumers:
  replay:
    source: log
    sinks: [out]
    batch: {max_events: 64, max_wait: 20ms}
)" + consumer_options + R"(
log: {level: info}
)");
  }

  CommandResult run_replay(const std::string& config) {
    return run_cdcd({"run", "--config", config}, scaled(60s));
  }

  CommandResult checkpoint(const std::string& config, const std::vector<std::string>& args) {
    std::vector<std::string> argv{"checkpoint"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--config", config, "--consumer", "replay"});
    return run_cdcd(argv);
  }

  // Index of the first change of the transaction that holds change `index`.
  std::size_t transaction_start(std::size_t index) const {
    while (index > 0 && log_.changes[index - 1].lsn == log_.changes[index].lsn) --index;
    return index;
  }

  // Expects `delivered` to be exactly the log's changes that satisfy `wanted`, in log order.
  void expect_delivered(const NativeFile& delivered,
                        const std::function<bool(const NativeChange&)>& wanted) {
    EXPECT_TRUE(delivered.unparsed.empty());
    std::vector<const NativeChange*> expected;
    for (const auto& change : log_.changes) {
      if (wanted(change)) expected.push_back(&change);
    }
    ASSERT_EQ(delivered.changes.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
      ASSERT_TRUE(delivered.changes[i].same_change(*expected[i]))
          << "line " << i + 1 << ": " << delivered.changes[i].describe() << ", expected "
          << expected[i]->describe();
    }
  }

  TempDir dir_;
  std::string log_path_ = dir_.file("changes.jsonl");
  std::string out_path_ = dir_.file("out.jsonl");
  std::string dead_path_ = dir_.file("dead.jsonl");
  NativeFile log_;
};

TEST_F(DaemonCliTest, ValidatePrintsOkForAGoodConfig) {
  auto result = run_cdcd({"validate", "--config", write_replay_config()});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "ok\n");
}

TEST_F(DaemonCliTest, ValidateReportsEveryErrorAsFileLineColumn) {
  // Relative plugin paths keep the columns fixed; validate never opens them.
  const std::string config =
      write_config(dir_,
                   "sources:\n"
                   "  log: {type: jsonl, path: log.jsonl, folow: true}\n"
                   "sinks:\n"
                   "  out: {type: file, path: out.jsonl}\n"
                   "checkpoints: {type: file, dir: cp, interval: 5 parsecs}\n"
                   "consumers:\n"
                   "  c:\n"
                   "    source: lgo\n"
                   "    sinks: [out, nope]\n",
                   "bad.yaml");
  auto result = run_cdcd({"validate", "--config", config});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(result.out, "");
  const std::vector<std::pair<std::string, std::string>> expected{
      {config + ":2:39: ", "unknown key \"folow\" (did you mean \"follow\"?)"},
      {config + ":5:46: ", "expected a duration"},
      {config + ":8:13: ", "no source named \"lgo\" (did you mean \"log\"?)"},
      {config + ":9:18: ", "no sink named \"nope\""}};
  auto lines = lines_of(result.err);
  const std::regex located(
      "^" + std::regex_replace(config, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
      R"(:\d+:\d+: error: .+)");
  for (const auto& line : lines) {
    EXPECT_TRUE(std::regex_match(line, located)) << "not FILE:LINE:COLUMN: " << line;
  }
  for (const auto& [where, message] : expected) {
    EXPECT_TRUE(std::any_of(lines.begin(), lines.end(),
                            [&](const std::string& line) {
                              return line.rfind(where, 0) == 0 &&
                                     line.find(message) != std::string::npos;
                            }))
        << "no \"" << where << "... " << message << "\" in:\n"
        << result.err;
  }
  EXPECT_EQ(lines.size(), expected.size()) << result.err;
}

TEST_F(DaemonCliTest, VersionHelpAndUsageErrors) {
  auto version = run_cdcd({"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_TRUE(std::regex_match(version.out, std::regex(R"(cdcd \d+\.\d+\.\d+\S*\n)")))
      << version.out;

  auto help = run_cdcd({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* command : {"run", "validate", "status", "checkpoint"}) {
    EXPECT_NE(help.out.find(command), std::string::npos) << help.out;
  }

  auto unknown = run_cdcd({"frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err, "");

  auto no_config = run_cdcd({"run"});
  EXPECT_EQ(no_config.exit_code, 2);
  EXPECT_NE(no_config.err.find("--config"), std::string::npos) << no_config.err;

  auto missing_file = run_cdcd({"validate", "--config", dir_.file("absent.yaml")});
  EXPECT_EQ(missing_file.exit_code, 2);
  EXPECT_NE(missing_file.err.find("absent.yaml"), std::string::npos) << missing_file.err;
}

TEST_F(DaemonCliTest, CheckpointShowSetResetRoundTripSteersTheReplay) {
  const std::string config = write_replay_config();
  auto shown = checkpoint(config, {"show"});
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find("has no checkpoint"), std::string::npos) << shown.out;

  // Skip ahead to the middle of the log: the replay delivers only what follows.
  const std::uint64_t skip_to = log_.changes[transaction_start(kChanges / 2)].lsn;
  auto set = checkpoint(config, {"set", "--lsn", std::to_string(skip_to)});
  EXPECT_EQ(set.exit_code, 0) << set.err;
  shown = checkpoint(config, {"show"});
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find("lsn " + std::to_string(skip_to) + ","), std::string::npos) << shown.out;

  auto run = run_replay(config);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  expect_delivered(read_native_file(out_path_),
                   [&](const NativeChange& change) { return change.lsn > skip_to; });
  shown = checkpoint(config, {"show"});
  EXPECT_NE(shown.out.find("lsn " + std::to_string(log_.changes.back().lsn) + ","),
            std::string::npos)
      << shown.out;

  // A second replay from the checkpoint at the end delivers nothing.
  run = run_replay(config);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  expect_delivered(read_native_file(out_path_),
                   [&](const NativeChange& change) { return change.lsn > skip_to; });

  // Reset: the consumer starts from the beginning again.
  auto reset = checkpoint(config, {"reset"});
  EXPECT_EQ(reset.exit_code, 0) << reset.err;
  shown = checkpoint(config, {"show"});
  EXPECT_NE(shown.out.find("has no checkpoint"), std::string::npos) << shown.out;
  write_file(out_path_, "");
  run = run_replay(config);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  expect_delivered(read_native_file(out_path_), [](const NativeChange&) { return true; });

  // Rewind with --beginning.
  set = checkpoint(config, {"set", "--beginning"});
  EXPECT_EQ(set.exit_code, 0) << set.err;
  write_file(out_path_, "");
  run = run_replay(config);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  expect_delivered(read_native_file(out_path_), [](const NativeChange&) { return true; });

  // Usage errors.
  auto unknown_consumer =
      run_cdcd({"checkpoint", "show", "--config", config, "--consumer", "nobody"});
  EXPECT_EQ(unknown_consumer.exit_code, 2);
  EXPECT_NE(unknown_consumer.err.find("nobody"), std::string::npos) << unknown_consumer.err;
  auto nothing_to_set = checkpoint(config, {"set"});
  EXPECT_EQ(nothing_to_set.exit_code, 2);
  auto both = checkpoint(config, {"set", "--lsn", "5", "--beginning"});
  EXPECT_EQ(both.exit_code, 2);
  auto bad_time = checkpoint(config, {"set", "--timestamp", "yesterday"});
  EXPECT_EQ(bad_time.exit_code, 2);
}

TEST_F(DaemonCliTest, CheckpointSetTimestampPicksTheLastTransactionBeforeIt) {
  const std::string config = write_replay_config();
  // Transactions are one millisecond apart: aim exactly at one's commit time.
  const NativeChange& target = log_.changes[transaction_start(kChanges / 3)];
  const NativeChange& previous = log_.changes[transaction_start(kChanges / 3) - 1];
  ASSERT_LT(previous.timestamp_us, target.timestamp_us);
  const std::string when =
      "2025-11-21T10:00:00." +
      std::to_string(1'000'000 + (target.timestamp_us - kStartTimeUs)).substr(1) + "Z";
  auto set = checkpoint(config, {"set", "--timestamp", when});
  EXPECT_EQ(set.exit_code, 0) << set.err;
  auto shown = checkpoint(config, {"show"});
  EXPECT_NE(shown.out.find("lsn " + std::to_string(previous.lsn) + ","), std::string::npos)
      << "--timestamp " << when << ": " << shown.out;

  auto run = run_replay(config);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  expect_delivered(read_native_file(out_path_), [&](const NativeChange& change) {
    return change.timestamp_us >= target.timestamp_us;
  });

  // Before the first transaction: no checkpoint, the replay starts from the beginning.
  set = checkpoint(config, {"set", "--timestamp", "2025-11-21T09:00:00Z"});
  EXPECT_EQ(set.exit_code, 0) << set.err;
  shown = checkpoint(config, {"show"});
  EXPECT_NE(shown.out.find("has no checkpoint"), std::string::npos) << shown.out;
}

// A copy of the log with `bad` inserted as a line before change `index` (at a transaction start).
std::string log_with_line(const NativeFile& log, const std::string& text, std::size_t index,
                          const std::string& bad) {
  std::string copy = text;
  copy.insert(log.changes[index].offset, bad + "\n");
  return copy;
}

TEST_F(DaemonCliTest, OnErrorStopFailsNamingFileLineAndReason) {
  const std::size_t index = transaction_start(kChanges / 2);
  const std::string bad_path = dir_.file("bad.jsonl");
  write_file(bad_path, log_with_line(log_, read_file(log_path_), index, R"({"lsn": 7, "oops")"));
  auto run = run_replay(write_replay_config("    on_error: stop\n", bad_path));
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find(bad_path + ":" + std::to_string(index + 1) + ": invalid JSON"),
            std::string::npos)
      << run.err;
}

TEST_F(DaemonCliTest, OnErrorStopReportsAnLsnGoingBackwards) {
  const std::size_t index = transaction_start(kChanges / 2);
  const std::string bad_path = dir_.file("bad.jsonl");
  NativeChange earlier = log_.changes[3];
  std::string line = R"({"lsn":)" + std::to_string(earlier.lsn) +
                     R"(,"timestamp":1763719200000000,"entity":"public.orders","key":{"id":1},)"
                     R"("operation":"delete"})";
  write_file(bad_path, log_with_line(log_, read_file(log_path_), index, line));
  auto run = run_replay(write_replay_config("    on_error: stop\n", bad_path));
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find(bad_path + ":" + std::to_string(index + 1) + ": lsn " +
                         std::to_string(earlier.lsn) + " is not greater than"),
            std::string::npos)
      << run.err;
}

// The consumer stops at the bad record: what precedes it is delivered, and checkpointed up to the
// last transaction known to be complete. The transaction just before the bad line is not: the
// unreadable line might have belonged to it (it could be continued after the line), so the
// checkpoint stays at the transaction before that one and a restart re-delivers only it.
TEST_F(DaemonCliTest, OnErrorStopDeliversAndCheckpointsWhatPrecedesTheBadLine) {
  const std::size_t index = transaction_start(kChanges / 2);
  const std::string bad_path = dir_.file("bad.jsonl");
  write_file(bad_path, log_with_line(log_, read_file(log_path_), index, "not json"));
  const std::string config = write_replay_config("    on_error: stop\n", bad_path);
  auto run = run_replay(config);
  EXPECT_EQ(run.exit_code, 1) << run.err;
  const std::uint64_t before_lsn = log_.changes[index - 1].lsn;
  expect_delivered(read_native_file(out_path_),
                   [&](const NativeChange& change) { return change.lsn <= before_lsn; });
  std::uint64_t last_complete_lsn = 0;
  for (const auto& change : log_.changes) {
    if (change.lsn < before_lsn) last_complete_lsn = change.lsn;
  }
  ASSERT_GT(last_complete_lsn, 0u);
  auto shown = checkpoint(config, {"show"});
  EXPECT_NE(shown.out.find("lsn " + std::to_string(last_complete_lsn) + ","), std::string::npos)
      << shown.out;
}

TEST_F(DaemonCliTest, OnErrorDeadLetterRecordsTheRawLineAndGoesOn) {
  const std::size_t index = transaction_start(kChanges / 2);
  const std::string bad_path = dir_.file("bad.jsonl");
  const std::string bad_line = R"({"lsn": 12, "timestamp": "yesterday", "entity": "x"})";
  write_file(bad_path, log_with_line(log_, read_file(log_path_), index, bad_line));
  auto run = run_replay(
      write_replay_config("    on_error: dead_letter\n    dead_letter_sink: dead\n", bad_path));
  EXPECT_EQ(run.exit_code, 0) << run.err;
  expect_delivered(read_native_file(out_path_), [](const NativeChange&) { return true; });

  NativeFile dead = read_native_file(dead_path_);
  ASSERT_EQ(dead.changes.size(), 1u) << read_file(dead_path_);
  const auto& letter = dead.changes[0].new_row;
  ASSERT_TRUE(letter.is_object()) << read_file(dead_path_);
  EXPECT_EQ(letter.value("raw", ""), bad_line);
  EXPECT_EQ(letter.value("location", ""), bad_path + ":" + std::to_string(index + 1));
  EXPECT_NE(letter.value("reason", "").find("timestamp"), std::string::npos) << letter.dump();
  EXPECT_EQ(letter.value("consumer", ""), "replay");
}

TEST_F(DaemonCliTest, StartAtLsnDeliversFromThatLsn) {
  const std::uint64_t first = log_.changes[transaction_start(2 * kChanges / 3)].lsn;
  auto run = run_replay(write_replay_config("    start: {lsn: " + std::to_string(first) + "}\n"));
  EXPECT_EQ(run.exit_code, 0) << run.err;
  expect_delivered(read_native_file(out_path_),
                   [&](const NativeChange& change) { return change.lsn >= first; });
}

TEST_F(DaemonCliTest, StartAtTimestampDeliversFromThatCommitTime) {
  const NativeChange& first = log_.changes[transaction_start(kChanges / 4)];
  // Half a millisecond before that transaction's commit time (transactions are 1 ms apart).
  const std::int64_t offset_us = first.timestamp_us - kStartTimeUs - 500;
  const std::string when =
      "2025-11-21T10:00:00." + std::to_string(1'000'000 + offset_us).substr(1) + "Z";
  auto run = run_replay(write_replay_config("    start: {timestamp: \"" + when + "\"}\n"));
  EXPECT_EQ(run.exit_code, 0) << run.err;
  expect_delivered(read_native_file(out_path_), [&](const NativeChange& change) {
    return change.timestamp_us >= first.timestamp_us;
  });
}

}  // namespace
}  // namespace cdcd::test
