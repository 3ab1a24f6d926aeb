// The daemon as a service manager runs it: the metrics endpoint on a kernel-chosen port with the
// content type Prometheus 3 requires, systemd's notification protocol (READY=1, STATUS=,
// WATCHDOG=1, STOPPING=1) read from a real AF_UNIX datagram socket given as NOTIFY_SOCKET, the
// watchdog pings stopping when a consumer is wedged in a sink, and configuration reload on SIGHUP
// (consumers and sinks added, removed and changed; an invalid config refused) checked by the exact
// changes each file sink received.

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/daemon_fixture.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// systemd's side of sd_notify(3): a datagram socket the daemon sends "KEY=VALUE\n..." messages to,
// read continuously by a thread as systemd does (a full socket buffer would block the sender).
class NotifySocket {
 public:
  struct Message {
    Clock::time_point at;
    std::string text;
  };

  explicit NotifySocket(std::string path) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path_.size() >= sizeof address.sun_path) throw std::runtime_error("socket path too long");
    std::strcpy(address.sun_path, path_.c_str());
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      throw std::runtime_error("cannot bind " + path_);
    }
    reader_ = std::thread([this] { read(); });
  }
  ~NotifySocket() {
    stop_ = true;
    reader_.join();
    ::close(fd_);
  }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  const std::string& path() const { return path_; }

  // Waits until a message containing `text` arrives; the first such message.
  std::optional<Message> wait_for(const std::string& text, std::chrono::milliseconds timeout) {
    std::optional<Message> found;
    wait_until(
        [&] {
          std::lock_guard lock(mutex_);
          for (const auto& message : messages_) {
            if (message.text.find(text) != std::string::npos) {
              found = message;
              return true;
            }
          }
          return false;
        },
        timeout);
    return found;
  }

  std::vector<Clock::time_point> times_of(const std::string& text) const {
    std::lock_guard lock(mutex_);
    std::vector<Clock::time_point> times;
    for (const auto& message : messages_) {
      if (message.text.find(text) != std::string::npos) times.push_back(message.at);
    }
    return times;
  }

  std::string all_text() const {
    std::lock_guard lock(mutex_);
    std::string text;
    for (const auto& message : messages_) text += message.text + "\n---\n";
    return text;
  }

 private:
  void read() {
    while (!stop_) {
      pollfd readable{fd_, POLLIN, 0};
      if (::poll(&readable, 1, 20) <= 0) continue;
      char buffer[4096];
      ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) continue;
      std::lock_guard lock(mutex_);
      messages_.push_back({Clock::now(), std::string(buffer, static_cast<std::size_t>(n))});
    }
  }

  std::string path_;
  int fd_ = -1;
  std::thread reader_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<Message> messages_;
};

// The port a daemon started with `listen: 127.0.0.1:0` logged.
int logged_port(ChildProcess& daemon) {
  int port = 0;
  const std::regex serving(R"(serving /metrics.* \(port (\d+)\))");
  wait_until(
      [&] {
        std::smatch match;
        const std::string log = daemon.stderr_text();
        if (!std::regex_search(log, match, serving)) return false;
        port = std::stoi(match[1]);
        return true;
      },
      scaled(30s));
  return port;
}

// (lsn, seq) of each change: what identifies a delivery.
using Positions = std::vector<std::pair<std::uint64_t, std::uint32_t>>;

Positions positions(const std::vector<NativeChange>& changes) {
  Positions out;
  for (const auto& change : changes) out.emplace_back(change.lsn, change.seq);
  return out;
}

Positions delivered(const std::string& path) { return positions(read_native_file(path).changes); }

class DaemonServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    generate_changelog(dir_.file("generated.jsonl"), 400, 50);
    log_ = read_native_file(dir_.file("generated.jsonl"));
    text_ = read_file(dir_.file("generated.jsonl"));
  }

  // The daemon with NOTIFY_SOCKET (and WATCHDOG_USEC when given) in its environment.
  void start(const std::string& config, std::optional<std::chrono::microseconds> watchdog = {}) {
    std::map<std::string, std::string> env{{"NOTIFY_SOCKET", notify_.path()}};
    if (watchdog) env["WATCHDOG_USEC"] = std::to_string(watchdog->count());
    daemon_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{cdcd_binary(), "run", "--config", config}, dir_.path(), env);
    port_ = logged_port(*daemon_);
    ASSERT_GT(port_, 0) << daemon_->stderr_text();
  }

  // Appends the changes [from, to) of the generated log and a commit marker for the last one, so
  // that the transaction ending there is complete at once (`to` must end a transaction).
  void append_changes(std::size_t from, std::size_t to) {
    ASSERT_TRUE(to == log_.changes.size() || log_.changes[to].lsn != log_.changes[to - 1].lsn);
    append_file(log_path_, text_.substr(log_.changes[from].offset,
                                        log_.changes[to - 1].end - log_.changes[from].offset) +
                               commit_marker_line(log_.changes[to - 1].lsn));
  }

  // The index just past the transaction holding change `index`.
  std::size_t transaction_end_after(std::size_t index) const {
    while (index + 1 < log_.changes.size() &&
           log_.changes[index + 1].lsn == log_.changes[index].lsn) {
      ++index;
    }
    return index + 1;
  }

  Positions slice(std::size_t from, std::size_t to) const {
    return positions(
        std::vector<NativeChange>(log_.changes.begin() + from, log_.changes.begin() + to));
  }

  // Waits until `path` holds `expected` and nothing else.
  void expect_delivered(const std::string& path, const Positions& expected) {
    wait_until([&] { return delivered(path).size() >= expected.size(); }, scaled(30s));
    EXPECT_EQ(delivered(path), expected) << path << "\n" << daemon_->stderr_text();
  }

  void hangup_and_wait_for(const std::string& logged, std::size_t occurrence) {
    daemon_->signal(SIGHUP);
    ASSERT_TRUE(wait_until(
        [&] {
          const std::string log = daemon_->stderr_text();
          std::size_t count = 0;
          for (auto at = log.find(logged); at != std::string::npos; at = log.find(logged, at + 1)) {
            ++count;
          }
          return count >= occurrence;
        },
        scaled(30s)))
        << daemon_->stderr_text();
  }

  std::string config(const std::string& consumers, const std::string& sinks) {
    return "sources:\n  log: {type: jsonl, path: " + log_path_ +
           ", follow: true, poll_interval: 20ms}\n"
           "sinks:\n" +
           sinks + "checkpoints: {type: file, dir: " + dir_.file("checkpoints") +
           ", interval: 100ms}\n"
           "consumers:\n" +
           consumers +
           "metrics: {listen: 127.0.0.1:0}\n"
           "shutdown_timeout: 5s\n";
  }

  TempDir dir_;
  NotifySocket notify_{dir_.file("notify.sock")};
  std::string log_path_ = dir_.file("changes.jsonl");
  NativeFile log_;
  std::string text_;
  std::unique_ptr<ChildProcess> daemon_;
  int port_ = 0;
};

