#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/config/node.h"
#include "daemon/core/change.h"
#include "daemon/plugin/registry.h"

namespace cdcd {

class Metrics;

struct BatchConfig {
  std::size_t max_events = 500;
  std::uint64_t max_bytes = 1 << 20;
  std::chrono::milliseconds max_wait{100};
  // Send a batch once every change the source handed over is in it (and it is 1 ms old while
  // earlier batches are in flight), instead of holding it for max_wait: low commit-to-sink
  // latency; under load the source hands over more at a time and the batches grow by themselves.
  bool send_when_caught_up = true;
  std::size_t max_in_flight = 16;  // batches written but not yet acknowledged
};

enum class OnError { kStop, kDeadLetter };

struct StartConfig {
  enum class Kind { kCheckpoint, kBeginning, kLsn, kTimestamp };
  Kind kind = Kind::kCheckpoint;
  std::uint64_t lsn = 0;          // kLsn: first lsn delivered
  std::int64_t timestamp_us = 0;  // kTimestamp: first commit time delivered
};

struct ConsumerConfig {
  std::string name;
  std::string source;
  std::vector<std::string> sinks;
  std::vector<std::string> entities{"*"};  // globs with '*'
  std::vector<std::string> exclude_entities;
  std::vector<Operation> operations;  // empty = all
  StartConfig start;
  BatchConfig batch;
  OnError on_error = OnError::kStop;
  std::string dead_letter_sink;              // with on_error: dead_letter
  std::uint64_t max_queue_bytes = 16 << 20;  // source-to-consumer queue bound
  std::size_t checkpoint_store = 0;          // index in DaemonConfig::checkpoint_stores
};

struct SourceInstance {
  std::string name;
  std::string type;
  std::unique_ptr<Source> source;
};

struct SinkInstance {
  std::string name;
  std::string type;
  std::unique_ptr<Sink> sink;
};

struct CheckpointStoreInstance {
  // How logs and errors name it: "checkpoints" (the top-level store) or
  // "consumers.NAME.checkpoints" (a consumer's own); never the URL, which may hold a password.
  std::string name;
  std::string type;
  std::chrono::milliseconds interval{1000};  // how often its consumers save
  std::unique_ptr<CheckpointStore> store;
};

struct MetricsConfig {
  std::string listen;  // "host:port"; empty = no HTTP server
};

struct LogConfig {
  std::string level = "info";   // trace, debug, info, warn, error, critical, off
  std::string format = "text";  // text | json
};

struct DaemonConfig {
  std::string file;
  std::vector<SourceInstance> sources;
  std::vector<SinkInstance> sinks;
  // The top-level `checkpoints` (first, when there is one) and the consumers' own stores; one
  // instance per distinct URL.
  std::vector<CheckpointStoreInstance> checkpoint_stores;
  std::vector<ConsumerConfig> consumers;
  MetricsConfig metrics;
  LogConfig log;
  std::chrono::milliseconds shutdown_timeout{30000};
};

// The store that keeps `consumer`'s checkpoints.
inline CheckpointStoreInstance& checkpoint_store_of(DaemonConfig& config,
                                                    const ConsumerConfig& consumer) {
  return config.checkpoint_stores[consumer.checkpoint_store];
}

// What plugin factories get besides their options.
struct PluginEnvironment {
  Metrics* metrics = nullptr;
  // Builds the logger a plugin logs through, named after it (e.g. "source.demo").
  std::function<std::shared_ptr<spdlog::logger>(const std::string& name)> logger;
};

// Reads and validates the config file, creating (not starting) every plugin. On any error,
// `diagnostics` holds all of them, each as "FILE:LINE:COLUMN: error: PATH: MESSAGE", and the result
// is nullopt. Warnings (legal but probably unintended settings) are added to `diagnostics` without
// rejecting the config. `env` resolves ${VAR} interpolation (the process environment by default).
std::optional<DaemonConfig> load_config(const std::string& path, const PluginRegistry& registry,
                                        const PluginEnvironment& plugins,
                                        config::Diagnostics& diagnostics,
                                        config::EnvLookup env = {});

// Same, from text already in memory (`file` names it in diagnostics).
std::optional<DaemonConfig> parse_config(const std::string& text, const std::string& file,
                                         const PluginRegistry& registry,
                                         const PluginEnvironment& plugins,
                                         config::Diagnostics& diagnostics,
                                         config::EnvLookup env = {});

}  // namespace cdcd
