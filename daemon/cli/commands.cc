#include "daemon/cli/commands.h"

#include <chrono>
#include <cstdio>
#include <memory>

#include <curl/curl.h>
#include <nlohmann/json.hpp>

#include "daemon/cli/cli.h"
#include "daemon/config/daemon_config.h"
#include "daemon/format/rfc3339.h"
#include "daemon/metrics/metrics.h"
#include "daemon/runtime/daemon.h"
#include "daemon/runtime/logging.h"
#include "daemon/runtime/status.h"

namespace cdcd {

namespace {

// A config loaded for an offline command: its plugins are created but not started.
struct OfflineConfig {
  Metrics metrics;
  DaemonConfig config;
};

// Prints the config's errors, and its warnings too when `show_warnings`.
std::unique_ptr<OfflineConfig> load_offline(const std::string& path, const PluginRegistry& registry,
                                            bool show_warnings = false) {
  configure_logging("warn", "text");
  auto offline = std::make_unique<OfflineConfig>();
  config::Diagnostics diagnostics;
  PluginEnvironment plugins{&offline->metrics,
                            [](const std::string& name) { return make_logger(name); }};
  auto config = load_config(path, registry, plugins, diagnostics);
  if (!config || show_warnings) std::fputs(diagnostics.to_string().c_str(), stderr);
  if (!config) return nullptr;
  offline->config = std::move(*config);
  return offline;
}

const ConsumerConfig* find_consumer(const DaemonConfig& config, const std::string& name) {
  for (const auto& consumer : config.consumers) {
    if (consumer.name == name) return &consumer;
  }
  return nullptr;
}

std::size_t collect_body(char* data, std::size_t size, std::size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

// The running daemon's /status, if one answers on the config's metrics address.
std::optional<nlohmann::json> fetch_live_status(const std::string& listen) {
  if (listen.empty()) return std::nullopt;
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  std::string body;
  std::string url = "http://" + listen + "/status";
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, 2000L);
  curl_easy_setopt(curl.get(), CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, collect_body);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &body);
  long status = 0;
  if (curl_easy_perform(curl.get()) != CURLE_OK) return std::nullopt;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) return std::nullopt;
  auto document = nlohmann::json::parse(body, nullptr, false);
  if (document.is_discarded()) return std::nullopt;
  return document;
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Opens every checkpoint store of the config; false (after saying why) when one cannot be.
bool start_checkpoint_stores(DaemonConfig& config) {
  for (auto& instance : config.checkpoint_stores) {
    if (auto started = instance.store->start(); !started) {
      std::fprintf(stderr, "checkpoint store %s: %s\n", instance.name.c_str(),
                   started.error().message.c_str());
      return false;
    }
  }
  return true;
}

CheckpointStore& store_of(OfflineConfig& offline, const std::string& consumer) {
  return *checkpoint_store_of(offline.config, *find_consumer(offline.config, consumer)).store;
}

std::optional<nlohmann::json> offline_status(OfflineConfig& offline) {
  if (!start_checkpoint_stores(offline.config)) return std::nullopt;
  std::vector<ConsumerStatus> statuses;
  for (const auto& consumer : offline.config.consumers) {
    auto checkpoint = checkpoint_store_of(offline.config, consumer).store->load(consumer.name);
    if (!checkpoint) {
      std::fprintf(stderr, "consumer %s: %s\n", consumer.name.c_str(),
                   checkpoint.error().message.c_str());
      return std::nullopt;
    }
    ConsumerStatus status;
    status.name = consumer.name;
    status.source = consumer.source;
    status.checkpoint = *checkpoint;
    statuses.push_back(status);
  }
  nlohmann::json document = status_document(statuses);
  document["daemon"] = "not running";
  for (std::size_t i = 0; i < statuses.size(); ++i) {
    auto& entry = document["consumers"][i];
    // Without the daemon only the checkpoint is known: the lag since its commit time.
    entry["state"] = "stopped";
    entry["lag_bytes"] = nullptr;
    entry["queue_bytes"] = nullptr;
    entry["lag_seconds"] =
        statuses[i].checkpoint
            ? nlohmann::json((now_us() - statuses[i].checkpoint->commit_time_us) / 1e6)
            : nlohmann::json(nullptr);
  }
  return document;
}

// An Emitter that reads a source from its beginning to find the last transaction committed
// before a given time.
class TimestampSeeker : public Emitter {
 public:
  explicit TimestampSeeker(std::int64_t before_us) : before_us_(before_us) {}

  void emit(SourceEvent&& event) override {
    ++events_;
    if (const auto* end = std::get_if<TransactionEnd>(&event)) {
      if (end->timestamp_us >= before_us_) {
        found_later_ = true;
      } else {
        last_before_ = Checkpoint{end->lsn, end->offset, end->timestamp_us, now_us(), end->segment};
      }
    }
  }
  bool wants_more() const override { return !found_later_; }

