// The daemon's HTTP endpoints during a run: lag gauges while a sink is stalled behind a backlog and
// after it caught up, event counters, checkpoint lsn, promtool's lint, health, readiness and
// status, and `cdcd status` both live and offline. Readiness names the real reason: a failed
// consumer with its error, a checkpoint store not up yet, checkpoint saves failing.

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/daemon_fixture.h"
#include "tests/support/postgres_server.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;

constexpr int kChanges = 50'000;
constexpr int kPrefixChanges = 1'000;

// The reading end of the FIFO a file sink writes to. While paused nothing is read: once the pipe's
// buffer is full the sink's write blocks, which is a stalled sink with a real backlog behind it.
class FifoReader {
 public:
  explicit FifoReader(const std::string& path) {
    if (::mkfifo(path.c_str(), 0644) != 0) throw std::runtime_error("mkfifo " + path);
    fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("open " + path);
    // A buffer larger than the first chunk of events the consumer takes, so that it goes once
    // around its loop (and publishes its gauges) with the backlog in view before it blocks.
    ::fcntl(fd_, F_SETPIPE_SZ, 1 << 20);
    thread_ = std::thread([this] { run(); });
  }
  ~FifoReader() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }

  void pause() { paused_ = true; }
  void resume() { paused_ = false; }
  std::string text() const {
    std::lock_guard lock(mutex_);
    return text_;
  }

 private:
  void run() {
    char buffer[65536];
    while (!stop_) {
      if (paused_) {
        std::this_thread::sleep_for(5ms);
        continue;
      }
      pollfd readable{fd_, POLLIN, 0};
      ::poll(&readable, 1, 20);
      ssize_t n = ::read(fd_, buffer, sizeof buffer);
      if (n > 0) {
        std::lock_guard lock(mutex_);
        text_.append(buffer, static_cast<std::size_t>(n));
      } else {
        // No writer yet or any more (read returns 0), or nothing to read (EAGAIN).
        std::this_thread::sleep_for(5ms);
      }
    }
  }

  int fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> paused_{false};
  mutable std::mutex mutex_;
  std::string text_;
};

std::optional<double> consumer_metric(const std::vector<MetricSample>& samples,
                                      const std::string& name) {
  return metric_value(samples, name, {{"consumer", "mirror"}});
}

std::optional<nlohmann::json> mirror_status(const nlohmann::json& document) {
  if (!document.contains("consumers") || !document["consumers"].is_array()) return std::nullopt;
  for (const auto& consumer : document["consumers"]) {
    if (consumer.value("name", "") == "mirror") return consumer;
  }
  return std::nullopt;
}

