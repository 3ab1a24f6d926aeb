// The real daemon following a JSONL log that is rotated while the daemon is dead (SIGKILL) and
// the log keeps growing: the restart finishes the rotated file before the new one, and delivers
// every change in order, re-delivering only what follows the checkpoint. Without the rotated file
// it stops and names the lsns it cannot deliver.

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/daemon_fixture.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;

constexpr int kChanges = 20'000;
constexpr int kParts = 4;

std::string position(const NativeChange& change) {
  return std::to_string(change.lsn) + "/" + std::to_string(change.seq);
}

class JsonlRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    generate_changelog(dir_.file("generated.jsonl"), kChanges, 500);
    text_ = read_file(dir_.file("generated.jsonl"));
    log_ = read_native_file(dir_.file("generated.jsonl"));
    ASSERT_EQ(log_.changes.size(), static_cast<std::size_t>(kChanges));
    // Parts of whole transactions: [part_ends_[i - 1], part_ends_[i]) of the log's changes.
    part_ends_.push_back(0);
    for (int part = 1; part <= kParts; ++part) {
      std::size_t end = log_.changes.size() * part / kParts;
      while (end < log_.changes.size() && log_.changes[end].lsn == log_.changes[end - 1].lsn) {
        ++end;
      }
      part_ends_.push_back(end);
    }
    write_config(dir_, R"(
sources:
  log: {type: jsonl, path: )" +
                           log_path_ +
                           R"(, follow: true, poll_interval: 20ms}
sinks:
  out: {type: file, path: )" +
                           output_path_ +
                           R"(, format: native, fsync: never}
checkpoints: {type: file, dir: )" +
                           dir_.file("checkpoints") +
                           R"(, interval: 100ms}
consumers:
  mirror:
    source: log
    sinks: [out]
    batch: {max_events: 200, max_wait: 20ms}
log: {level: info}
)");
    daemon_ = std::make_unique<DaemonProcess>(dir_.file("cdcd.yaml"), dir_.path());
  }

  // The log's text of parts [first, last].
  std::string parts(int first, int last) const {
    const std::size_t begin =
        part_ends_[first - 1] == 0 ? 0 : log_.changes[part_ends_[first - 1] - 1].end;
    return text_.substr(begin, log_.changes[part_ends_[last] - 1].end - begin);
  }
  std::uint64_t last_lsn_of_part(int part) const { return log_.changes[part_ends_[part] - 1].lsn; }

  std::uint64_t checkpoint_lsn() const {
    auto checkpoint = read_checkpoint_file(dir_.file("checkpoints/mirror.json"));
    return checkpoint ? checkpoint->lsn : 0;
  }

  // Runs the daemon on part 1, appends part 2 and kills the daemon at once, with changes after
  // the checkpoint still in the file. Then, while it is dead, the log grows by part 3.
  void run_and_kill_while_the_log_grows() {
    write_file(log_path_, parts(1, 1));
    daemon_->start();
    const std::uint64_t halfway = log_.changes[part_ends_[1] / 2].lsn;
    ASSERT_TRUE(wait_until([&] { return checkpoint_lsn() >= halfway; }, scaled(60s)))
        << daemon_->stderr_text();
    append_file(log_path_, parts(2, 2));
    daemon_->kill();
    killed_checkpoint_ = checkpoint_lsn();
    killed_output_size_ = 0;
    const std::string output = read_file(output_path_);
    if (auto newline = output.rfind('\n'); newline != std::string::npos) {
      killed_output_size_ = newline + 1;
    }
    std::cout << "killed at checkpoint lsn " << killed_checkpoint_ << " (the file ends at lsn "
              << last_lsn_of_part(2) << ")\n";
    ASSERT_LT(killed_checkpoint_, last_lsn_of_part(2))
        << "the kill must leave changes after the checkpoint in the file";
    append_file(log_path_, parts(3, 3));
  }

  TempDir dir_;
  std::string log_path_ = dir_.file("changes.jsonl");
  std::string output_path_ = dir_.file("out.jsonl");
  std::string text_;
  NativeFile log_;
  std::vector<std::size_t> part_ends_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::uint64_t killed_checkpoint_ = 0;
  std::uint64_t killed_output_size_ = 0;
};

