#pragma once

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/config/daemon_config.h"
#include "daemon/metrics/metrics.h"
#include "daemon/pipeline/consumer.h"
#include "daemon/pipeline/source_runner.h"
#include "daemon/runtime/instrumented_checkpoint_store.h"
#include "daemon/runtime/shutdown_watchdog.h"

namespace cdcd {

// Runs a validated config: starts the checkpoint store, the sinks, the consumers and one thread
// per source, serves the HTTP endpoints, and shuts down in order on SIGTERM/SIGINT or when every
// consumer is done. Signals must be blocked in every thread before construction (see run_daemon).
//
// Start-up runs on its own thread, so that the main thread always answers signals: a checkpoint
// store or sink that is unreachable (a retryable error) is retried with backoff while /readyz
// says why; only a permanent error (misconfiguration) ends the daemon.
//
// Shutdown is bounded by `shutdown_timeout`: consumers drain until the deadline; then they are
// aborted and the sinks stopped, which makes blocked writes return; and if threads still have not
// ended shortly after the deadline (a call that cannot be interrupted), the ShutdownWatchdog ends
// the process with exit code 1.
class Daemon {
 public:
  Daemon(DaemonConfig config, Metrics& metrics);
  ~Daemon();

  // Returns the process exit code: 0 when every consumer finished (or shut down cleanly), 1 when
  // one failed, start-up failed or the shutdown timed out.
  int run();

  std::string status_json() const;
  std::optional<std::string> not_ready_reason() const;

 private:
  enum class Startup { kStarting, kStarted, kFailed, kInterrupted };

  void start_in_background();
  Status start();
  Status start_consumers();
  // Runs `attempt` until it succeeds, fails permanently, or the daemon is stopping; while it fails
  // retryably, /readyz names `what` and the error.
  Status retry_until_done(const std::string& what, const std::function<Status()>& attempt);
  // Sleeps for `duration` unless the daemon starts stopping; false if it did.
  bool pause_unless_stopping(std::chrono::milliseconds duration);
  void set_startup_reason(std::string reason);
  void wake_main_thread() const;
  bool any_consumer_running() const;
  void shutdown();
  void stop_startup();
  void stop_sinks();
  int exit_code() const;

  // Declared first so that it is destroyed last: it also bounds the destructors of the plugins.
  ShutdownWatchdog watchdog_;
  DaemonConfig config_;
  Metrics& metrics_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<InstrumentedCheckpointStore> store_;
  std::vector<std::unique_ptr<Consumer>> consumers_;
  std::vector<std::unique_ptr<SourceRunner>> runners_;
  pthread_t main_thread_{};
  std::thread starter_;
  std::atomic<Startup> startup_{Startup::kStarting};
  mutable std::mutex startup_mutex_;
  std::condition_variable stopping_changed_;
  bool stopping_ = false;       // guarded by startup_mutex_
  std::string startup_reason_;  // guarded by startup_mutex_
  bool shutdown_timed_out_ = false;
};

// Loads `config_path` with the plugins of `registry`, configures logging, and runs the daemon until
// it ends; the exit code.
int run_daemon(const std::string& config_path, const PluginRegistry& registry);

// Sent by a consumer thread to the daemon's main thread when the consumer stops.
inline constexpr int kWakeSignal = SIGUSR1;

// Blocks SIGTERM, SIGINT, SIGHUP and kWakeSignal (and ignores SIGPIPE) in the calling thread, so
// that threads created afterwards inherit the mask and the main thread can wait for them
// synchronously.
void block_termination_signals();

}  // namespace cdcd