// A daemon tailing a log whose first transactions it has delivered, through a file sink writing
// into a FIFO the test reads (or stops reading).
class DaemonMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Commit times a minute ago, so that lag in seconds is small and measurable.
    const std::int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
    generate_changelog(dir_.file("generated.jsonl"), kChanges, 300, 7, now_us - 60'000'000);
    log_text_ = read_file(dir_.file("generated.jsonl"));
    log_ = read_native_file(dir_.file("generated.jsonl"));
    ASSERT_EQ(log_.changes.size(), static_cast<std::size_t>(kChanges));
    // A prefix of whole transactions; the rest is appended at once later, as the backlog.
    prefix_end_ = kPrefixChanges;
    while (log_.changes[prefix_end_].lsn == log_.changes[prefix_end_ - 1].lsn) ++prefix_end_;
    prefix_lsn_ = log_.changes[prefix_end_ - 1].lsn;
    last_lsn_ = log_.changes.back().lsn;
    write_file(log_path_, log_text_.substr(0, log_.changes[prefix_end_ - 1].end) +
                              commit_marker_line(prefix_lsn_));

    reader_ = std::make_unique<FifoReader>(fifo_path_);
    port_ = free_port();
    config_ = write_config(dir_, R"(
sources:
  log: {type: jsonl, path: )" + log_path_ +
                                     R"(, follow: true, poll_interval: 20ms}
sinks:
  slow: {type: file, path: )" + fifo_path_ +
                                     R"(, format: native, fsync: never}
checkpoints: {type: file, dir: )" + dir_.file("checkpoints") +
                                     R"(, interval: 200ms}
consumers:
  mirror:
    source: log
    sinks: [slow]
    batch: {max_events: 50, max_wait: 20ms}
metrics: {listen: 127.0.0.1:)" + std::to_string(port_) +
                                     R"(}
log: {level: info}
)");
    daemon_ = std::make_unique<DaemonProcess>(config_, dir_.path());
    daemon_->start();

    ASSERT_TRUE(wait_until(
        [&] {
          auto health = http_get(port_, "/healthz");
          return health && health->status == 200;
        },
        scaled(30s)))
        << daemon_->stderr_text();
    ASSERT_TRUE(wait_until(
        [&] {
          auto ready = http_get(port_, "/readyz");
          return ready && ready->status == 200;
        },
        scaled(30s)))
        << daemon_->stderr_text();

    // Caught up with the prefix: checkpoint at its end, no lag.
    ASSERT_TRUE(wait_until(
        [&] {
          auto samples = scrape(port_);
          return consumer_metric(samples, "cdcd_consumer_checkpoint_lsn") == prefix_lsn_ &&
                 consumer_metric(samples, "cdcd_consumer_lag_seconds") == 0.0 &&
                 consumer_metric(samples, "cdcd_consumer_lag_bytes") == 0.0;
        },
        scaled(30s)))
        << http_get(port_, "/metrics").value_or(HttpResponse{}).body << daemon_->stderr_text();
    EXPECT_EQ(metric_sum(scrape(port_), "cdcd_events_total", {{"consumer", "mirror"}}),
              static_cast<double>(prefix_end_));
  }

  void TearDown() override {
    if (daemon_ && daemon_->running()) {
      reader_->resume();
      daemon_->stop(scaled(30s));
    }
  }

  // Stops reading the FIFO and appends the rest of the log; returns the scrape that shows both lag
  // gauges above 0.
  std::vector<MetricSample> stall_behind_a_backlog() {
    reader_->pause();
    append_file(log_path_, log_text_.substr(log_.changes[prefix_end_ - 1].end) +
                               commit_marker_line(last_lsn_));
    std::vector<MetricSample> stalled;
    EXPECT_TRUE(wait_until(
        [&] {
          stalled = scrape(port_);
          return consumer_metric(stalled, "cdcd_consumer_lag_seconds") > 0.0 &&
                 consumer_metric(stalled, "cdcd_consumer_lag_bytes") > 0.0;
        },
        scaled(10s)))
        << "lag gauges while the sink is stalled: seconds "
        << consumer_metric(stalled, "cdcd_consumer_lag_seconds").value_or(-1) << ", bytes "
        << consumer_metric(stalled, "cdcd_consumer_lag_bytes").value_or(-1);
    EXPECT_LT(consumer_metric(stalled, "cdcd_consumer_checkpoint_lsn").value_or(0), last_lsn_);
    return stalled;
  }

  TempDir dir_;
  std::string log_path_ = dir_.file("changes.jsonl");
  std::string fifo_path_ = dir_.file("sink.fifo");
  std::string log_text_;
  NativeFile log_;
  std::size_t prefix_end_ = 0;
  std::uint64_t prefix_lsn_ = 0;
  std::uint64_t last_lsn_ = 0;
  std::unique_ptr<FifoReader> reader_;
  int port_ = 0;
  std::string config_;
  std::unique_ptr<DaemonProcess> daemon_;
};

// Lag is "now minus the commit time of the oldest change not yet acknowledged": while the sink
// stays stalled it keeps growing, even though the consumer is blocked in the sink's write.
TEST_F(DaemonMetricsTest, LagSecondsKeepsGrowingWhileTheSinkIsStalled) {
  stall_behind_a_backlog();
  // Blocked: the pipe is full and no event is counted any more.
  double events = -1;
  ASSERT_TRUE(wait_until(
      [&] {
        double before = events;
        std::this_thread::sleep_for(300ms);
        events = metric_sum(scrape(port_), "cdcd_events_total", {{"consumer", "mirror"}});
        return events == before;
      },
      scaled(20s)));
  const auto lag_at_stall = consumer_metric(scrape(port_), "cdcd_consumer_lag_seconds");
  ASSERT_TRUE(lag_at_stall);
  std::this_thread::sleep_for(1500ms);
  EXPECT_GE(consumer_metric(scrape(port_), "cdcd_consumer_lag_seconds").value_or(0),
            *lag_at_stall + 1.0)
      << "cdcd_consumer_lag_seconds did not grow during 1.5 s of a stalled sink";
  reader_->resume();
  EXPECT_TRUE(wait_until(
      [&] {
        auto samples = scrape(port_);
        return consumer_metric(samples, "cdcd_consumer_checkpoint_lsn") == last_lsn_ &&
               consumer_metric(samples, "cdcd_consumer_lag_seconds") == 0.0;
      },
      scaled(60s)));
  EXPECT_EQ(daemon_->stop(scaled(30s)), 0) << daemon_->stderr_text();
}

