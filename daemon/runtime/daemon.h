#pragma once

#include <atomic>
#include <csignal>
#include <memory>
#include <string>
#include <vector>

#include "daemon/config/daemon_config.h"
#include "daemon/metrics/metrics.h"
#include "daemon/pipeline/consumer.h"
#include "daemon/pipeline/source_runner.h"

namespace cdcd {

// Runs a validated config: starts the checkpoint store, the sinks, the consumers and one thread
// per source, serves the HTTP endpoints, and shuts down in order on SIGTERM/SIGINT or when every
// consumer is done. Signals must be blocked in every thread before construction (see run_daemon).
class Daemon {
 public:
  Daemon(DaemonConfig config, Metrics& metrics);
  ~Daemon();

  // Returns the process exit code: 0 when every consumer finished (or shut down cleanly), 1 when
  // one failed or the shutdown timed out.
  int run();

  std::string status_json() const;
  std::optional<std::string> not_ready_reason() const;

 private:
  Status start();
  void shutdown();
  int exit_code() const;

  DaemonConfig config_;
  Metrics& metrics_;
  std::shared_ptr<spdlog::logger> log_;
  std::vector<std::unique_ptr<Consumer>> consumers_;
  std::vector<std::unique_ptr<SourceRunner>> runners_;
  std::atomic<bool> started_{false};
  bool shutdown_timed_out_ = false;
};

// Loads `config_path` with the plugins of `registry`, configures logging, and runs the daemon until
// it ends; the exit code.
int run_daemon(const std::string& config_path, const PluginRegistry& registry);

// Sent by a consumer thread to the daemon's main thread when the consumer stops.
inline constexpr int kWakeSignal = SIGUSR1;

// Blocks SIGTERM, SIGINT and kWakeSignal (and ignores SIGPIPE) in the calling thread, so that
// threads created afterwards inherit the mask and the main thread can wait for them synchronously.
void block_termination_signals();

}  // namespace cdcd