  bool found_later() const { return found_later_; }
  std::uint64_t events() const { return events_; }
  const std::optional<Checkpoint>& last_before() const { return last_before_; }

 private:
  std::int64_t before_us_;
  bool found_later_ = false;
  std::uint64_t events_ = 0;
  std::optional<Checkpoint> last_before_;
};

// Reads the consumer's source up to the first transaction at or after `before_us`.
Result<std::optional<Checkpoint>> seek_timestamp(Source& source, std::int64_t before_us) {
  if (auto started = source.start(StartPosition{}); !started)
    return tl::unexpected(started.error());
  TimestampSeeker seeker(before_us);
  // A followed log never ends: stop once a poll finds nothing new.
  while (!seeker.found_later()) {
    auto seen = seeker.events();
    auto outcome =
        source.poll(seeker, std::chrono::steady_clock::now() + std::chrono::milliseconds(500));
    if (!outcome) {
      source.stop();
      return tl::unexpected(outcome.error());
    }
    if (*outcome == PollOutcome::kEnd || seeker.events() == seen) break;
  }
  source.stop();
  return seeker.last_before();
}

void print_checkpoint(const std::string& consumer, const std::optional<Checkpoint>& checkpoint) {
  if (!checkpoint) {
    std::printf("consumer %s has no checkpoint\n", consumer.c_str());
    return;
  }
  // `checkpoint set --lsn` knows no commit time.
  std::string committed = checkpoint->commit_time_us == 0
                              ? std::string("at an unknown time")
                              : format_rfc3339(checkpoint->commit_time_us);
  std::printf("consumer %s: lsn %llu, offset %llu, committed %s, saved %s\n", consumer.c_str(),
              static_cast<unsigned long long>(checkpoint->lsn),
              static_cast<unsigned long long>(checkpoint->offset), committed.c_str(),
              format_rfc3339(checkpoint->saved_at_us).c_str());
}

Source* source_of(const DaemonConfig& config, const ConsumerConfig& consumer) {
  for (const auto& source : config.sources) {
    if (source.name == consumer.source) return source.source.get();
  }
  return nullptr;
}

std::vector<std::string> consumers_of_source(const DaemonConfig& config,
                                             const std::string& source) {
  std::vector<std::string> names;
  for (const auto& consumer : config.consumers) {
    if (consumer.source == source) names.push_back(consumer.name);
  }
  return names;
}

// Why `what` cannot be done to a consumer of a source that cannot rewind; returns kExitUsage.
int refuse_rewind(const ConsumerConfig& consumer, const std::string& what) {
  std::fprintf(stderr,
               "consumer %s: refused: %s. Its source %s cannot rewind: it keeps only the changes "
               "after the position all its consumers have checkpointed (a PostgreSQL replication "
               "slot), so a consumer cannot go back alone. A consumer that needs older changes "
               "needs its own source (another slot); to start every consumer of %s over (with "
               "`snapshot: initial`, from a new snapshot), reset them together: cdcd checkpoint "
               "reset --all-consumers --consumer %s\n",
               consumer.name.c_str(), what.c_str(), consumer.source.c_str(),
               consumer.source.c_str(), consumer.name.c_str());
  return kExitUsage;
}

// The lowest checkpoint of the source's consumers: a source that cannot rewind still holds what
// follows it. nullopt when none has one.
Result<std::optional<std::uint64_t>> lowest_checkpoint(OfflineConfig& offline,
                                                       const std::string& source) {
  std::optional<std::uint64_t> lowest;
  for (const auto& name : consumers_of_source(offline.config, source)) {
    auto checkpoint = store_of(offline, name).load(name);
    if (!checkpoint) return tl::unexpected(checkpoint.error());
    if (*checkpoint && (!lowest || (*checkpoint)->lsn < *lowest)) lowest = (*checkpoint)->lsn;
  }
  return lowest;
}

// Loads the config, checks the consumer exists and starts the checkpoint store.
std::unique_ptr<OfflineConfig> open_for_checkpoint(const CheckpointCommand& command,
                                                   const PluginRegistry& registry, int* code) {
  auto offline = load_offline(command.config_path, registry);
  if (!offline) {
    *code = kExitUsage;
    return nullptr;
  }
  if (!find_consumer(offline->config, command.consumer)) {
    std::fprintf(stderr, "%s: no consumer named %s\n", command.config_path.c_str(),
                 command.consumer.c_str());
    *code = kExitUsage;
    return nullptr;
  }
  if (!start_checkpoint_stores(offline->config)) {
    *code = kExitRuntimeFailure;
    return nullptr;
  }
  return offline;
}

}  // namespace

int command_run(const std::string& config_path, const PluginRegistry& registry) {
  return run_daemon(config_path, registry);
}