TEST_F(DaemonMetricsTest, LagGaugesTrackABacklogBehindAStalledSinkAndReturnToZero) {
  auto stalled = stall_behind_a_backlog();
  const double events_while_stalled =
      metric_sum(stalled, "cdcd_events_total", {{"consumer", "mirror"}});
  EXPECT_LT(events_while_stalled, kChanges);
  // The source saw the end of the log: the backlog is measured against it.
  EXPECT_TRUE(wait_until(
      [&] {
        return metric_value(scrape(port_), "cdcd_source_head_lsn", {{"source", "log"}}) ==
               last_lsn_;
      },
      scaled(10s)));

  // The sink drains the backlog.
  reader_->resume();
  EXPECT_TRUE(wait_until(
      [&] {
        return metric_sum(scrape(port_), "cdcd_events_total", {{"consumer", "mirror"}}) >
               events_while_stalled;
      },
      scaled(10s)));
  std::string exposition;
  ASSERT_TRUE(wait_until(
      [&] {
        auto response = http_get(port_, "/metrics");
        if (!response) return false;
        exposition = response->body;
        auto samples = parse_metrics(exposition);
        return consumer_metric(samples, "cdcd_consumer_checkpoint_lsn") == last_lsn_ &&
               consumer_metric(samples, "cdcd_consumer_lag_seconds") == 0.0 &&
               consumer_metric(samples, "cdcd_consumer_lag_bytes") == 0.0;
      },
      scaled(60s)))
      << exposition << daemon_->stderr_text();

  // Every change counted once, by operation.
  std::map<std::string, int> by_operation;
  for (const auto& change : log_.changes) ++by_operation[change.operation];
  auto samples = parse_metrics(exposition);
  for (const auto& [operation, count] : by_operation) {
    EXPECT_EQ(metric_value(samples, "cdcd_events_total",
                           {{"consumer", "mirror"}, {"sink", "slow"}, {"operation", operation}}),
              count)
        << operation;
  }
  EXPECT_EQ(metric_value(samples, "cdcd_source_read_lsn", {{"source", "log"}}), last_lsn_);

  // The exposition passes Prometheus' own lint.
  write_file(dir_.file("metrics.txt"), exposition);
  std::string lint;
  EXPECT_EQ(
      run_command({"/bin/sh", "-c", "promtool check metrics < " + dir_.file("metrics.txt")}, &lint),
      0)
      << lint;

  auto health = http_get(port_, "/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto ready = http_get(port_, "/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200) << ready->body;
  auto status = http_get(port_, "/status");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status, 200);
  auto status_document = nlohmann::json::parse(status->body, nullptr, false);
  ASSERT_TRUE(status_document.is_object()) << status->body;
  auto mirror = mirror_status(status_document);
  ASSERT_TRUE(mirror) << status->body;
  EXPECT_EQ((*mirror)["state"], "running");
  EXPECT_EQ((*mirror)["source"], "log");
  ASSERT_TRUE((*mirror)["checkpoint"].is_object()) << status->body;
  EXPECT_EQ((*mirror)["checkpoint"]["lsn"], last_lsn_);

  // `cdcd status` asks the running daemon.
  auto live = run_cdcd({"status", "--config", config_, "--json"});
  ASSERT_EQ(live.exit_code, 0) << live.err;
  auto live_document = nlohmann::json::parse(live.out, nullptr, false);
  ASSERT_TRUE(live_document.is_object()) << live.out;
  EXPECT_EQ(live_document.value("daemon", ""), "running") << live.out;
  auto live_mirror = mirror_status(live_document);
  ASSERT_TRUE(live_mirror) << live.out;
  EXPECT_EQ((*live_mirror)["state"], "running");
  EXPECT_EQ((*live_mirror)["checkpoint"]["lsn"], last_lsn_);
  EXPECT_EQ((*live_mirror)["lag_bytes"], 0);

  EXPECT_EQ(daemon_->stop(scaled(30s)), 0) << daemon_->stderr_text();
  EXPECT_FALSE(http_get(port_, "/healthz")) << "still serving after exit";

  // Everything went through the stalled sink exactly once, in order. The daemon is gone: what it
  // wrote last is in the pipe's buffer for the reader to take.
  EXPECT_TRUE(wait_until(
      [&] {
        auto text = reader_->text();
        return std::count(text.begin(), text.end(), '\n') >= kChanges;
      },
      scaled(10s)));
  const std::string delivered_path = dir_.file("delivered.jsonl");
  write_file(delivered_path, reader_->text());
  NativeFile delivered = read_native_file(delivered_path);
  EXPECT_TRUE(delivered.unparsed.empty());
  ASSERT_EQ(delivered.changes.size(), log_.changes.size());
  for (std::size_t i = 0; i < log_.changes.size(); ++i) {
    ASSERT_TRUE(delivered.changes[i].same_change(log_.changes[i]))
        << "line " << i + 1 << ": " << delivered.changes[i].describe() << " vs "
        << log_.changes[i].describe();
  }

  // Offline, `cdcd status` reads the checkpoint store.
  auto offline = run_cdcd({"status", "--config", config_, "--json"});
  ASSERT_EQ(offline.exit_code, 0) << offline.err;
  auto offline_document = nlohmann::json::parse(offline.out, nullptr, false);
  ASSERT_TRUE(offline_document.is_object()) << offline.out;
  EXPECT_EQ(offline_document.value("daemon", ""), "not running") << offline.out;
  auto offline_mirror = mirror_status(offline_document);
  ASSERT_TRUE(offline_mirror) << offline.out;
  EXPECT_EQ((*offline_mirror)["state"], "stopped");
  ASSERT_TRUE((*offline_mirror)["checkpoint"].is_object()) << offline.out;
  EXPECT_EQ((*offline_mirror)["checkpoint"]["lsn"], last_lsn_);
  auto table = run_cdcd({"status", "--config", config_});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("mirror"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(std::to_string(last_lsn_)), std::string::npos) << table.out;
}

