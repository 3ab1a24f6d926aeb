#include "daemon/runtime/daemon.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <thread>

#include <fmt/format.h>
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

// "checkpoint store (redis)" for the top-level store, with the consumer's setting for its own.
std::string store_description(const CheckpointStoreInstance& instance) {
  if (instance.name == "checkpoints") return "checkpoint store (" + instance.type + ")";
  return "checkpoint store " + instance.name + " (" + instance.type + ")";
}

}  // namespace

void block_termination_signals() {
  const sigset_t set = awaited_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

Daemon::Daemon(DaemonConfig config, Metrics& metrics, ConfigLoader reload_config)
    : watchdog_(make_logger("cdcd")),
      config_(std::move(config)),
      metrics_(metrics),
      reload_config_(std::move(reload_config)),
      reload_metrics_(metrics.reload()),
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
  for (std::size_t i = 0; i < config_.checkpoint_stores.size(); ++i) {
    std::vector<std::string> consumer_names;
    for (const auto& consumer : config_.consumers) {
      if (consumer.checkpoint_store == i) consumer_names.push_back(consumer.name);
    }
    auto& instance = config_.checkpoint_stores[i];
    stores_.push_back(
        std::make_unique<InstrumentedCheckpointStore>(*instance.store, metrics_, consumer_names));
    auto& store = *stores_.back();
    if (auto started = retry_until_done(store_description(instance), [&] { return store.start(); });
        !started) {
      return started;
    }
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
    const auto& store = config_.checkpoint_stores[consumer_config.checkpoint_store];
    setup.store = stores_[consumer_config.checkpoint_store].get();
    setup.checkpoint_interval = store.interval;
    setup.metrics = &metrics_;
    setup.log = make_logger("consumer." + consumer_config.name);
    // The main thread (running run()) waits in sigtimedwait: a stopped consumer wakes it at once.
    setup.on_stopped = [this] { wake_main_thread(); };
    auto consumer = std::make_unique<Consumer>(std::move(setup));
    auto loaded =
        retry_until_done(store_description(store), [&] { return consumer->load_checkpoint(); });
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
    runners_.push_back(
        std::make_unique<SourceRunner>(source.name, source.source.get(), std::move(consumers),
                                       make_logger("source." + source.name), store_entities()));
  }
  // Holding the lock: shutdown() either sees no thread started, or every one of them.
  std::lock_guard lock(startup_mutex_);
  if (stopping_) return fail("stopped before the consumers started");
  for (auto& consumer : consumers_) consumer->start();
  for (auto& runner : runners_) runner->start();
  threads_started_ = true;
  return ok();
}

// What every checkpoint store writes to: no source delivers those changes (a save must never be
// a change that causes another save), whichever consumer's store it is.
std::vector<StoreEntity> Daemon::store_entities() const {
  std::vector<StoreEntity> entities;
  for (const auto& instance : config_.checkpoint_stores) {
    for (auto& entity : instance.store->own_entities()) entities.push_back(std::move(entity));
  }
  return entities;
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
  timespec period{0, 200 * 1000 * 1000};
  while (true) {
    int signo = sigtimedwait(&signals, nullptr, &period);
    if (signo == SIGTERM || signo == SIGINT) {
      log_->info("received {}, draining and committing checkpoints", strsignal(signo));
      break;
    }
    if (signo == SIGHUP) {
      reload();
      continue;
    }
    const Startup startup = startup_.load();
    if (startup == Startup::kFailed || startup == Startup::kInterrupted) break;
    if (startup == Startup::kStarted && !any_consumer_running()) break;
    tick();
  }
  notifier_.stopping();
  notifier_.status("stopping: draining and committing checkpoints");
  shutdown();
  if (http) http->stop();
  return exit_code();
}

void Daemon::stop_sinks() {
  for (auto& sink : config_.sinks) sink.sink->stop();
}

