#include "daemon/runtime/daemon.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <thread>

#include <nlohmann/json.hpp>

#include "daemon/cli/cli.h"
#include "daemon/metrics/http_server.h"
#include "daemon/runtime/logging.h"
#include "daemon/runtime/status.h"

namespace cdcd {

namespace {

using Clock = std::chrono::steady_clock;

template <typename Instance>
const Instance* find_named(const std::vector<Instance>& instances, const std::string& name) {
  for (const auto& instance : instances) {
    if (instance.name == name) return &instance;
  }
  return nullptr;
}

// The signals every thread blocks and the main thread waits for.
sigset_t awaited_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, kWakeSignal);
  return set;
}

}  // namespace

void block_termination_signals() {
  const sigset_t set = awaited_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

Daemon::Daemon(DaemonConfig config, Metrics& metrics)
    : config_(std::move(config)), metrics_(metrics), log_(make_logger("cdcd")) {}

Daemon::~Daemon() {
  for (auto& runner : runners_) runner->request_stop(Clock::now());
  for (auto& consumer : consumers_) consumer->abort();
  runners_.clear();
  for (auto& sink : config_.sinks) sink.sink->stop();
  consumers_.clear();
}

Status Daemon::start() {
  if (auto started = config_.checkpoints.store->start(); !started) {
    return fail("checkpoint store: " + started.error().message);
  }
  for (auto& sink : config_.sinks) {
    if (auto started = sink.sink->start(); !started) {
      return fail("sink " + sink.name + ": " + started.error().message);
    }
  }
  for (const auto& consumer_config : config_.consumers) {
    const SourceInstance* source = find_named(config_.sources, consumer_config.source);
    ConsumerSetup setup;
    setup.config = consumer_config;
    setup.source_type = source->type;
    setup.source = source->source.get();
    for (const auto& sink_name : consumer_config.sinks) {
      setup.sinks.push_back({sink_name, find_named(config_.sinks, sink_name)->sink.get()});
    }
    if (consumer_config.on_error == OnError::kDeadLetter) {
      const auto* dead_letter = find_named(config_.sinks, consumer_config.dead_letter_sink);
      setup.dead_letter = NamedSink{dead_letter->name, dead_letter->sink.get()};
    }
    setup.store = config_.checkpoints.store.get();
    setup.checkpoint_interval = config_.checkpoints.interval;
    setup.metrics = &metrics_;
    setup.log = make_logger("consumer." + consumer_config.name);
    // The main thread (running run()) waits in sigtimedwait: a stopped consumer wakes it at once.
    setup.on_stopped = [main_thread = pthread_self()] { pthread_kill(main_thread, kWakeSignal); };
    auto consumer = std::make_unique<Consumer>(std::move(setup));
    if (auto loaded = consumer->load_checkpoint(); !loaded) return loaded;
    consumers_.push_back(std::move(consumer));
  }
  for (const auto& source : config_.sources) {
    std::vector<Consumer*> consumers;
    for (auto& consumer : consumers_) {
      if (find_named(config_.consumers, consumer->name())->source == source.name) {
        consumers.push_back(consumer.get());
      }
    }
    if (consumers.empty()) {
      log_->warn("source {} has no consumer and is not read", source.name);
      continue;
    }
    runners_.push_back(std::make_unique<SourceRunner>(source.name, source.source.get(),
                                                      std::move(consumers),
                                                      make_logger("source." + source.name)));
  }
  for (auto& consumer : consumers_) consumer->start();
  for (auto& runner : runners_) runner->start();
  started_ = true;
  return ok();
}

int Daemon::run() {
  std::unique_ptr<HttpServer> http;
  if (!config_.metrics.listen.empty()) {
    http = std::make_unique<HttpServer>(
        metrics_.registry(),
        HealthCallbacks{[this] { return not_ready_reason(); }, [this] { return status_json(); }});
    if (auto listening = http->start(config_.metrics.listen); !listening) {
      log_->error("metrics: {}", listening.error().message);
      return kExitRuntimeFailure;
    }
    log_->info("serving /metrics, /healthz, /readyz and /status on {} (port {})",
               config_.metrics.listen, http->port());
  }
  if (auto started = start(); !started) {
    log_->error("{}", started.error().message);
    return kExitRuntimeFailure;
  }
  const sigset_t signals = awaited_signals();
  timespec tick{0, 200 * 1000 * 1000};
  while (true) {
    int signo = sigtimedwait(&signals, nullptr, &tick);
    if (signo == SIGTERM || signo == SIGINT) {
      log_->info("received {}, draining and committing checkpoints", strsignal(signo));
      break;
    }
    if (std::none_of(consumers_.begin(), consumers_.end(), [](const auto& consumer) {
          return consumer->state() == ConsumerState::kRunning;
        })) {
      break;
    }
    for (auto& consumer : consumers_) consumer->refresh_metrics();
  }
  shutdown();
  if (http) http->stop();
  return exit_code();
}

void Daemon::shutdown() {
  auto deadline = Clock::now() + config_.shutdown_timeout;
  for (auto& runner : runners_) runner->request_stop(deadline);
  while (Clock::now() < deadline &&
         std::any_of(consumers_.begin(), consumers_.end(), [](const auto& consumer) {
           return consumer->state() == ConsumerState::kRunning;
         })) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& consumer : consumers_) {
    if (consumer->state() == ConsumerState::kRunning) {
      shutdown_timed_out_ = true;
      consumer->abort();
    }
  }
  for (auto& consumer : consumers_) consumer->join();
  for (auto& runner : runners_) runner->join();
  for (auto& sink : config_.sinks) {
    if (auto flushed = sink.sink->flush(std::max(deadline, Clock::now())); !flushed) {
      log_->warn("sink {}: {}", sink.name, flushed.error().message);
    }
    sink.sink->stop();
  }
  if (shutdown_timed_out_) {
    log_->error("shutdown timeout of {} ms passed with deliveries unacknowledged",
                config_.shutdown_timeout.count());
  }
}