bool body_names(const std::optional<HttpResponse>& response, const std::string& text) {
  return response && response->body.find(text) != std::string::npos;
}

// One consumer stops on a malformed line while another dead-letters it and keeps running: /readyz
// names the failed consumer and its error, not a symptom.
TEST(DaemonReadinessTest, AFailedConsumerComesFirstWithItsError) {
  TempDir dir;
  const std::string log = dir.file("changes.jsonl");
  generate_changelog(dir.file("generated.jsonl"), 20, 5);
  write_file(log, read_file(dir.file("generated.jsonl")) + "this is not a change\n");
  const int port = free_port();
  const std::string config = write_config(dir, R"(
sources:
  log: {type: jsonl, path: )" + log + R"(, follow: true, poll_interval: 20ms}
sinks:
  a: {type: file, path: )" + dir.file("a.jsonl") + R"(, format: native, fsync: never}
  b: {type: file, path: )" + dir.file("b.jsonl") + R"(, format: native, fsync: never}
  dlq: {type: file, path: )" + dir.file("dlq.jsonl") +
                                                   R"(, format: native, fsync: never}
checkpoints: {type: file, dir: )" + dir.file("checkpoints") +
                                                   R"(, interval: 100ms}
consumers:
  strict: {source: log, sinks: [a], on_error: stop}
  lenient: {source: log, sinks: [b], on_error: dead_letter, dead_letter_sink: dlq}
metrics: {listen: 127.0.0.1:)" + std::to_string(port) +
                                                   R"(}
)");
  DaemonProcess daemon(config, dir.path());
  daemon.start();
  std::optional<HttpResponse> ready;
  ASSERT_TRUE(wait_until(
      [&] {
        ready = http_get(port, "/readyz");
        return body_names(ready, "consumer strict failed");
      },
      scaled(30s)))
      << (ready ? ready->body : "no answer") << daemon.stderr_text();
  EXPECT_EQ(ready->status, 503);
  // The error says where and why.
  EXPECT_TRUE(body_names(ready, "consumer strict failed: " + log)) << ready->body;
  EXPECT_TRUE(daemon.running());
  EXPECT_EQ(daemon.stop(scaled(30s)), 1) << daemon.stderr_text();
}