void Daemon::tick() {
  if (startup_.load() == Startup::kStarted) {
    for (auto& consumer : consumers_) consumer->refresh_metrics();
  }
  notifier_.status(status_line());
  if (!ready_sent_ && startup_.load() == Startup::kStarted && !not_ready_reason()) {
    notifier_.ready();
    ready_sent_ = true;
  }
  if (!notifier_.watchdog_interval()) return;
  if (auto stuck = stuck_thread()) {
    if (!stuck_logged_) log_->error("{}; withholding the systemd watchdog ping", *stuck);
    stuck_logged_ = true;
    return;
  }
  if (stuck_logged_) log_->info("every pipeline thread turns again; watchdog pings resume");
  stuck_logged_ = false;
  notifier_.watchdog_ping();
}

std::optional<std::string> Daemon::stuck_thread() const {
  if (startup_.load() != Startup::kStarted) return std::nullopt;
  // Each thread turns at least every few hundred milliseconds when healthy, idle or waiting for
  // acknowledgements; half the watchdog interval leaves the other half for the pings to go out.
  const auto tolerance = *notifier_.watchdog_interval() / 2;
  const auto now = Clock::now();
  auto seconds = [&](Clock::time_point since) {
    return std::chrono::duration<double>(now - since).count();
  };
  for (const auto& consumer : consumers_) {
    if (consumer->state() != ConsumerState::kRunning) continue;
    if (now - consumer->last_turn() > tolerance) {
      return fmt::format(
          "consumer {} is stuck: its thread has not turned for {:.1f} s (in a sink's "
          "write?)",
          consumer->name(), seconds(consumer->last_turn()));
    }
  }
  for (const auto& runner : runners_) {
    if (runner->ended()) continue;
    if (now - runner->last_turn() > tolerance) {
      return fmt::format("source {} is stuck: its thread has not turned for {:.1f} s",
                         runner->name(), seconds(runner->last_turn()));
    }
  }
  return std::nullopt;
}

std::string Daemon::status_line() const {
  if (auto reason = not_ready_reason()) return "not ready: " + *reason;
  std::size_t running = 0;
  const ConsumerStatus* laggiest = nullptr;
  std::vector<ConsumerStatus> statuses;
  for (const auto& consumer : consumers_) statuses.push_back(consumer->status());
  for (const auto& status : statuses) {
    if (status.state == ConsumerState::kRunning) ++running;
    if (!laggiest || status.lag_seconds > laggiest->lag_seconds) laggiest = &status;
  }
  std::string line = fmt::format("ready: {} of {} consumers running", running, statuses.size());
  if (laggiest) {
    line += fmt::format("; max lag {:.1f} s ({}), {} bytes", laggiest->lag_seconds, laggiest->name,
                        laggiest->lag_bytes);
  }
  return line;
}

void Daemon::reload() {
  log_->info("received SIGHUP, reading {} again", config_.file);
  std::optional<DaemonConfig> next;
  if (reload_config_) next = reload_config_();
  if (!next) {
    reload_metrics_.failures->Increment();
    reload_metrics_.last_successful->Set(0);
    log_->error("reload refused: {} is invalid (errors above); the running config is kept",
                config_.file);
    return;
  }
  if (next->metrics.listen != config_.metrics.listen) {
    log_->warn("metrics.listen changed from {} to {}: the HTTP server keeps {} until a restart",
               config_.metrics.listen, next->metrics.listen, config_.metrics.listen);
    next->metrics.listen = config_.metrics.listen;
  }
  notifier_.reloading();
  notifier_.status("reloading: draining the running pipeline");
  if (drain_pipeline(Clock::now() + config_.shutdown_timeout)) {
    log_->warn(
        "reload: deliveries still unacknowledged after {} ms were abandoned; they are "
        "delivered again from the checkpoint",
        config_.shutdown_timeout.count());
  }
  {
    // The old plugins go first: they hold the checkpoint store's lock, the replication slot and
    // the sinks' files that the new ones take.
    std::unique_lock lock(pipeline_mutex_);
    startup_ = Startup::kStarting;
    runners_.clear();
    consumers_.clear();
    stores_.clear();
    config_ = std::move(*next);
  }
  {
    std::lock_guard lock(startup_mutex_);
    stopping_ = false;
    threads_started_ = false;
    startup_reason_.clear();
  }
  ready_sent_ = false;
  reload_metrics_.last_successful->Set(1);
  reload_metrics_.last_success_time->SetToCurrentTime();
  log_->info("reloaded {}: {} sources, {} sinks, {} consumers", config_.file,
             config_.sources.size(), config_.sinks.size(), config_.consumers.size());
  starter_ = std::thread([this] { start_in_background(); });
}