TEST_F(JsonlRotationTest, RestartFinishesTheRotatedFileThenReadsTheNewOne) {
  run_and_kill_while_the_log_grows();
  ASSERT_EQ(std::rename(log_path_.c_str(), (log_path_ + ".1").c_str()), 0);
  // The writer's new file; its marker ends the last transaction at once.
  write_file(log_path_, parts(4, 4) + commit_marker_line(log_.changes.back().lsn));

  daemon_->start();
  ASSERT_TRUE(wait_until([&] { return checkpoint_lsn() == log_.changes.back().lsn; }, scaled(60s)))
      << "checkpoint " << checkpoint_lsn() << "\n"
      << daemon_->stderr_text();
  EXPECT_EQ(daemon_->stop(scaled(30s)), 0) << daemon_->stderr_text();
  const std::string restart_log = daemon_->stderr_text();
  EXPECT_NE(restart_log.find("finishing " + log_path_ + ".1"), std::string::npos) << restart_log;
  for (const char* problem : {" error [", "no longer matches", "missing", "truncated"}) {
    EXPECT_EQ(restart_log.find(problem), std::string::npos) << problem << ":\n" << restart_log;
  }

  // The output: what the killed run wrote (a prefix of the log), then everything after the
  // checkpoint it left, in log order.
  const NativeFile output = read_native_file(output_path_);
  EXPECT_TRUE(output.unparsed.empty()) << output.unparsed.front();
  std::size_t first_run = 0;
  while (first_run < output.changes.size() &&
         output.changes[first_run].end <= killed_output_size_) {
    ++first_run;
  }
  std::size_t resumed = 0;  // the log's first change after the checkpoint
  while (resumed < log_.changes.size() && log_.changes[resumed].lsn <= killed_checkpoint_)
    ++resumed;
  ASSERT_LE(resumed, first_run) << "the checkpoint covers changes that were never written";
  ASSERT_EQ(output.changes.size(), first_run + log_.changes.size() - resumed)
      << first_run << " changes written before the kill, the log has " << log_.changes.size()
      << ", the checkpoint was after change " << resumed;
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < output.changes.size() && mismatches < 5; ++i) {
    const NativeChange& expected = log_.changes[i < first_run ? i : resumed + (i - first_run)];
    if (!output.changes[i].same_change(expected)) {
      ++mismatches;
      ADD_FAILURE() << "output change " << i << " is " << output.changes[i].describe()
                    << ", expected " << expected.describe();
    }
  }
  std::cout << first_run - resumed << " changes re-delivered after the checkpoint, "
            << log_.changes.size() - part_ends_[2] << " appended while the daemon was dead\n";
  // The rotated file's tail was read: the restart began there.
  EXPECT_LT(resumed, part_ends_[3]);
  EXPECT_EQ(position(output.changes.back()), position(log_.changes.back()));
}

TEST_F(JsonlRotationTest, RestartWithoutTheRotatedFileStopsAndNamesTheMissingChanges) {
  run_and_kill_while_the_log_grows();
  // Rotated where `rotated` (by default changes.jsonl.*) does not look.
  ASSERT_EQ(std::rename(log_path_.c_str(), dir_.file("archive.jsonl").c_str()), 0);
  write_file(log_path_, parts(4, 4));

  daemon_->start();
  EXPECT_EQ(daemon_->wait(scaled(30s)), 1) << daemon_->stderr_text();
  const std::string restart_log = daemon_->stderr_text();
  const std::string missing = "changes from lsn " + std::to_string(killed_checkpoint_ + 1) +
                              " to " + std::to_string(log_.changes[part_ends_[3]].lsn - 1) +
                              " are missing";
  EXPECT_NE(restart_log.find(missing), std::string::npos) << restart_log;
  EXPECT_NE(restart_log.find("cdcd checkpoint set"), std::string::npos) << restart_log;
  // Nothing of the new file was delivered past the gap.
  const NativeFile output = read_native_file(output_path_);
  for (const auto& change : output.changes) {
    if (change.offset < killed_output_size_) continue;
    ADD_FAILURE() << "delivered " << change.describe() << " past the missing changes";
    break;
  }
  EXPECT_EQ(checkpoint_lsn(), killed_checkpoint_);
}

}  // namespace
}  // namespace cdcd::test
