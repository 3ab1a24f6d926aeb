#pragma once

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/config/daemon_config.h"
#include "daemon/metrics/metrics.h"
#include "daemon/pipeline/consumer.h"
#include "daemon/pipeline/source_runner.h"
#include "daemon/runtime/instrumented_checkpoint_store.h"
#include "daemon/runtime/service_notifier.h"
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
//
// Reload (SIGHUP): the config is read again with `reload_config`; an invalid one is refused and the
// running pipeline kept. A valid one replaces the whole pipeline in the process: the running one
// drains as at shutdown (every acknowledged transaction checkpointed, the source released), then
// the new one starts and every consumer resumes after its checkpoint. So an added consumer starts
// as configured, a removed one stops with its checkpoint kept, and changed sinks and sources take
// effect, without losing or repeating an acknowledged transaction. The HTTP server keeps serving.
//
// systemd (Type=notify, see ServiceNotifier): READY=1 once started and ready (/readyz), STATUS= a
// one-line summary refreshed by the main loop, WATCHDOG=1 while every consumer and source thread
// keeps turning its loop, RELOADING=1 during a reload, STOPPING=1 when draining for shutdown.
class Daemon {
 public:
  // Reads the config file again for a reload; nullopt after logging why it is invalid.
  using ConfigLoader = std::function<std::optional<DaemonConfig>()>;

  Daemon(DaemonConfig config, Metrics& metrics, ConfigLoader reload_config = {});
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
  std::vector<StoreEntity> store_entities() const;
  // Stops reading, lets the consumers drain until `deadline`, then aborts them and stops the sinks;
  // joins every pipeline thread and flushes and stops the sinks. True if it had to abort.
  bool drain_pipeline(std::chrono::steady_clock::time_point deadline);
  void reload();
  // What the main loop does every tick: refresh lag gauges, tell systemd the status, readiness and
  // (while no pipeline thread is stuck) that the daemon is alive.
  void tick();
  std::string status_line() const;
  // The first consumer or source thread that has not turned its loop for the watchdog's tolerance.
  std::optional<std::string> stuck_thread() const;
  void shutdown();
  void stop_startup();
  void stop_sinks();
  int exit_code() const;

  // Declared first so that it is destroyed last: it also bounds the destructors of the plugins.
  ShutdownWatchdog watchdog_;
  DaemonConfig config_;
  Metrics& metrics_;
  ConfigLoader reload_config_;
  ReloadMetrics reload_metrics_;
  ServiceNotifier notifier_;
  bool ready_sent_ = false;
  bool stuck_logged_ = false;
  // HTTP threads read the pipeline (/readyz, /status) while a reload replaces it.
  mutable std::shared_mutex pipeline_mutex_;
  std::shared_ptr<spdlog::logger> log_;
  // One per DaemonConfig::checkpoint_stores entry, in that order.
  std::vector<std::unique_ptr<InstrumentedCheckpointStore>> stores_;
  std::vector<std::unique_ptr<Consumer>> consumers_;
  std::vector<std::unique_ptr<SourceRunner>> runners_;
  pthread_t main_thread_{};
  std::thread starter_;
  std::atomic<Startup> startup_{Startup::kStarting};
  mutable std::mutex startup_mutex_;
  std::condition_variable stopping_changed_;
  bool stopping_ = false;         // guarded by startup_mutex_
  bool threads_started_ = false;  // guarded by startup_mutex_
  std::string startup_reason_;    // guarded by startup_mutex_
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