// A checkpoint store that is not up yet at start is retried while /readyz names it; once it is
// up everything flows. Saves failing later show in /readyz and in the metrics, and recover.
TEST(DaemonReadinessTest, ACheckpointStoreNotUpYetIsWaitedForAndSaveFailuresShow) {
  TempDir dir;
  PostgresServer server;
  const std::string db = server.create_database();
  server.stop();
  const std::string log = dir.file("changes.jsonl");
  generate_changelog(dir.file("generated.jsonl"), 2'000, 100);
  const std::string text = read_file(dir.file("generated.jsonl"));
  const auto changes = read_native_file(dir.file("generated.jsonl")).changes;
  const NativeChange& middle_change = last_change_of_middle_transaction(changes);
  const auto half = middle_change.end;
  // Each write ends with a commit marker: a followed transaction is checkpointed at once.
  write_file(log, text.substr(0, half) + commit_marker_line(middle_change.lsn));
  const int port = free_port();
  const std::string config = write_config(dir, R"(
sources:
  log: {type: jsonl, path: )" + log + R"(, follow: true, poll_interval: 20ms}
sinks:
  out: {type: file, path: )" + dir.file("out.jsonl") +
                                                   R"(, format: native, fsync: never}
checkpoints: {type: postgres, dsn: ")" + server.dsn(db) +
                                                   R"(", interval: 100ms}
consumers:
  mirror: {source: log, sinks: [out]}
metrics: {listen: 127.0.0.1:)" + std::to_string(port) +
                                                   R"(}
)");
  DaemonProcess daemon(config, dir.path());
  daemon.start();
  std::optional<HttpResponse> ready;
  ASSERT_TRUE(wait_until(
      [&] {
        ready = http_get(port, "/readyz");
        return body_names(ready, "checkpoint store (postgres) is not available yet");
      },
      scaled(30s)))
      << (ready ? ready->body : "no answer") << daemon.stderr_text();
  EXPECT_EQ(ready->status, 503);
  ASSERT_TRUE(daemon.running()) << daemon.stderr_text();

  server.start();
  auto checkpoint_lsn = [&]() -> std::string {
    try {
      return server.query_value("SELECT lsn FROM cdcd_checkpoints WHERE consumer = 'mirror'", db)
          .value_or("0");
    } catch (const std::exception&) {
      return "0";  // the store has not created its table yet
    }
  };
  const std::string middle = std::to_string(middle_change.lsn);
  ASSERT_TRUE(wait_until([&] { return checkpoint_lsn() == middle; }, scaled(60s)))
      << checkpoint_lsn() << daemon.stderr_text();
  ASSERT_TRUE(wait_until(
      [&] {
        ready = http_get(port, "/readyz");
        return ready && ready->status == 200;
      },
      scaled(30s)))
      << (ready ? ready->body : "no answer");
  const double first_save_time =
      metric_value(scrape(port), "cdcd_checkpoint_last_save_timestamp_seconds",
                   {{"consumer", "mirror"}})
          .value_or(0);
  EXPECT_GT(first_save_time, 0);

  // The store goes away while changes keep coming: saves fail, and say so.
  server.stop();
  append_file(log, text.substr(half) + commit_marker_line(changes.back().lsn));
  ASSERT_TRUE(wait_until(
      [&] {
        return metric_value(scrape(port), "cdcd_checkpoint_save_errors_total",
                            {{"consumer", "mirror"}})
                   .value_or(0) > 0;
      },
      scaled(30s)))
      << daemon.stderr_text();
  ready = http_get(port, "/readyz");
  EXPECT_TRUE(body_names(ready, "consumer mirror cannot save its checkpoint"))
      << (ready ? ready->body : "no answer");
  EXPECT_EQ(ready ? ready->status : 0, 503);

  server.start();
  const std::string last = std::to_string(changes.back().lsn);
  ASSERT_TRUE(wait_until([&] { return checkpoint_lsn() == last; }, scaled(60s)))
      << checkpoint_lsn() << daemon.stderr_text();
  ASSERT_TRUE(wait_until(
      [&] {
        ready = http_get(port, "/readyz");
        return ready && ready->status == 200;
      },
      scaled(30s)))
      << (ready ? ready->body : "no answer");
  EXPECT_GT(metric_value(scrape(port), "cdcd_checkpoint_last_save_timestamp_seconds",
                         {{"consumer", "mirror"}})
                .value_or(0),
            first_save_time);
  EXPECT_EQ(daemon.stop(scaled(30s)), 0) << daemon.stderr_text();
  EXPECT_EQ(read_native_file(dir.file("out.jsonl")).changes.size(), changes.size());
  server.drop_database(db);
}

}  // namespace
}  // namespace cdcd::test
