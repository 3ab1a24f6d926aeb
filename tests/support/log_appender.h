#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/daemon_fixture.h"

namespace cdcd::test {

// Appends a change log to a followed file on its own thread, as a writer would while cdcd runs
// (and is killed): chunks of whole transactions of at least `chunk_changes` changes, each ending
// with a commit marker so that its last transaction is checkpointed at once, one write each, one
// every `period`.
class LogAppender {
 public:
  LogAppender(std::string path, const NativeFile& log, const std::string& text,
              std::size_t chunk_changes, std::chrono::milliseconds period);
  ~LogAppender() { join(); }
  LogAppender(const LogAppender&) = delete;
  LogAppender& operator=(const LogAppender&) = delete;

  void start();
  void join();
  bool done() const { return done_.load(); }
  std::size_t chunks_written() const { return written_.load(); }
  std::size_t chunks() const { return chunks_.size(); }
  // Empty unless a write failed.
  std::string error() const { return failed_ ? "appending to " + path_ + " failed" : ""; }

 private:
  void run();

  std::string path_;
  std::chrono::milliseconds period_;
  std::vector<std::string> chunks_;
  std::thread thread_;
  std::atomic<bool> done_{false};
  std::atomic<bool> failed_{false};
  std::atomic<std::size_t> written_{0};
};

// Starts `daemon` `kills` times while `appender` writes the log. Each run makes progress first (the
// checkpoint in `checkpoint_path` moves: on a loaded machine a fixed delay may end a run before its
// first checkpoint), then is SIGKILLed at a random moment among its writes; `after_kill` runs after
// each kill. The schedule's seed is printed (CDCD_TEST_SEED repeats it). Adds a test failure and
// returns false when a run makes no progress or ends by itself.
bool kill_at_random_moments(DaemonProcess& daemon, const LogAppender& appender,
                            const std::string& checkpoint_path, int kills,
                            const std::function<void()>& after_kill = {});

}  // namespace cdcd::test
