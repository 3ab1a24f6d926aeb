#include "tests/support/log_appender.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <random>

#include <gtest/gtest.h>

namespace cdcd::test {

LogAppender::LogAppender(std::string path, const NativeFile& log, const std::string& text,
                         std::size_t chunk_changes, std::chrono::milliseconds period)
    : path_(std::move(path)), period_(period) {
  std::size_t begin = 0;
  std::size_t changes = 0;
  for (std::size_t i = 0; i < log.changes.size(); ++i) {
    ++changes;
    const bool last = i + 1 == log.changes.size();
    const bool transaction_ends = last || log.changes[i + 1].lsn != log.changes[i].lsn;
    if (transaction_ends && (changes >= chunk_changes || last)) {
      chunks_.push_back(text.substr(begin, log.changes[i].end - begin) +
                        commit_marker_line(log.changes[i].lsn));
      begin = log.changes[i].end;
      changes = 0;
    }
  }
}

void LogAppender::start() {
  thread_ = std::thread([this] { run(); });
}

void LogAppender::join() {
  if (thread_.joinable()) thread_.join();
}

void LogAppender::run() {
  for (const auto& chunk : chunks_) {
    int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : ::write(fd, chunk.data(), chunk.size());
    if (fd >= 0) ::close(fd);
    if (n != static_cast<ssize_t>(chunk.size())) {
      failed_ = true;
      break;
    }
    ++written_;
    std::this_thread::sleep_for(period_);  // pacing, not synchronisation
  }
  done_ = true;
}

bool kill_at_random_moments(DaemonProcess& daemon, const LogAppender& appender,
                            const std::string& checkpoint_path, int kills,
                            const std::function<void()>& after_kill) {
  std::uint64_t seed = std::random_device{}();
  if (const char* fixed = std::getenv("CDCD_TEST_SEED")) seed = std::strtoull(fixed, nullptr, 10);
  std::cout << "kill schedule seed " << seed << " (set CDCD_TEST_SEED to repeat it)\n";
  std::mt19937_64 random(seed);
  std::uniform_int_distribution<int> delay_ms(0, 400);
  auto checkpoint_lsn = [&] {
    auto checkpoint = read_checkpoint_file(checkpoint_path);
    return checkpoint ? checkpoint->lsn : 0;
  };
  std::uint64_t checkpointed = 0;
  for (int kill = 0; kill < kills; ++kill) {
    daemon.start();
    if (!wait_until([&] { return checkpoint_lsn() > checkpointed; },
                    scaled(std::chrono::seconds(30)))) {
      ADD_FAILURE() << "run " << kill << " made no progress: " << daemon.stderr_text();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(random)));
    if (!daemon.running()) {
      ADD_FAILURE() << "run " << kill << " ended by itself: " << daemon.stderr_text();
      return false;
    }
    EXPECT_FALSE(appender.done()) << "kill " << kill << " came after the whole log was written";
    daemon.kill();
    if (after_kill) after_kill();
    checkpointed = checkpoint_lsn();
    std::cout << "kill " << kill << ": " << appender.chunks_written() << "/" << appender.chunks()
              << " chunks appended, checkpoint " << checkpointed << "\n";
  }
  return true;
}

}  // namespace cdcd::test
