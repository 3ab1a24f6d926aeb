#include "daemon/runtime/daemon.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <thread>

#include <nlohmann/json.hpp>

#include "daemon/cli/cli.h"
#include "daemon/core/backoff.h"
#include "daemon/metrics/http_server.h"
#include "daemon/runtime/logging.h"
#include "daemon/runtime/status.h"

namespace cdcd {

namespace {

using Clock = std::chrono::steady_clock;
// A checkpoint store or broker that is still coming up is tried again soon; one that stays down
// is not hammered.
constexpr auto kStartRetryBase = std::chrono::milliseconds(200);
constexpr auto kStartRetryCap = std::chrono::seconds(10);
// After the shutdown deadline, how long aborted consumers and stopped sinks get to return before
// the watchdog ends the process: enough to save a checkpoint, short against shutdown_timeout.
constexpr auto kStuckThreadGrace = std::chrono::seconds(2);

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
  sigaddset(&set, SIGHUP);
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
    : watchdog_(make_logger("cdcd")),
      config_(std::move(config)),
      metrics_(metrics),
      log_(make_logger("cdcd")) {}

Daemon::~Daemon() {
  stop_startup();
  if (starter_.joinable()) starter_.join();
  for (auto& runner : runners_) runner->request_stop(Clock::now());
  for (auto& consumer : consumers_) consumer->abort();
  stop_sinks();
  runners_.clear();
  consumers_.clear();
}

void Daemon::set_startup_reason(std::string reason) {
  std::lock_guard lock(startup_mutex_);
  startup_reason_ = std::move(reason);
}

void Daemon::wake_main_thread() const { pthread_kill(main_thread_, kWakeSignal); }

bool Daemon::pause_unless_stopping(std::chrono::milliseconds duration) {
  std::unique_lock lock(startup_mutex_);
  return !stopping_changed_.wait_for(lock, duration, [this] { return stopping_; });
}

void Daemon::stop_startup() {
  {
    std::lock_guard lock(startup_mutex_);
    stopping_ = true;
  }
  stopping_changed_.notify_all();
}

Status Daemon::retry_until_done(const std::string& what, const std::function<Status()>& attempt) {
  Backoff backoff(kStartRetryBase, kStartRetryCap);
  while (pause_unless_stopping(std::chrono::milliseconds(0))) {
    auto done = attempt();
    if (done) {
      set_startup_reason("");
      return ok();
    }
    if (!done.error().retryable) return fail(what + ": " + done.error().message);
    auto wait = backoff.next();
    log_->warn("{} is not available yet ({}); retrying in {} ms", what, done.error().message,
               wait.count());
    set_startup_reason(what + " is not available yet: " + done.error().message);
    if (!pause_unless_stopping(wait)) break;
  }
  return fail("stopped while waiting for " + what);
}

void Daemon::start_in_background() {
  auto started = start();
  bool stopping;
  {
    std::lock_guard lock(startup_mutex_);
    stopping = stopping_;
  }
  if (started) {
    startup_ = Startup::kStarted;
  } else if (stopping) {
    log_->info("stopped before start-up completed");
    startup_ = Startup::kInterrupted;
  } else {
    log_->error("{}", started.error().message);
    startup_ = Startup::kFailed;
  }
  wake_main_thread();
}

Status Daemon::start() {
  std::vector<std::string> consumer_names;
  for (const auto& consumer : config_.consumers) consumer_names.push_back(consumer.name);
  store_ = std::make_unique<InstrumentedCheckpointStore>(*config_.checkpoints.store, metrics_,
                                                         consumer_names);
  const std::string store_name = "checkpoint store (" + config_.checkpoints.type + ")";
  if (auto started = retry_until_done(store_name, [&] { return store_->start(); }); !started) {
    return started;
  }
  for (auto& sink : config_.sinks) {
    auto started = retry_until_done("sink " + sink.name, [&] { return sink.sink->start(); });
    if (!started) return started;
  }
  return start_consumers();
}

Status Daemon::start_consumers() {
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
    setup.store = store_.get();
    setup.checkpoint_interval = config_.checkpoints.interval;
    setup.metrics = &metrics_;
    setup.log = make_logger("consumer." + consumer_config.name);
    // The main thread (running run()) waits in sigtimedwait: a stopped consumer wakes it at once.
    setup.on_stopped = [this] { wake_main_thread(); };
    auto consumer = std::make_unique<Consumer>(std::move(setup));
    auto loaded = retry_until_done("checkpoint store (" + config_.checkpoints.type + ")",
                                   [&] { return consumer->load_checkpoint(); });
    if (!loaded) return loaded;
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
    runners_.push_back(std::make_unique<SourceRunner>(
        source.name, source.source.get(), std::move(consumers),
        make_logger("source." + source.name), config_.checkpoints.store->own_entities()));
  }
  // Holding the lock: shutdown() either sees no thread started, or every one of them.
  std::lock_guard lock(startup_mutex_);
  if (stopping_) return fail("stopped before the consumers started");
  for (auto& consumer : consumers_) consumer->start();
  for (auto& runner : runners_) runner->start();
  return ok();
}

bool Daemon::any_consumer_running() const {
  return std::any_of(consumers_.begin(), consumers_.end(), [](const auto& consumer) {
    return consumer->state() == ConsumerState::kRunning;
  });
}

int Daemon::run() {
  main_thread_ = pthread_self();
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
  starter_ = std::thread([this] { start_in_background(); });
  const sigset_t signals = awaited_signals();
  timespec tick{0, 200 * 1000 * 1000};
  while (true) {
    int signo = sigtimedwait(&signals, nullptr, &tick);
    if (signo == SIGTERM || signo == SIGINT) {
      log_->info("received {}, draining and committing checkpoints", strsignal(signo));
      break;
    }
    if (signo == SIGHUP) {
      // Reloading comes later; until then SIGHUP must not end the daemon without draining.
      log_->warn("reload is not supported yet; ignoring SIGHUP");
      continue;
    }
    const Startup startup = startup_.load();
    if (startup == Startup::kFailed || startup == Startup::kInterrupted) break;
    if (startup != Startup::kStarted) continue;
    if (!any_consumer_running()) break;
    for (auto& consumer : consumers_) consumer->refresh_metrics();
  }
  shutdown();
  if (http) http->stop();
  return exit_code();
}

void Daemon::stop_sinks() {
  for (auto& sink : config_.sinks) sink.sink->stop();
}

void Daemon::shutdown() {
  const auto deadline = Clock::now() + config_.shutdown_timeout;
  watchdog_.arm(deadline + kStuckThreadGrace, kExitRuntimeFailure);
  watchdog_.set_phase("starting (a checkpoint store or sink does not answer)");
  stop_startup();
  if (starter_.joinable()) starter_.join();
  watchdog_.set_phase("draining the consumers");
  for (auto& runner : runners_) runner->request_stop(deadline);
  while (Clock::now() < deadline && any_consumer_running()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  bool sinks_stopped = false;
  if (any_consumer_running()) {
    // Consumers blocked in a sink's write() only return once the sink is stopped.
    shutdown_timed_out_ = true;
    for (auto& consumer : consumers_) consumer->abort();
    stop_sinks();
    sinks_stopped = true;
  }
  watchdog_.set_phase("waiting for consumer threads (blocked in a sink)");
  for (auto& consumer : consumers_) consumer->join();
  watchdog_.set_phase("waiting for source threads (blocked in a source)");
  for (auto& runner : runners_) runner->join();
  if (!sinks_stopped) {
    watchdog_.set_phase("flushing and stopping the sinks");
    for (auto& sink : config_.sinks) {
      if (auto flushed = sink.sink->flush(std::max(deadline, Clock::now())); !flushed) {
        log_->warn("sink {}: {}", sink.name, flushed.error().message);
      }
    }
    stop_sinks();
  }
  watchdog_.set_phase("releasing the plugins");
  if (shutdown_timed_out_) {
    log_->error("shutdown timeout of {} ms passed with deliveries unacknowledged",
                config_.shutdown_timeout.count());
  }
}

int Daemon::exit_code() const {
  if (shutdown_timed_out_ || startup_ == Startup::kFailed) return kExitRuntimeFailure;
  for (const auto& consumer : consumers_) {
    if (consumer->state() == ConsumerState::kFailed) return kExitRuntimeFailure;
  }
  return kExitOk;
}

std::optional<std::string> Daemon::not_ready_reason() const {
  const Startup startup = startup_.load();
  if (startup == Startup::kStarted) {
    // A failed consumer is the cause of what follows (its source stops when no consumer is
    // left), so it comes first, with its error.
    for (const auto& consumer : consumers_) {
      if (consumer->state() != ConsumerState::kFailed) continue;
      std::string error = consumer->status().error;
      return "consumer " + consumer->name() + " failed" + (error.empty() ? "" : ": " + error);
    }
  } else {
    std::lock_guard lock(startup_mutex_);
    return startup_reason_.empty() ? std::string("starting") : "starting: " + startup_reason_;
  }
  if (auto failure = store_->save_failure()) return failure;
  for (const auto& source : config_.sources) {
    if (!source.source->connected()) return "source " + source.name + " is not connected";
  }
  for (const auto& sink : config_.sinks) {
    if (!sink.sink->healthy()) return "sink " + sink.name + " is in a failed state";
  }
  return std::nullopt;
}

std::string Daemon::status_json() const {
  std::vector<ConsumerStatus> statuses;
  if (startup_ == Startup::kStarted) {
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
