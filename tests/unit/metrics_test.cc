#include "daemon/metrics/metrics.h"

#include <cstdint>
#include <optional>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/metrics/http_server.h"
#include "tests/support/test_util.h"

namespace cdcd {
namespace {

using test::http_get;

// The value of the sample line starting with `series` (name plus labels), if present.
std::optional<double> sample(const std::string& exposition, const std::string& series) {
  const std::string prefix = "\n" + series + " ";
  const auto at = ("\n" + exposition).find(prefix);
  if (at == std::string::npos) return std::nullopt;
  return std::stod(exposition.substr(at + prefix.size() - 1));
}

// Runs `promtool check metrics` on the text; returns its exit code and puts its output in
// `problems`.
int promtool_check(const std::string& exposition, std::string* problems) {
  test::TempDir dir;
  test::write_file(dir.file("metrics.txt"), exposition);
  return test::run_command(
      {"sh", "-c", "promtool check metrics < '" + dir.file("metrics.txt") + "' 2>&1"}, problems);
}

class HttpServerTest : public ::testing::Test {
 protected:
  void start(HealthCallbacks callbacks = {}) {
    server_ = std::make_unique<HttpServer>(metrics_.registry(), std::move(callbacks));
    auto started = server_->start("127.0.0.1:0");
    ASSERT_TRUE(started.has_value()) << started.error().message;
    ASSERT_GT(server_->port(), 0);
  }

