#include "daemon/runtime/shutdown_watchdog.h"

#include <unistd.h>

#include <spdlog/spdlog.h>

namespace cdcd {

ShutdownWatchdog::ShutdownWatchdog(std::shared_ptr<spdlog::logger> log) : log_(std::move(log)) {}

ShutdownWatchdog::~ShutdownWatchdog() {
  disarm();
  if (thread_.joinable()) thread_.join();
}

void ShutdownWatchdog::arm(std::chrono::steady_clock::time_point deadline, int exit_code) {
  std::lock_guard lock(mutex_);
  if (armed_ || disarmed_) return;
  armed_ = true;
  deadline_ = deadline;
  exit_code_ = exit_code;
  thread_ = std::thread([this] { watch(); });
}

void ShutdownWatchdog::set_phase(std::string phase) {
  std::lock_guard lock(mutex_);
  phase_ = std::move(phase);
}

void ShutdownWatchdog::disarm() {
  {
    std::lock_guard lock(mutex_);
    disarmed_ = true;
  }
  changed_.notify_all();
}

void ShutdownWatchdog::watch() {
  std::unique_lock lock(mutex_);
  if (changed_.wait_until(lock, deadline_, [this] { return disarmed_; })) return;
  log_->critical(
      "shutdown did not finish in time: still {}; a source or sink is blocked in a call that "
      "cannot be interrupted. Exiting with code {} without waiting for it (checkpoints cover "
      "only acknowledged changes: the rest is delivered again at the next start)",
      phase_, exit_code_);
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& logger) { logger->flush(); });
  // exit() would run static destructors while other threads still use what they destroy.
  ::_exit(exit_code_);
}

}  // namespace cdcd