TEST_F(DaemonServiceTest, MetricsOnAKernelChosenPortCarryThePrometheusTextContentType) {
  write_file(log_path_, "");
  start(write_config(dir_, config("  c: {source: log, sinks: [out]}\n",
                                  "  out: {type: file, path: " + dir_.file("out.jsonl") + "}\n")));
  const std::string headers =
      test::http_get(port_, "/metrics").value_or(test::HttpResponse{}).headers;
  EXPECT_NE(headers.find(" 200 OK\r\n"), std::string::npos) << headers;
  EXPECT_NE(headers.find("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos)
      << headers;
  daemon_->signal(SIGTERM);
  EXPECT_EQ(daemon_->wait(scaled(30s)), 0) << daemon_->stderr_text();
}

TEST_F(DaemonServiceTest, NotifiesReadyStatusWatchdogAndStopping) {
  const std::size_t half = transaction_end_after(log_.changes.size() / 2);
  write_file(log_path_, "");
  append_changes(0, half);
  start(write_config(dir_, config("  c: {source: log, sinks: [out]}\n",
                                  "  out: {type: file, path: " + dir_.file("out.jsonl") + "}\n")),
        std::chrono::microseconds(2'000'000));

  auto ready = notify_.wait_for("READY=1", scaled(30s));
  ASSERT_TRUE(ready) << notify_.all_text() << daemon_->stderr_text();
  // Ready means serving and connected.
  auto readyz = http_get(port_, "/readyz");
  ASSERT_TRUE(readyz);
  EXPECT_EQ(readyz->status, 200);
  expect_delivered(dir_.file("out.jsonl"), slice(0, half));

  // The status line is refreshed: it shows the consumer once it runs.
  EXPECT_TRUE(notify_.wait_for("STATUS=ready: 1 of 1 consumers running; max lag", scaled(10s)))
      << notify_.all_text();
  // Pings every half interval (1 s) while healthy: at least 2 in 3 s.
  const auto watched_from = Clock::now();
  std::this_thread::sleep_for(3s);  // counting what arrives in a fixed window
  const auto pings = notify_.times_of("WATCHDOG=1");
  const auto recent = std::count_if(pings.begin(), pings.end(),
                                    [&](Clock::time_point at) { return at >= watched_from; });
  EXPECT_GE(recent, 2) << notify_.all_text();

  daemon_->signal(SIGTERM);
  EXPECT_TRUE(notify_.wait_for("STOPPING=1", scaled(30s))) << notify_.all_text();
  EXPECT_EQ(daemon_->wait(scaled(30s)), 0) << daemon_->stderr_text();
}

TEST_F(DaemonServiceTest, WatchdogPingsStopWhileAConsumerIsWedgedInASink) {
  // A file sink writing into a FIFO nobody reads: once the pipe's buffer is full, write() blocks
  // and the consumer's thread stops turning. The process and its HTTP server stay alive.
  generate_changelog(dir_.file("big.jsonl"), 20'000, 300);
  write_file(log_path_,
             read_file(dir_.file("big.jsonl")) +
                 commit_marker_line(read_native_file(dir_.file("big.jsonl")).changes.back().lsn));
  UnreadFifo fifo(dir_.file("stuck.fifo"));
  start(write_config(dir_, config("  c: {source: log, sinks: [stuck]}\n",
                                  "  stuck: {type: file, path: " + fifo.path() + "}\n")),
        std::chrono::microseconds(1'000'000));
  ASSERT_TRUE(notify_.wait_for("WATCHDOG=1", scaled(30s))) << notify_.all_text();
  ASSERT_TRUE(wait_until(
      [&] { return daemon_->stderr_text().find("consumer c is stuck") != std::string::npos; },
      scaled(30s)))
      << daemon_->stderr_text();
  // From then on, no ping for well over the watchdog interval, while the process still serves.
  std::this_thread::sleep_for(200ms);  // a ping already on its way
  const auto silent_from = Clock::now();
  std::this_thread::sleep_for(2500ms);  // observing silence over a fixed window
  const auto pings = notify_.times_of("WATCHDOG=1");
  EXPECT_TRUE(std::none_of(pings.begin(), pings.end(), [&](Clock::time_point at) {
    return at >= silent_from;
  })) << notify_.all_text();
  auto health = http_get(port_, "/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_TRUE(daemon_->running());
  daemon_->signal(SIGTERM);
  // The drain cannot finish (the sink is blocked): shutdown_timeout ends it with exit code 1.
  EXPECT_EQ(daemon_->wait(scaled(30s)), 1) << daemon_->stderr_text();
}

TEST_F(DaemonServiceTest, ConsumerStateAndSecondsSinceTheLastDelivery) {
  const std::size_t half = transaction_end_after(log_.changes.size() / 2);
  write_file(log_path_, "");
  append_changes(0, half);
  // `keep` dead-letters the bad record at the end, so that the daemon keeps running (and
  // serving metrics) after `c` failed on it.
  start(write_config(
      dir_, config("  c: {source: log, sinks: [out]}\n"
                   "  keep: {source: log, sinks: [copy], on_error: dead_letter, "
                   "dead_letter_sink: letters}\n",
                   "  out: {type: file, path: " + dir_.file("out.jsonl") + "}\n" +
                       "  copy: {type: file, path: " + dir_.file("copy.jsonl") + "}\n" +
                       "  letters: {type: file, path: " + dir_.file("letters.jsonl") + "}\n")));
  expect_delivered(dir_.file("out.jsonl"), slice(0, half));
  auto state = [&](const std::string& name) {
    return metric_value(scrape(port_), "cdcd_consumer_state", {{"consumer", "c"}, {"state", name}});
  };
  auto since = [&] {
    return metric_value(scrape(port_), "cdcd_consumer_seconds_since_last_delivery",
                        {{"consumer", "c"}})
        .value_or(-1);
  };
  EXPECT_EQ(state("running"), 1.0);
  EXPECT_EQ(state("failed"), 0.0);
  EXPECT_EQ(state("stopped"), 0.0);
  // Idle: the age grows past a second; a delivery brings it back under.
  ASSERT_TRUE(wait_until([&] { return since() >= 1.5; }, scaled(10s))) << since();
  append_changes(half, log_.changes.size());
  expect_delivered(dir_.file("out.jsonl"), slice(0, log_.changes.size()));
  ASSERT_TRUE(wait_until([&] { return since() >= 0 && since() < 1.0; }, scaled(10s))) << since();

  // A bad record stops the consumer (on_error: stop): its state says failed.
  append_file(log_path_, "not json\n");
  ASSERT_TRUE(wait_until([&] { return state("failed") == 1.0; }, scaled(30s)))
      << daemon_->stderr_text();
  EXPECT_EQ(state("running"), 0.0);
  EXPECT_EQ(metric_value(scrape(port_), "cdcd_consumer_state",
                         {{"consumer", "keep"}, {"state", "running"}}),
            1.0);
  daemon_->signal(SIGTERM);
  EXPECT_EQ(daemon_->wait(scaled(30s)), 1) << daemon_->stderr_text();
}

TEST_F(DaemonServiceTest, ReloadAddsRemovesAndChangesConsumersAndSinksWithoutLossOrRepeats) {
  const std::size_t n = log_.changes.size();
  const std::size_t p1 = transaction_end_after(n / 5);
  const std::size_t p2 = transaction_end_after(2 * n / 5);
  const std::size_t p3 = transaction_end_after(3 * n / 5);
  const std::size_t p4 = transaction_end_after(4 * n / 5);
  const std::string a = dir_.file("a.jsonl"), a2 = dir_.file("a2.jsonl"), b = dir_.file("b.jsonl");
  auto sink = [](const std::string& name, const std::string& path) {
    return "  " + name + ": {type: file, path: " + path + "}\n";
  };
  const std::string config_path = dir_.file("cdcd.yaml");

  // 1. Consumer `one` writes to sink `a`.
  write_file(log_path_, "");
  append_changes(0, p1);
  write_config(dir_, config("  one: {source: log, sinks: [a]}\n", sink("a", a)));
  start(config_path, std::chrono::microseconds(2'000'000));
  ASSERT_TRUE(notify_.wait_for("READY=1", scaled(30s))) << daemon_->stderr_text();
  expect_delivered(a, slice(0, p1));

  // 2. Sink `a` moves to a new path; consumer `two` is added, from the beginning.
  write_config(dir_, config("  one: {source: log, sinks: [a]}\n"
                            "  two: {source: log, sinks: [b], start: beginning}\n",
                            sink("a", a2) + sink("b", b)));
  hangup_and_wait_for("reloaded ", 1);
  append_changes(p1, p2);
  expect_delivered(a, slice(0, p1));
  expect_delivered(a2, slice(p1, p2));
  expect_delivered(b, slice(0, p2));
  EXPECT_TRUE(notify_.wait_for("RELOADING=1", scaled(5s))) << notify_.all_text();
  ASSERT_TRUE(wait_until([&] { return notify_.times_of("READY=1").size() >= 2; }, scaled(30s)))
      << notify_.all_text() << daemon_->stderr_text();

  // 3. Consumer `one` is removed: it stops, its checkpoint stays.
  write_config(dir_, config("  two: {source: log, sinks: [b]}\n", sink("b", b)));
  hangup_and_wait_for("reloaded ", 2);
  append_changes(p2, p3);
  expect_delivered(b, slice(0, p3));
  auto kept = read_checkpoint_file(dir_.file("checkpoints/one.json"));
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->lsn, log_.changes[p2 - 1].lsn);
  EXPECT_EQ(delivered(a2), slice(p1, p2));

  // 4. An invalid config is refused; the running one keeps delivering.
  write_file(config_path, read_file(config_path) + "unknown_section: {}\n");
  hangup_and_wait_for("reload refused", 1);
  auto samples = scrape(port_);
  EXPECT_EQ(metric_value(samples, "cdcd_config_reload_failures_total"), 1.0);
  EXPECT_EQ(metric_value(samples, "cdcd_config_last_reload_successful"), 0.0);
  append_changes(p3, p4);
  expect_delivered(b, slice(0, p4));
  EXPECT_NE(daemon_->stderr_text().find("unknown_section"), std::string::npos);

  // 5. `one` comes back: it resumes after its kept checkpoint, nothing of part 2 again.
  write_config(dir_, config("  one: {source: log, sinks: [a]}\n"
                            "  two: {source: log, sinks: [b]}\n",
                            sink("a", a2) + sink("b", b)));
  hangup_and_wait_for("reloaded ", 3);
  append_changes(p4, n);
  expect_delivered(b, slice(0, n));
  expect_delivered(a2, slice(p1, n));
  samples = scrape(port_);
  EXPECT_EQ(metric_value(samples, "cdcd_config_last_reload_successful"), 1.0);

  daemon_->signal(SIGTERM);
  EXPECT_EQ(daemon_->wait(scaled(30s)), 0) << daemon_->stderr_text();
  // After the end too: exactly these, nothing repeated late.
  EXPECT_EQ(delivered(a), slice(0, p1));
  EXPECT_EQ(delivered(a2), slice(p1, n));
  EXPECT_EQ(delivered(b), slice(0, n));
}

}  // namespace
}  // namespace cdcd::test