void Daemon::shutdown() {
  const auto deadline = Clock::now() + config_.shutdown_timeout;
  watchdog_.arm(deadline + kStuckThreadGrace, kExitRuntimeFailure);
  shutdown_timed_out_ = drain_pipeline(deadline);
  watchdog_.set_phase("releasing the plugins");
  if (shutdown_timed_out_) {
    log_->error("shutdown timeout of {} ms passed with deliveries unacknowledged",
                config_.shutdown_timeout.count());
  }
}

bool Daemon::drain_pipeline(Clock::time_point deadline) {
  watchdog_.set_phase("starting (a checkpoint store or sink does not answer)");
  stop_startup();
  if (starter_.joinable()) starter_.join();
  bool threads_started;
  {
    std::lock_guard lock(startup_mutex_);
    threads_started = threads_started_;
  }
  watchdog_.set_phase("draining the consumers");
  for (auto& runner : runners_) runner->request_stop(deadline);
  // Consumers whose threads never started have nothing to drain.
  while (threads_started && Clock::now() < deadline && any_consumer_running()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    // A drain that makes progress is not a wedged daemon (a reload drains on this thread).
    if (notifier_.watchdog_interval() && !stuck_thread()) notifier_.watchdog_ping();
  }
  bool timed_out = false;
  bool sinks_stopped = false;
  if (threads_started && any_consumer_running()) {
    // Consumers blocked in a sink's write() only return once the sink is stopped.
    timed_out = true;
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
  return timed_out;
}

int Daemon::exit_code() const {
  if (shutdown_timed_out_ || startup_ == Startup::kFailed) return kExitRuntimeFailure;
  for (const auto& consumer : consumers_) {
    if (consumer->state() == ConsumerState::kFailed) return kExitRuntimeFailure;
  }
  return kExitOk;
}

std::optional<std::string> Daemon::not_ready_reason() const {
  std::shared_lock pipeline(pipeline_mutex_);
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
  for (const auto& store : stores_) {
    if (auto failure = store->save_failure()) return failure;
  }
  for (const auto& source : config_.sources) {
    if (!source.source->connected()) return "source " + source.name + " is not connected";
  }
  for (const auto& sink : config_.sinks) {
    if (!sink.sink->healthy()) return "sink " + sink.name + " is in a failed state";
  }
  return std::nullopt;
}

std::string Daemon::status_json() const {
  std::shared_lock pipeline(pipeline_mutex_);
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
  // A reload parses with the same plugins and metrics; its diagnostics go to the log, each line as
  // `validate` prints it.
  auto reload_config = [&]() -> std::optional<DaemonConfig> {
    config::Diagnostics reload_diagnostics;
    auto reloaded = load_config(config_path, registry, plugins, reload_diagnostics);
    const std::string text = reload_diagnostics.to_string();
    std::size_t start = 0;
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      log->log(reloaded ? spdlog::level::warn : spdlog::level::err, "{}",
               text.substr(start, end - start));
      start = end + 1;
    }
    return reloaded;
  };
  Daemon daemon(std::move(*config), metrics, reload_config);
  int code = daemon.run();
  log->info("cdcd exiting with code {}", code);
  return code;
}

}  // namespace cdcd