int Daemon::exit_code() const {
  if (shutdown_timed_out_) return kExitRuntimeFailure;
  for (const auto& consumer : consumers_) {
    if (consumer->state() == ConsumerState::kFailed) return kExitRuntimeFailure;
  }
  return kExitOk;
}

std::optional<std::string> Daemon::not_ready_reason() const {
  if (!started_) return "starting";
  for (const auto& source : config_.sources) {
    if (!source.source->connected()) return "source " + source.name + " is not connected";
  }
  for (const auto& sink : config_.sinks) {
    if (!sink.sink->healthy()) return "sink " + sink.name + " is in a failed state";
  }
  for (const auto& consumer : consumers_) {
    if (consumer->state() == ConsumerState::kFailed)
      return "consumer " + consumer->name() + " failed";
  }
  return std::nullopt;
}

std::string Daemon::status_json() const {
  std::vector<ConsumerStatus> statuses;
  if (started_) {
    for (const auto& consumer : consumers_) statuses.push_back(consumer->status());
  }
  nlohmann::json document = status_document(statuses);
  document["daemon"] = "running";
  for (const auto& source : config_.sources) {
    document["sources"].push_back(
        {{"name", source.name}, {"type", source.type}, {"connected", source.source->connected()}});
  }
  for (const auto& sink : config_.sinks) {
    document["sinks"].push_back(
        {{"name", sink.name}, {"type", sink.type}, {"healthy", sink.sink->healthy()}});
  }
  return document.dump(2);
}

int run_daemon(const std::string& config_path, const PluginRegistry& registry) {
  block_termination_signals();
  Metrics metrics;
  config::Diagnostics diagnostics;
  PluginEnvironment plugins{&metrics, [](const std::string& name) { return make_logger(name); }};
  auto config = load_config(config_path, registry, plugins, diagnostics);
  std::fputs(diagnostics.to_string().c_str(), stderr);  // the errors, or the warnings
  if (!config) return kExitUsage;
  if (auto configured = configure_logging(config->log.level, config->log.format); !configured) {
    std::fprintf(stderr, "%s\n", configured.error().message.c_str());
    return kExitUsage;
  }
  auto log = make_logger("cdcd");
  log->info("cdcd {} starting with {}", CDCD_VERSION, config_path);
  Daemon daemon(std::move(*config), metrics);
  int code = daemon.run();
  log->info("cdcd exiting with code {}", code);
  return code;
}

}  // namespace cdcd