// Warnings are printed but do not fail the check: the config is valid and the daemon runs it.
int command_validate(const std::string& config_path, const PluginRegistry& registry) {
  auto offline = load_offline(config_path, registry, /*show_warnings=*/true);
  if (!offline) return kExitUsage;
  std::puts("ok");
  return kExitOk;
}

int command_status(const std::string& config_path, bool json, const PluginRegistry& registry) {
  auto offline = load_offline(config_path, registry);
  if (!offline) return kExitUsage;
  auto document = fetch_live_status(offline->config.metrics.listen);
  if (!document) document = offline_status(*offline);
  if (!document) return kExitRuntimeFailure;
  std::fputs(json ? (document->dump(2) + "\n").c_str() : render_status_table(*document).c_str(),
             stdout);
  return kExitOk;
}

int command_checkpoint_show(const CheckpointCommand& command, const PluginRegistry& registry) {
  int code = kExitOk;
  auto offline = open_for_checkpoint(command, registry, &code);
  if (!offline) return code;
  auto checkpoint = store_of(*offline, command.consumer).load(command.consumer);
  if (!checkpoint) {
    std::fprintf(stderr, "%s\n", checkpoint.error().message.c_str());
    return kExitRuntimeFailure;
  }
  print_checkpoint(command.consumer, *checkpoint);
  return kExitOk;
}

int command_checkpoint_reset(const CheckpointCommand& command, const PluginRegistry& registry) {
  int code = kExitOk;
  auto offline = open_for_checkpoint(command, registry, &code);
  if (!offline) return code;
  const auto& consumer = *find_consumer(offline->config, command.consumer);
  if (!command.all_consumers && !source_of(offline->config, consumer)->can_rewind()) {
    return refuse_rewind(consumer,
                         "resetting it alone would make it need changes its source "
                         "no longer holds");
  }
  std::vector<std::string> names{consumer.name};
  if (command.all_consumers) names = consumers_of_source(offline->config, consumer.source);
  for (const auto& name : names) {
    if (auto removed = store_of(*offline, name).remove(name); !removed) {
      std::fprintf(stderr, "%s\n", removed.error().message.c_str());
      return kExitRuntimeFailure;
    }
    std::printf("consumer %s: checkpoint removed\n", name.c_str());
  }
  return kExitOk;
}

int command_checkpoint_set(const CheckpointCommand& command, const PluginRegistry& registry) {
  int code = kExitOk;
  auto offline = open_for_checkpoint(command, registry, &code);
  if (!offline) return code;
  auto& store = store_of(*offline, command.consumer);
  const auto& consumer = *find_consumer(offline->config, command.consumer);
  if (!source_of(offline->config, consumer)->can_rewind()) {
    if (!command.lsn) {
      return refuse_rewind(consumer, command.timestamp
                                         ? "--timestamp reads the source from its beginning"
                                         : "--beginning needs the source from its beginning");
    }
    auto lowest = lowest_checkpoint(*offline, consumer.source);
    if (!lowest) {
      std::fprintf(stderr, "%s\n", lowest.error().message.c_str());
      return kExitRuntimeFailure;
    }
    // Skipping ahead is fine; going below every checkpoint of the source may need changes it
    // no longer holds.
    if (*lowest && *command.lsn < **lowest) {
      return refuse_rewind(consumer, "--lsn " + std::to_string(*command.lsn) +
                                         " is below the lowest checkpoint of source " +
                                         consumer.source + " (lsn " + std::to_string(**lowest) +
                                         ")");
    }
  }
  std::optional<Checkpoint> target;
  if (command.lsn) {
    // The offset is unknown: the source finds the position by scanning for lsn + 1.
    target = Checkpoint{*command.lsn, 0, 0, now_us()};
  } else if (command.timestamp) {
    auto before = parse_rfc3339_us(*command.timestamp);
    if (!before) {
      std::fprintf(stderr,
                   "--timestamp: expected an RFC 3339 time such as "
                   "2025-11-21T10:00:00Z, got \"%s\"\n",
                   command.timestamp->c_str());
      return kExitUsage;
    }
    for (auto& source : offline->config.sources) {
      if (source.name != consumer.source) continue;
      auto found = seek_timestamp(*source.source, *before);
      if (!found) {
        std::fprintf(stderr, "source %s: %s\n", source.name.c_str(), found.error().message.c_str());
        return kExitRuntimeFailure;
      }
      target = *found;
    }
  }
  // No transaction before the target (or --beginning): without a checkpoint the consumer
  // starts from the beginning.
  auto written = target ? store.save(command.consumer, *target) : store.remove(command.consumer);
  if (!written) {
    std::fprintf(stderr, "%s\n", written.error().message.c_str());
    return kExitRuntimeFailure;
  }
  print_checkpoint(command.consumer, target);
  return kExitOk;
}

}  // namespace cdcd
