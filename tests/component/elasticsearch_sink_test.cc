// The Elasticsearch sink against the strict `_bulk` test server (tests/support/es_test_server.py):
// versions, the per-item status policy, retries, splitting, partial images, deletes, truncates,
// authentication and the transport (gzip, failover). Read back through the server's control
// endpoints, never through the sink.

#include <chrono>
#include <future>
#include <limits>
#include <memory>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "daemon/metrics/metrics.h"
#include "tests/support/es_test_server.h"
#include "tests/support/sink_conformance.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

Change row_change(std::uint64_t lsn, Operation op, const std::string& key, const std::string& row,
                  const std::string& entity = "public.items") {
  Change change;
  change.lsn = lsn;
  change.entity = entity;
  change.operation = op;
  change.key = key;
  if (op == Operation::kDelete) {
    change.old_row = row;
  } else {
    change.new_row = row;
  }
  return change;
}

BatchPtr batch_of(std::vector<Change> changes) {
  auto batch = std::make_shared<Batch>();
  batch->id = 1;
  batch->consumer = "test";
  batch->source_name = "db";
  batch->connector = "jsonl";
  batch->changes = std::move(changes);
  return batch;
}

DeliveryReport write_and_wait(Sink& sink, BatchPtr batch, std::chrono::seconds bound = 30s) {
  auto promise = std::make_shared<std::promise<DeliveryReport>>();
  auto future = promise->get_future();
  std::thread writer([&] {
    sink.write(batch, [promise](DeliveryReport r) { promise->set_value(std::move(r)); });
  });
  bool ready = future.wait_for(bound) == std::future_status::ready;
  if (!ready) sink.stop();
  writer.join();
  EXPECT_TRUE(ready) << "write not acknowledged in time";
  return future.get();
}

std::string describe(const DeliveryReport& report) {
  std::string text = report.failure ? "failure: " + report.failure->message : "ok";
  for (const auto& r : report.rejected) {
    text += "\n rejected #" + std::to_string(r.index) + ": " + r.reason;
  }
  return text;
}

double metric(Metrics& metrics, const std::string& name, const std::string& label_value) {
  for (const auto& family : metrics.registry()->Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      bool match = label_value.empty();
      for (const auto& label : m.label) match = match || label.value == label_value;
      if (match) return m.counter.value + m.gauge.value;
    }
  }
  return -1;
}

}  // namespace
// build_plugin_sink comes with the conformance suite, which this file does not run.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(SinkConformanceTest);
namespace {

class ElasticsearchSinkTest : public ::testing::Test {
 protected:
  std::unique_ptr<Sink> sink(const std::string& extra = "", bool start = true) {
    auto made =
        build_plugin_sink("elasticsearch",
                          "urls: [\"" + server_.url() +
                              "\"]\nretry: {initial_backoff: 10ms, max_backoff: 100ms}\n" + extra,
                          metrics_, "search");
    if (made && start) {
      auto started = made->start();
      EXPECT_TRUE(started) << started.error().message;
    }
    return made;
  }

  TempDir dir_;
  EsTestServer server_{dir_.path()};
  Metrics metrics_;
};

TEST_F(ElasticsearchSinkTest, IndexesRowsUnderTheKeyWithTheLsnAsExternalVersion) {
  auto es = sink();
  auto report = write_and_wait(
      *es,
      batch_of(
          {row_change(10, Operation::kInsert, R"({"id":1})", R"({"id":1,"name":"a"})"),
           row_change(11, Operation::kInsert, R"({"id":"x"})", R"({"id":"x"})", "public.named"),
           row_change(12, Operation::kInsert, R"({"a":1,"b":"z"})", R"({"a":1,"b":"z"})")}));
  ASSERT_FALSE(report.failure) << describe(report);
  ASSERT_TRUE(report.rejected.empty()) << describe(report);
  auto state = server_.state()["indices"]["public_items"]["docs"];
  EXPECT_EQ(state["1"]["_version"], 10);
  EXPECT_EQ(state["1"]["_source"]["name"], "a");
  EXPECT_EQ(state["[1,\"z\"]"]["_version"], 12) << state.dump();
  EXPECT_EQ(server_.state()["indices"]["public_named"]["docs"]["x"]["_version"], 11);
}

}  // namespace
}  // namespace cdcd::test
