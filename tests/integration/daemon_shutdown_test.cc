// The daemon's life cycle as an operator sees it: SIGTERM ends the real `cdcd` binary within
// `shutdown_timeout` whatever its sinks and sources are stuck in (exit 1 when deliveries are still
// unacknowledged, 0 when everything was), SIGHUP does not end it, and a checkpoint store serves
// one process at a time.

#include <signal.h>

#include <chrono>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/daemon_fixture.h"
#include "tests/support/kafka_cluster.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kShutdownTimeout = 2s;
// The daemon's grace after the deadline before its watchdog ends the process (kStuckThreadGrace).
constexpr auto kWatchdogGrace = 2s;
// Process exit, log flushing and the test's own polling.
constexpr auto kSlack = 1s;
constexpr char kWatchdogLine[] = "shutdown did not finish in time";

std::string shutdown_timeout_yaml() {
  return "shutdown_timeout: " + std::to_string(kShutdownTimeout.count()) + "s\n";
}

struct Stopped {
  std::optional<int> exit_code;
  std::chrono::milliseconds took{0};
};

class DaemonShutdownTest : public ::testing::Test {
 protected:
  // A config whose consumer `main` reads `source_yaml` (source `in`) into `sinks_yaml` (sink
  // `out`).
  void write(const std::string& source_yaml, const std::string& sinks_yaml) {
    port_ = free_port();
    config_ = write_config(
        dir_, "sources:\n  in: " + source_yaml + "\nsinks:\n  out: " + sinks_yaml +
                  "\ncheckpoints: {type: file, dir: " + dir_.file("checkpoints") +
                  ", interval: 100ms}\n"
                  "consumers:\n  main:\n    source: in\n    sinks: [out]\n"
                  "    batch: {max_events: 100, max_wait: 20ms}\n" +
                  shutdown_timeout_yaml() + "metrics: {listen: 127.0.0.1:" + std::to_string(port_) +
                  "}\nlog: {level: info}\n");
    daemon_ = std::make_unique<DaemonProcess>(config_, dir_.path());
  }

  std::string jsonl_source(const std::string& path) {
    return "{type: jsonl, path: " + path + ", follow: true, poll_interval: 20ms}";
  }

  bool ready() {
    auto response = http_get(port_, "/readyz");
    return response && response->status == 200;
  }

  // SIGTERM, and how long the daemon took to exit (killed after a generous bound).
  Stopped terminate() {
    const auto sent = Clock::now();
    Stopped stopped;
    stopped.exit_code = daemon_->stop(scaled(60s));
    stopped.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - sent);
    return stopped;
  }

  // The daemon ended through its orderly path: blocked writes returned once the sinks were
  // stopped at the deadline, without the watchdog.
  void expect_orderly_timeout(const Stopped& stopped) {
    EXPECT_EQ(stopped.exit_code, 1) << daemon_->stderr_text();
    EXPECT_LT(stopped.took, scaled(kShutdownTimeout + kSlack)) << daemon_->stderr_text();
    EXPECT_NE(daemon_->stderr_text().find("deliveries unacknowledged"), std::string::npos)
        << daemon_->stderr_text();
    EXPECT_EQ(daemon_->stderr_text().find(kWatchdogLine), std::string::npos)
        << "the watchdog had to end the process: the sink's write() did not return after stop()\n"
        << daemon_->stderr_text();
  }

  TempDir dir_;
  int port_ = 0;
  std::string config_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(DaemonShutdownTest, FileSinkOnAFullDiskEndsWithinTheTimeout) {
  write(jsonl_source(source_dir() + "/configs/sample-changelog.jsonl"),
        "{type: file, path: /dev/full, format: native, fsync: never}");
  daemon_->start();
  ASSERT_TRUE(wait_until(
      [&] { return daemon_->stderr_text().find("No space left on device") != std::string::npos; },
      scaled(30s)))
      << daemon_->stderr_text();
  expect_orderly_timeout(terminate());
}