  Metrics metrics_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, MetricsPassPromtoolAndCarryTheValuesSet) {
  start();
  SourceMetrics source = metrics_.source("demo");
  source.read_lsn->Set(1042);
  source.head_lsn->Set(2000);
  source.lsn_gaps->Increment(2);
  ConsumerMetrics consumer = metrics_.consumer("everything");
  consumer.checkpoint_lsn->Set(1000);
  consumer.lag_bytes->Set(4096);
  consumer.lag_seconds->Set(1.5);
  consumer.queue_bytes->Set(512);
  consumer.dead_letters->Increment();
  SinkMetrics sink = metrics_.sink("archive");
  sink.errors->Increment(3);
  sink.retries->Increment(2);
  metrics_.events("everything", "archive", Operation::kUpdate).Increment(7);
  metrics_.sink_batch_duration("archive").Observe(0.003);

  auto response = http_get(server_->port(), "/metrics");
  ASSERT_TRUE(response.has_value());
  ASSERT_EQ(response->status, 200);
  const std::string& text = response->body;

  std::string problems;
  EXPECT_EQ(promtool_check(text, &problems), 0) << problems;
  EXPECT_EQ(problems, "");

  EXPECT_EQ(sample(text, R"(cdcd_source_read_lsn{source="demo"})"), 1042);
  EXPECT_EQ(sample(text, R"(cdcd_source_head_lsn{source="demo"})"), 2000);
  EXPECT_EQ(sample(text, R"(cdcd_lsn_gaps_total{source="demo"})"), 2);
  EXPECT_EQ(sample(text, R"(cdcd_consumer_checkpoint_lsn{consumer="everything"})"), 1000);
  EXPECT_EQ(sample(text, R"(cdcd_consumer_lag_bytes{consumer="everything"})"), 4096);
  EXPECT_EQ(sample(text, R"(cdcd_consumer_lag_seconds{consumer="everything"})"), 1.5);
  EXPECT_EQ(sample(text, R"(cdcd_queue_bytes{consumer="everything"})"), 512);
  EXPECT_EQ(sample(text, R"(cdcd_dead_letters_total{consumer="everything"})"), 1);
  EXPECT_EQ(sample(text, R"(cdcd_sink_errors_total{sink="archive"})"), 3);
  EXPECT_EQ(sample(text, R"(cdcd_sink_retries_total{sink="archive"})"), 2);
  EXPECT_EQ(
      sample(text, R"(cdcd_events_total{consumer="everything",operation="update",sink="archive"})"),
      7);
  EXPECT_EQ(sample(text, R"(cdcd_sink_batch_duration_seconds_count{sink="archive"})"), 1);
  EXPECT_EQ(sample(text, R"(cdcd_sink_batch_duration_seconds_bucket{sink="archive",le="0.002"})"),
            0);
  EXPECT_EQ(sample(text, R"(cdcd_sink_batch_duration_seconds_bucket{sink="archive",le="0.004"})"),
            1);
  EXPECT_EQ(sample(text, R"(cdcd_build_info{version=")" CDCD_VERSION R"("})"), 1);
  EXPECT_NE(text.find("# TYPE cdcd_sink_batch_duration_seconds histogram"), std::string::npos);
  EXPECT_NE(text.find("# TYPE cdcd_events_total counter"), std::string::npos);

  auto resident = sample(text, "process_resident_memory_bytes");
  ASSERT_TRUE(resident.has_value()) << text;
  EXPECT_GT(*resident, 1 << 20);
  EXPECT_GT(sample(text, "process_virtual_memory_bytes").value_or(0), *resident);
  EXPECT_GT(sample(text, "process_open_fds").value_or(0), 2);
  EXPECT_GT(sample(text, "process_max_fds").value_or(0), 2);
  EXPECT_GE(sample(text, "process_cpu_seconds_total").value_or(-1), 0);
  const double now = static_cast<double>(std::time(nullptr));
  const double started = sample(text, "process_start_time_seconds").value_or(0);
  EXPECT_LE(started, now + 1);
  EXPECT_GT(started, now - 24 * 3600);

  EXPECT_NE(http_get(server_->port(), "/metrics")
                .value_or(test::HttpResponse{})
                .headers.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos);
}

TEST_F(HttpServerTest, BatchDurationBucketsAreExponentialFromHalfAMillisecondToAboutThirtySeconds) {
  start();
  metrics_.sink_batch_duration("s").Observe(100);
  const std::string text = http_get(server_->port(), "/metrics")->body;
  std::regex bucket(R"re(cdcd_sink_batch_duration_seconds_bucket\{sink="s",le="([^"]+)"\})re");
  std::vector<double> bounds;
  for (std::sregex_iterator it(text.begin(), text.end(), bucket), end; it != end; ++it) {
    if ((*it)[1] != "+Inf") bounds.push_back(std::stod((*it)[1]));
  }
  ASSERT_GE(bounds.size(), 10u);
  EXPECT_DOUBLE_EQ(bounds.front(), 0.0005);
  EXPECT_GE(bounds.back(), 30);
  EXPECT_LE(bounds.back(), 60);
  for (std::size_t i = 1; i < bounds.size(); ++i) EXPECT_DOUBLE_EQ(bounds[i], bounds[i - 1] * 2);
}

TEST_F(HttpServerTest, LsnGaugesAreExactUpToTwoToThe53) {
  start();
  const std::uint64_t lsn = (std::uint64_t{1} << 53) - 1;
  metrics_.source("pg").read_lsn->Set(static_cast<double>(lsn));
  const std::string text = http_get(server_->port(), "/metrics")->body;
  EXPECT_NE(text.find("cdcd_source_read_lsn{source=\"pg\"} " + std::to_string(lsn) + "\n"),
            std::string::npos)
      << text;
}

TEST_F(HttpServerTest, HealthReadinessAndStatus) {
  std::atomic<bool> ready{false};
  start(HealthCallbacks{[&]() -> std::optional<std::string> {
                          if (ready) return std::nullopt;
                          return "source demo not connected";
                        },
                        [] { return std::string(R"({"consumers":[]})"); }});
  const int port = server_->port();

  auto healthz = http_get(port, "/healthz");
  ASSERT_TRUE(healthz.has_value());
  EXPECT_EQ(healthz->status, 200);
  EXPECT_EQ(healthz->body, "ok\n");

  auto not_ready = http_get(port, "/readyz");
  ASSERT_TRUE(not_ready.has_value());
  EXPECT_EQ(not_ready->status, 503);
  EXPECT_EQ(not_ready->body, "source demo not connected\n");

  ready = true;
  auto is_ready = http_get(port, "/readyz");
  ASSERT_TRUE(is_ready.has_value());
  EXPECT_EQ(is_ready->status, 200);
  EXPECT_EQ(is_ready->body, "ready\n");

  auto status = http_get(port, "/status");
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->status, 200);
  EXPECT_EQ(status->body, R"({"consumers":[]})");
  EXPECT_NE(http_get(port, "/status")
                .value_or(test::HttpResponse{})
                .headers.find("Content-Type: application/json\r\n"),
            std::string::npos);

  for (const char* path : {"/", "/nope", "/metrics/extra", "/healthz/x"}) {
    auto missing = http_get(port, path);
    ASSERT_TRUE(missing.has_value()) << path;
    EXPECT_EQ(missing->status, 404) << path;
  }
}

TEST_F(HttpServerTest, ThrowingCallbackAnswers500AndServerKeepsServing) {
  start(HealthCallbacks{
      []() -> std::optional<std::string> { throw std::runtime_error("lock poisoned"); },
      []() -> std::string { throw 42; }});
  auto readyz = http_get(server_->port(), "/readyz");
  ASSERT_TRUE(readyz.has_value());
  EXPECT_EQ(readyz->status, 500);
  EXPECT_NE(readyz->body.find("lock poisoned"), std::string::npos);
  auto status = http_get(server_->port(), "/status");
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->status, 500);
  auto healthz = http_get(server_->port(), "/healthz");
  ASSERT_TRUE(healthz.has_value());
  EXPECT_EQ(healthz->status, 200);
}

TEST_F(HttpServerTest, SecondServerOnTheSamePortFailsWithAClearError) {
  start();
  const std::string listen = "127.0.0.1:" + std::to_string(server_->port());
  HttpServer second(metrics_.registry(), {});
  auto started = second.start(listen);
  ASSERT_FALSE(started.has_value());
  EXPECT_NE(started.error().message.find(listen), std::string::npos) << started.error().message;
  EXPECT_NE(started.error().message.find("in use"), std::string::npos) << started.error().message;
  // The first one is unaffected.
  EXPECT_EQ(http_get(server_->port(), "/healthz")->status, 200);
}

TEST_F(HttpServerTest, MalformedListenAddressFailsWithCivetwebsReason) {
  HttpServer server(metrics_.registry(), {});
  auto started = server.start("127.0.0.1:notaport");
  ASSERT_FALSE(started.has_value());
  EXPECT_NE(started.error().message.find("metrics.listen 127.0.0.1:notaport: "), std::string::npos)
      << started.error().message;
}

TEST(HttpServer, ListensOnAllInterfacesOrANamedHost) {
  Metrics metrics;
  for (const std::string listen : {":0", "0.0.0.0:0", "localhost:0"}) {
    HttpServer server(metrics.registry(), {});
    auto started = server.start(listen);
    ASSERT_TRUE(started.has_value()) << listen << ": " << started.error().message;
    auto healthz = http_get(server.port(), "/healthz");
    ASSERT_TRUE(healthz.has_value()) << listen;
    EXPECT_EQ(healthz->status, 200) << listen;
    server.stop();
    EXPECT_FALSE(http_get(server.port(), "/healthz").has_value()) << listen;
  }
}

TEST_F(HttpServerTest, StopClosesThePort) {
  start();
  const int port = server_->port();
  ASSERT_TRUE(http_get(port, "/healthz").has_value());
  server_->stop();
  EXPECT_FALSE(http_get(port, "/healthz").has_value());
}

TEST(Metrics, SameLabelsGiveTheSameMetricAcrossThreads) {
  Metrics metrics;
  std::vector<std::thread> threads;
  std::vector<prometheus::Counter*> seen(8);
  for (std::size_t i = 0; i < seen.size(); ++i) {
    threads.emplace_back([&, i] {
      for (int round = 0; round < 200; ++round) {
        metrics.consumer("c" + std::to_string(round % 5));
        metrics.sink_batch_duration("s" + std::to_string(round % 3));
        seen[i] = &metrics.events("c", "s", Operation::kInsert);
        seen[i]->Increment();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(std::set<prometheus::Counter*>(seen.begin(), seen.end()).size(), 1u);
  EXPECT_EQ(seen[0]->Value(), 8 * 200);
  EXPECT_EQ(metrics.consumer("c1").lag_bytes, metrics.consumer("c1").lag_bytes);
  EXPECT_NE(metrics.consumer("c1").lag_bytes, metrics.consumer("c2").lag_bytes);
}

}  // namespace
}  // namespace cdcd
