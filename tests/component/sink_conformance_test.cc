// The sink conformance suite (tests/support/sink_conformance.h) for the stdout and file sinks.
// The Kafka sink runs it in kafka_sink_conformance_test.cc.

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "sinks/stdout/stdout_sink.h"
#include "tests/support/sink_conformance.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;

// The file sink appending to a file; blocked: appending to /dev/full (every write fails with
// ENOSPC and is retried with backoff).
class FileHarness : public SinkHarness {
 public:
  std::unique_ptr<Sink> make_sink() override { return started("path: " + path() + "\n"); }
  std::unique_ptr<Sink> make_blocked_sink() override { return started("path: /dev/full\n"); }
  std::vector<DeliveredChange> delivered() override {
    return parse_native_lines(read_lines(path()));
  }

 private:
  std::string path() const { return dir_.file("changes.jsonl"); }
  std::unique_ptr<Sink> started(const std::string& options) {
    auto sink = build_plugin_sink("file", options + "format: native\n", metrics_);
    if (sink == nullptr) return nullptr;
    if (auto status = sink->start(); !status) {
      ADD_FAILURE() << status.error().message;
      return nullptr;
    }
    return sink;
  }

  TempDir dir_;
  Metrics metrics_;
};

// The stdout sink with its standard output on a pipe: read by a thread, or, blocked, full and read
// by nobody.
class StdoutPipeHarness : public SinkHarness {
 public:
  StdoutPipeHarness() {
    std::signal(SIGPIPE, SIG_IGN);  // as the daemon does
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    read_fd_ = fds[0];
    write_fd_ = fds[1];
  }
  ~StdoutPipeHarness() override {
    reading_ = false;
    if (reader_.joinable()) reader_.join();
    ::close(read_fd_);
    ::close(write_fd_);
  }

  std::unique_ptr<Sink> make_sink() override {
    reading_ = true;
    reader_ = std::thread([this] { read_until_stopped(); });
    return started();
  }

  std::unique_ptr<Sink> make_blocked_sink() override {
    // The smallest pipe (one page), filled up: the sink's first write finds no room.
    ::fcntl(write_fd_, F_SETPIPE_SZ, 4096);
    ::fcntl(write_fd_, F_SETFL, O_NONBLOCK);
    std::string filler(4096, 'x');
    while (::write(write_fd_, filler.data(), filler.size()) > 0) {
    }
    ::fcntl(write_fd_, F_SETFL, 0);  // standard output is usually blocking
    return started();
  }

  std::vector<DeliveredChange> delivered() override {
    // Acknowledged lines are in the pipe: wait until the reader has taken them all.
    std::string text;
    EXPECT_TRUE(wait_until(
        [&] {
          std::lock_guard lock(mutex_);
          int unread = 0;
          if (::ioctl(read_fd_, FIONREAD, &unread) != 0 || unread != 0) return false;
          text = output_;
          return true;
        },
        30s));
    std::vector<std::string> lines;
    for (std::size_t start = 0; start < text.size();) {
      auto end = text.find('\n', start);
      if (end == std::string::npos) {
        ADD_FAILURE() << "a partial line at the end of the output";
        break;
      }
      lines.push_back(text.substr(start, end - start));
      start = end + 1;
    }
    return parse_native_lines(lines);
  }

 private:
  std::unique_ptr<Sink> started() {
    auto sink =
        std::make_unique<StdoutSink>(SinkFormat{Format::kNative, {}},
                                     SinkContext{"conformance", spdlog::default_logger(),
                                                 metrics_.registry(), metrics_.sink("conformance")},
                                     write_fd_);
    if (auto status = sink->start(); !status) {
      ADD_FAILURE() << status.error().message;
      return nullptr;
    }
    return sink;
  }

  void read_until_stopped() {
    char buffer[65536];
    while (reading_) {
      pollfd fd{read_fd_, POLLIN, 0};
      if (::poll(&fd, 1, 20) <= 0) continue;
      // Read and kept under the lock: delivered() sees an empty pipe only with everything kept.
      std::lock_guard lock(mutex_);
      ssize_t n = ::read(read_fd_, buffer, sizeof buffer);
      if (n > 0) output_.append(buffer, static_cast<std::size_t>(n));
    }
  }

  int read_fd_ = -1;
  int write_fd_ = -1;
  std::atomic<bool> reading_{false};
  std::thread reader_;
  std::mutex mutex_;
  std::string output_;
  Metrics metrics_;
};

CDCD_SINK_CONFORMANCE_SUITE(
    Builtin, SinkConformanceCase{"file", [] { return std::make_unique<FileHarness>(); }},
    SinkConformanceCase{"stdout_pipe", [] { return std::make_unique<StdoutPipeHarness>(); }});

}  // namespace
}  // namespace cdcd::test