TEST_F(DaemonShutdownTest, StdoutSinkIntoAPipeNobodyReadsEndsWithinTheTimeout) {
  const std::string log = dir_.file("changes.jsonl");
  generate_changelog(log, 20'000, 500);
  UnreadFifo pipe(dir_.file("stdout.fifo"));
  write(jsonl_source(log), "{type: stdout, format: native}");
  daemon_->start_with_stdout(pipe.path());
  // The pipe's buffer (16 pages of 4 KiB by default) fills up and nobody will ever read: 20,000
  // changes are far more than it holds, so the sink ends up waiting on it. How full it gets
  // depends on how the sink's writes land in pages (a non-blocking writer leaves part-filled
  // pages), so wait for it to be half full and for the consumer to be behind.
  ASSERT_TRUE(wait_until(
      [&] {
        return pipe.buffered_bytes() > 65536 / 2 &&
               metric_value(scrape(port_), "cdcd_consumer_lag_bytes", {{"consumer", "main"}})
                       .value_or(0) > 0;
      },
      scaled(30s)))
      << pipe.buffered_bytes() << " bytes in the pipe\n"
      << daemon_->stderr_text();
  expect_orderly_timeout(terminate());
}

TEST_F(DaemonShutdownTest, KafkaSinkWithBrokersDownAndAFullProducerQueueEndsWithinTheTimeout) {
  KafkaMockCluster cluster(dir_.path());
  cluster.create_topic("events", 3);
  const std::string log = dir_.file("changes.jsonl");
  write_file(log, "");
  write(jsonl_source(log), "{type: kafka, brokers: \"" + cluster.bootstrap() +
                               "\", topic: events, format: native, "
                               "properties: {queue.buffering.max.messages: \"100\"}}");
  daemon_->start();
  ASSERT_TRUE(wait_until([&] { return ready(); }, scaled(30s))) << daemon_->stderr_text();
  for (int broker = 1; broker <= 3; ++broker) cluster.broker_down(broker);
  generate_changelog(dir_.file("generated.jsonl"), 5'000, 500);
  append_file(log, read_file(dir_.file("generated.jsonl")));
  // Changes are read and stuck behind the sink: its queue of 100 messages is full.
  ASSERT_TRUE(wait_until(
      [&] {
        auto samples = scrape(port_);
        return metric_value(samples, "cdcd_consumer_lag_bytes", {{"consumer", "main"}})
                   .value_or(0) > 0;
      },
      scaled(30s)))
      << daemon_->stderr_text();
  expect_orderly_timeout(terminate());
}

TEST_F(DaemonShutdownTest, PostgresSourceWhoseServerNeverAnswersEndsWithinTheTimeout) {
  SilentTcpServer server;
  write("{type: postgres, dsn: \"host=127.0.0.1 port=" + std::to_string(server.port()) +
            " dbname=postgres user=postgres\", slot: cdcd_silent, publication: cdcd_silent}",
        "{type: file, path: " + dir_.file("out.jsonl") + ", format: native}");
  daemon_->start();
  // The source thread is inside libpq's connect, waiting for the server's first answer.
  ASSERT_TRUE(wait_until([&] { return server.has_waiting_client(); }, scaled(30s)))
      << daemon_->stderr_text();
  Stopped stopped = terminate();
  EXPECT_EQ(stopped.exit_code, 1) << daemon_->stderr_text();
  EXPECT_LT(stopped.took, scaled(kShutdownTimeout + kWatchdogGrace + kSlack))
      << daemon_->stderr_text();
  // A blocking library call cannot be interrupted: the watchdog ended the process, and said why.
  EXPECT_NE(daemon_->stderr_text().find(kWatchdogLine), std::string::npos)
      << daemon_->stderr_text();
}

TEST_F(DaemonShutdownTest, ExitsZeroWhenEverythingWasAcknowledged) {
  const std::string log = dir_.file("changes.jsonl");
  generate_changelog(log, 2'000, 100);
  const auto changes = read_native_file(log).changes;
  append_file(log, commit_marker_line(changes.back().lsn));  // checkpointed without a next lsn
  write(jsonl_source(log),
        "{type: file, path: " + dir_.file("out.jsonl") + ", format: native, fsync: never}");
  daemon_->start();
  ASSERT_TRUE(
      wait_for_checkpoint(dir_.file("checkpoints/main.json"), changes.back().lsn, scaled(30s)))
      << daemon_->stderr_text();
  Stopped stopped = terminate();
  EXPECT_EQ(stopped.exit_code, 0) << daemon_->stderr_text();
  EXPECT_LT(stopped.took, scaled(kShutdownTimeout)) << daemon_->stderr_text();
  EXPECT_EQ(read_native_file(dir_.file("out.jsonl")).changes.size(), changes.size());
}

// SIGHUP reloads the config (tests/integration/daemon_service_test.cc covers changed configs): with
// the same config the pipeline drains and starts again without losing or repeating a change.
TEST_F(DaemonShutdownTest, SighupReloadsWithoutLosingOrRepeatingChanges) {
  const std::string log = dir_.file("changes.jsonl");
  generate_changelog(dir_.file("generated.jsonl"), 2'000, 100);
  const std::string text = read_file(dir_.file("generated.jsonl"));
  const auto changes = read_native_file(dir_.file("generated.jsonl")).changes;
  const NativeChange& middle_change = last_change_of_middle_transaction(changes);
  const auto half = middle_change.end;
  write_file(log, text.substr(0, half) + commit_marker_line(middle_change.lsn));
  write(jsonl_source(log),
        "{type: file, path: " + dir_.file("out.jsonl") + ", format: native, fsync: never}");
  daemon_->start();
  ASSERT_TRUE(wait_until([&] { return ready(); }, scaled(30s))) << daemon_->stderr_text();

  ::kill(daemon_->pid(), SIGHUP);
  ASSERT_TRUE(wait_until(
      [&] { return daemon_->stderr_text().find("reloaded ") != std::string::npos; }, scaled(10s)))
      << daemon_->stderr_text();
  // Still running and still delivering what comes after the signal.
  append_file(log, text.substr(half) + commit_marker_line(changes.back().lsn));
  ASSERT_TRUE(
      wait_for_checkpoint(dir_.file("checkpoints/main.json"), changes.back().lsn, scaled(30s)))
      << daemon_->stderr_text();
  EXPECT_EQ(terminate().exit_code, 0) << daemon_->stderr_text();
  const auto delivered = read_native_file(dir_.file("out.jsonl")).changes;
  ASSERT_EQ(delivered.size(), changes.size());
  for (std::size_t i = 0; i < changes.size(); ++i) {
    EXPECT_TRUE(delivered[i].same_change(changes[i])) << i << ": " << delivered[i].describe();
  }
}

// A SIGTERM lands while the log is being read, most likely inside a transaction whose first changes
// the sink already wrote: the source reads on to that transaction's end, so that the checkpoint
// covers everything delivered and the next start repeats nothing.
TEST_F(DaemonShutdownTest, AStopInsideATransactionDoesNotRepeatItAtTheNextStart) {
  const std::string log = dir_.file("changes.jsonl");
  generate_changelog(log, 60'000, 500);
  const auto changes = read_native_file(log).changes;
  append_file(log, commit_marker_line(changes.back().lsn));
  const std::string out = dir_.file("out.jsonl");
  write(jsonl_source(log), "{type: file, path: " + out + ", format: native, fsync: never}");
  daemon_->start();
  ASSERT_TRUE(wait_until([&] { return !read_file(out).empty(); }, scaled(30s)))
      << daemon_->stderr_text();
  EXPECT_EQ(terminate().exit_code, 0) << daemon_->stderr_text();
  const std::size_t first_run = read_native_file(out).changes.size();

  daemon_->start();
  ASSERT_TRUE(wait_until([&] { return ready(); }, scaled(30s))) << daemon_->stderr_text();
  ASSERT_TRUE(
      wait_for_checkpoint(dir_.file("checkpoints/main.json"), changes.back().lsn, scaled(60s)))
      << daemon_->stderr_text();
  EXPECT_EQ(terminate().exit_code, 0) << daemon_->stderr_text();
  const auto delivered = read_native_file(out).changes;
  ASSERT_EQ(delivered.size(), changes.size())
      << "the first run delivered " << first_run << " of " << changes.size() << " changes";
  for (std::size_t i = 0; i < changes.size(); ++i) {
    ASSERT_TRUE(delivered[i].same_change(changes[i])) << i << ": " << delivered[i].describe();
  }
}

// Two daemons on one checkpoint store, or `cdcd checkpoint set|reset` while one runs, would
// overwrite each other's checkpoints: the store's lock refuses the second one, naming the first.
TEST_F(DaemonShutdownTest, ASecondProcessOnTheSameCheckpointStoreIsRefused) {
  const std::string log = dir_.file("changes.jsonl");
  generate_changelog(log, 500, 50);
  const auto changes = read_native_file(log).changes;
  append_file(log, commit_marker_line(changes.back().lsn));  // checkpointed without a next lsn
  write(jsonl_source(log),
        "{type: file, path: " + dir_.file("out.jsonl") + ", format: native, fsync: never}");
  daemon_->start();
  ASSERT_TRUE(
      wait_for_checkpoint(dir_.file("checkpoints/main.json"), changes.back().lsn, scaled(30s)))
      << daemon_->stderr_text();
  const std::string holder = "process " + std::to_string(daemon_->pid());

  // The same store under another metrics port, so that only the store can refuse it.
  const std::string second_config = write_config(
      dir_,
      read_file(config_).replace(read_file(config_).find(std::to_string(port_)),
                                 std::to_string(port_).size(), std::to_string(free_port())),
      "second.yaml");
  auto second = run_cdcd({"run", "--config", second_config}, scaled(30s));
  EXPECT_EQ(second.exit_code, 1) << second.err;
  EXPECT_NE(second.err.find("is in use by " + holder), std::string::npos) << second.err;

  for (auto command : std::vector<std::vector<std::string>>{
           {"checkpoint", "reset", "--config", config_, "--consumer", "main"},
           {"checkpoint", "set", "--config", config_, "--consumer", "main", "--lsn", "1"}}) {
    auto refused = run_cdcd(command, scaled(30s));
    EXPECT_EQ(refused.exit_code, 1) << refused.err;
    EXPECT_NE(refused.err.find("is in use by " + holder), std::string::npos) << refused.err;
  }
  // Nothing was overwritten.
  auto checkpoint = read_checkpoint_file(dir_.file("checkpoints/main.json"));
  ASSERT_TRUE(checkpoint);
  EXPECT_EQ(checkpoint->lsn, changes.back().lsn);
  EXPECT_EQ(terminate().exit_code, 0) << daemon_->stderr_text();

  // Once the daemon is gone, the store is free again.
  auto reset = run_cdcd({"checkpoint", "reset", "--config", config_, "--consumer", "main"});
  EXPECT_EQ(reset.exit_code, 0) << reset.err;
}

}  // namespace
}  // namespace cdcd::test
