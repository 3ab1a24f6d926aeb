#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <spdlog/logger.h>

namespace cdcd {

// The last resort of a bounded shutdown. Once armed, it ends the process with `exit_code` at the
// deadline unless disarmed first. The daemon unblocks what it can (consumers aborted, sinks
// stopped), but a thread inside a blocking library call (libpq connecting, a driver's write)
// cannot be interrupted from outside; waiting for it would break the promise that SIGTERM ends
// the process within the shutdown timeout, so the process ends without it. Nothing acknowledged
// is lost that way: checkpoints only ever cover acknowledged changes, and what is not
// checkpointed is delivered again at the next start.
class ShutdownWatchdog {
 public:
  explicit ShutdownWatchdog(std::shared_ptr<spdlog::logger> log);
  // Disarms and waits for the watchdog's thread.
  ~ShutdownWatchdog();
  ShutdownWatchdog(const ShutdownWatchdog&) = delete;
  ShutdownWatchdog& operator=(const ShutdownWatchdog&) = delete;

  // Starts the countdown; a second call keeps the earlier deadline.
  void arm(std::chrono::steady_clock::time_point deadline, int exit_code);
  // What the shutdown is waiting for now, named in the log line if the watchdog fires.
  void set_phase(std::string phase);
  void disarm();

 private:
  void watch();

  std::shared_ptr<spdlog::logger> log_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool armed_ = false;
  bool disarmed_ = false;
  std::chrono::steady_clock::time_point deadline_;
  int exit_code_ = 1;
  std::string phase_ = "shutting down";
  std::thread thread_;
};

}  // namespace cdcd
