// The Elasticsearch sink against the strict `_bulk` test server (tests/support/es_test_server.py):
// versions, the per-item status policy, retries, splitting, partial images, deletes, truncates,
// authentication and the transport (gzip, failover). Read back through the server's control
// endpoints, never through the sink.

#include <algorithm>
#include <chrono>
#include <future>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "daemon/http/http_client.h"
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

TEST_F(ElasticsearchSinkTest,
       AnOlderChangeNeverOverwritesANewerOneAndItsConflictCountsAsSuperseded) {
  auto es = sink();
  auto newer = write_and_wait(
      *es, batch_of({row_change(20, Operation::kUpdate, R"({"id":1})", R"({"id":1,"v":"new"})")}));
  ASSERT_FALSE(newer.failure) << describe(newer);
  // A replay of an older change (a retry, or a restart from an older checkpoint).
  auto older = write_and_wait(
      *es, batch_of({row_change(10, Operation::kInsert, R"({"id":1})", R"({"id":1,"v":"old"})")}));
  ASSERT_FALSE(older.failure) << describe(older);
  EXPECT_TRUE(older.rejected.empty()) << describe(older);
  auto docs = server_.documents("public_items");
  EXPECT_EQ(docs["1"]["v"], "new");
  EXPECT_EQ(metric(metrics_, "cdcd_elasticsearch_items_total", "superseded"), 1);
}

TEST_F(ElasticsearchSinkTest, ChangesOfOneDocumentInOneBatchCollapseToTheLast) {
  auto es = sink();
  // Same transaction (same lsn): the later seq wins, although the versions are equal.
  auto a = row_change(30, Operation::kInsert, R"({"id":1})", R"({"id":1,"v":"first"})");
  auto b = row_change(30, Operation::kUpdate, R"({"id":1})", R"({"id":1,"v":"second"})");
  b.seq = 1;
  auto report = write_and_wait(*es, batch_of({a, b}));
  ASSERT_FALSE(report.failure) << describe(report);
  EXPECT_EQ(server_.documents("public_items")["1"]["v"], "second");
  EXPECT_EQ(server_.state()["counters"]["items"], 1) << "one item per document";
  // The same transaction split over two batches: equal versions, the later one still wins.
  auto c = row_change(30, Operation::kUpdate, R"({"id":1})", R"({"id":1,"v":"third"})");
  c.seq = 2;
  ASSERT_FALSE(write_and_wait(*es, batch_of({c})).failure);
  EXPECT_EQ(server_.documents("public_items")["1"]["v"], "third");
}

TEST_F(ElasticsearchSinkTest, AnUpdateThatChangesTheKeyMovesTheDocument) {
  auto es = sink();
  ASSERT_FALSE(write_and_wait(*es, batch_of({row_change(1, Operation::kInsert, R"({"id":1})",
                                                        R"({"id":1,"v":"a"})")}))
                   .failure);
  auto moved = row_change(2, Operation::kUpdate, R"({"id":2})", R"({"id":2,"v":"a"})");
  moved.old_key = R"({"id":1})";
  auto report = write_and_wait(*es, batch_of({moved}));
  ASSERT_FALSE(report.failure) << describe(report);
  auto docs = server_.documents("public_items");
  EXPECT_FALSE(docs.contains("1")) << "the document under the old key is deleted: " << docs;
  EXPECT_EQ(docs["2"]["v"], "a");
}

TEST_F(ElasticsearchSinkTest, PerItem429sAreRetriedAloneUntilTheyPass) {
  auto es = sink();
  std::vector<Change> changes;
  for (int i = 1; i <= 20; ++i) {
    changes.push_back(row_change(100 + i, Operation::kInsert, "{\"id\":" + std::to_string(i) + "}",
                                 "{\"id\":" + std::to_string(i) + "}"));
  }
  // Ids 3 and 7 are refused twice each; the other items pass at the first attempt.
  server_.faults({{"item_ids", {{"3", {429, 429}}, {"7", {429, 503}}}}});
  auto report = write_and_wait(*es, batch_of(changes));
  ASSERT_FALSE(report.failure) << describe(report);
  EXPECT_TRUE(report.rejected.empty()) << describe(report);
  EXPECT_EQ(server_.documents("public_items").size(), 20u);
  // 20 first attempts, then only the failed items: 2, then 2 again.
  EXPECT_EQ(server_.state()["counters"]["items"], 24);
  EXPECT_EQ(metric(metrics_, "cdcd_elasticsearch_items_total", "retried"), 4);
  EXPECT_TRUE(es->healthy());
}

TEST_F(ElasticsearchSinkTest, WholeRequest429And503AreRetried) {
  auto es = sink();
  server_.faults({{"request_statuses", {429, 503, 502}}});
  auto report = write_and_wait(
      *es, batch_of({row_change(5, Operation::kInsert, R"({"id":1})", R"({"id":1})")}));
  ASSERT_FALSE(report.failure) << describe(report);
  EXPECT_EQ(server_.documents("public_items").size(), 1u);
  EXPECT_GE(metric(metrics_, "cdcd_sink_retries_total", ""), 3);
}

TEST_F(ElasticsearchSinkTest, A413SplitsTheRequestAndAChangeTooLargeAloneIsRejected) {
  auto es = sink("bulk: {compression: none}\n");
  server_.faults({{"max_content_length", 600}});
  std::vector<Change> changes;
  for (int i = 1; i <= 10; ++i) {
    changes.push_back(row_change(100 + i, Operation::kInsert, "{\"id\":" + std::to_string(i) + "}",
                                 "{\"id\":" + std::to_string(i) + "}"));
  }
  changes.push_back(row_change(200, Operation::kInsert, R"({"id":99})",
                               R"({"id":99,"blob":")" + std::string(1000, 'x') + "\"}"));
  auto report = write_and_wait(*es, batch_of(changes));
  ASSERT_FALSE(report.failure) << describe(report);
  ASSERT_EQ(report.rejected.size(), 1u) << describe(report);
  EXPECT_EQ(report.rejected[0].index, 10u);
  EXPECT_THAT(report.rejected[0].reason, ::testing::HasSubstr("413"));
  EXPECT_EQ(server_.documents("public_items").size(), 10u);
}

TEST_F(ElasticsearchSinkTest, AMappingErrorRejectsExactlyThatChangeWithElasticsearchsText) {
  auto es = sink();
  auto report = write_and_wait(
      *es, batch_of({row_change(1, Operation::kInsert, R"({"id":1})", R"({"id":1,"n":5})"),
                     row_change(2, Operation::kInsert, R"({"id":2})", R"({"id":2,"n":"five"})"),
                     row_change(3, Operation::kInsert, R"({"id":3})", R"({"id":3,"n":7})")}));
  ASSERT_FALSE(report.failure) << describe(report);
  ASSERT_EQ(report.rejected.size(), 1u) << describe(report);
  EXPECT_EQ(report.rejected[0].index, 1u);
  EXPECT_THAT(report.rejected[0].reason, ::testing::HasSubstr("document_parsing_exception"));
  EXPECT_THAT(report.rejected[0].reason, ::testing::HasSubstr("failed to parse field [n]"));
  auto docs = server_.documents("public_items");
  EXPECT_EQ(docs.size(), 2u);
  EXPECT_TRUE(es->healthy()) << "a rejected change does not make the sink unhealthy";
}

TEST_F(ElasticsearchSinkTest, AMissingIndexWithoutAutoCreationIsRejectedNamingTheIndex) {
  auto es = sink();
  server_.faults({{"auto_create", false}});
  auto report = write_and_wait(
      *es, batch_of({row_change(1, Operation::kInsert, R"({"id":1})", R"({"id":1})")}));
  ASSERT_FALSE(report.failure) << describe(report);
  ASSERT_EQ(report.rejected.size(), 1u);
  EXPECT_THAT(report.rejected[0].reason, ::testing::HasSubstr("no such index [public_items]"));
}

TEST_F(ElasticsearchSinkTest, IllegalRenderedIndexNamesAndOutOfRangeVersionsAreRejected) {
  auto es = sink("index: \"{entity}\"\n");
  auto upper = row_change(1, Operation::kInsert, R"({"id":1})", R"({"id":1})", "Public.Items");
  auto huge = row_change(std::numeric_limits<std::uint64_t>::max(), Operation::kInsert,
                         R"({"id":2})", R"({"id":2})", "public.items");
  auto report = write_and_wait(*es, batch_of({upper, huge}));
  ASSERT_FALSE(report.failure) << describe(report);
  ASSERT_EQ(report.rejected.size(), 2u) << describe(report);
  EXPECT_THAT(report.rejected[0].reason, ::testing::HasSubstr("not lowercase"));
  EXPECT_THAT(report.rejected[1].reason, ::testing::HasSubstr("2^63 - 1"));
  EXPECT_EQ(server_.state()["counters"]["bulk_requests"], 0);
}

TEST_F(ElasticsearchSinkTest, DeletesAreVersionedAndAReplayedOlderInsertDoesNotResurrect) {
  auto es = sink();
  ASSERT_FALSE(write_and_wait(
                   *es, batch_of({row_change(1, Operation::kInsert, R"({"id":1})", R"({"id":1})")}))
                   .failure);
  auto deleted =
      write_and_wait(*es, batch_of({row_change(2, Operation::kDelete, R"({"id":1})", R"({"id":1})"),
                                    row_change(3, Operation::kDelete, R"({"id":404})", "")}));
  ASSERT_FALSE(deleted.failure) << describe(deleted);
  EXPECT_TRUE(deleted.rejected.empty()) << "a delete of a missing document is acknowledged";
  EXPECT_TRUE(server_.documents("public_items").empty());
  // The insert replayed (within index.gc_deletes) loses to the delete's tombstone.
  ASSERT_FALSE(write_and_wait(
                   *es, batch_of({row_change(1, Operation::kInsert, R"({"id":1})", R"({"id":1})")}))
                   .failure);
  EXPECT_TRUE(server_.documents("public_items").empty());
}

TEST_F(ElasticsearchSinkTest, SoftDeletesKeepAVersionedTombstoneDocument) {
  auto es = sink("deletes: soft\n");
  ASSERT_FALSE(
      write_and_wait(
          *es, batch_of({row_change(1, Operation::kInsert, R"({"id":1})", R"({"id":1,"a":2})"),
                         row_change(2, Operation::kDelete, R"({"id":7})", R"({"id":7})")}))
          .failure);
  ASSERT_FALSE(write_and_wait(
                   *es, batch_of({row_change(3, Operation::kDelete, R"({"id":1})", R"({"id":1})")}))
                   .failure);
  auto docs = server_.documents("public_items");
  EXPECT_EQ(docs["1"], json::parse(R"({"_cdc_version":3,"_deleted":true,"id":1})"));
  // A replay, however late, meets the tombstone's version and loses.
  ASSERT_FALSE(write_and_wait(*es, batch_of({row_change(1, Operation::kInsert, R"({"id":1})",
                                                        R"({"id":1,"a":2})")}))
                   .failure);
  EXPECT_EQ(server_.documents("public_items")["1"]["_deleted"], true);
}

TEST_F(ElasticsearchSinkTest, PartialImagesKeepOmittedColumnsAndAreFencedByVersion) {
  auto es = sink();
  ASSERT_FALSE(write_and_wait(*es, batch_of({row_change(10, Operation::kInsert, R"({"id":1})",
                                                        R"({"id":1,"a":1,"big":"toast"})")}))
                   .failure);
  auto partial = row_change(20, Operation::kUpdate, R"({"id":1})", R"({"id":1,"a":2})");
  partial.unchanged_columns = {"big"};
  auto report = write_and_wait(*es, batch_of({partial}));
  ASSERT_FALSE(report.failure) << describe(report);
  ASSERT_TRUE(report.rejected.empty()) << describe(report);
  auto doc = server_.documents("public_items")["1"];
  EXPECT_EQ(doc["a"], 2);
  EXPECT_EQ(doc["big"], "toast") << "the omitted TOAST column survives";
  EXPECT_EQ(doc["_cdc_version"], 20);
  // An older partial update (a replay) is a noop: superseded.
  auto older = row_change(15, Operation::kUpdate, R"({"id":1})", R"({"id":1,"a":-1})");
  older.unchanged_columns = {"big"};
  ASSERT_FALSE(write_and_wait(*es, batch_of({older})).failure);
  EXPECT_EQ(server_.documents("public_items")["1"]["a"], 2);
  // A full image in the same batch before a partial one goes out first, then the partial one.
  auto full = row_change(30, Operation::kUpdate, R"({"id":1})", R"({"id":1,"a":3,"big":"new"})");
  auto after = row_change(31, Operation::kUpdate, R"({"id":1})", R"({"id":1,"a":4})");
  after.unchanged_columns = {"big"};
  ASSERT_FALSE(write_and_wait(*es, batch_of({full, after})).failure);
  doc = server_.documents("public_items")["1"];
  EXPECT_EQ(doc["a"], 4);
  EXPECT_EQ(doc["big"], "new");
}

// Partial images in batches of their own, interleaved with whole images and deletes of the same
// lsn and of the next ones (a jsonl log's lsns step by one): every later write wins, whatever the
// partial writes did to the document before.
TEST_F(ElasticsearchSinkTest, WritesAfterPartialImagesInLaterBatchesAreNotTakenForSuperseded) {
  auto es = sink();
  auto partial = [](std::uint64_t lsn, std::uint32_t seq, const std::string& row) {
    auto change = row_change(lsn, Operation::kUpdate, R"({"id":1})", row);
    change.seq = seq;
    change.unchanged_columns = {"big"};
    return change;
  };
  auto whole = [](std::uint64_t lsn, std::uint32_t seq, Operation op, const std::string& row) {
    auto change = row_change(lsn, op, R"({"id":1})", row);
    change.seq = seq;
    return change;
  };
  const std::vector<Change> sequence = {
      whole(5, 0, Operation::kInsert, R"({"id":1,"a":0,"big":"t0"})"),
      partial(5, 1, R"({"id":1,"a":1})"),
      whole(5, 2, Operation::kUpdate, R"({"id":1,"a":2,"big":"t2"})"),
      partial(6, 0, R"({"id":1,"a":3})"),
      partial(6, 1, R"({"id":1,"a":4})"),
      partial(6, 2, R"({"id":1,"a":5})"),
      whole(7, 0, Operation::kUpdate, R"({"id":1,"a":6,"big":"t7"})"),
      partial(8, 0, R"({"id":1,"a":7})"),
      partial(8, 1, R"({"id":1,"a":8})"),
      whole(9, 0, Operation::kDelete, R"({"id":1})"),
  };
  for (std::size_t i = 0; i < sequence.size(); ++i) {
    auto report = write_and_wait(*es, batch_of({sequence[i]}));
    ASSERT_FALSE(report.failure) << i << ": " << describe(report);
    ASSERT_TRUE(report.rejected.empty()) << i << ": " << describe(report);
    auto docs = server_.documents("public_items");
    if (i + 1 == sequence.size()) {
      EXPECT_FALSE(docs.contains("1")) << "the delete at lsn 9 was lost: " << docs.dump();
      break;
    }
    ASSERT_TRUE(docs.contains("1")) << i;
    EXPECT_EQ(docs["1"]["a"], static_cast<int>(i)) << "change " << i << " was lost";
    EXPECT_EQ(docs["1"]["big"], i < 2 ? "t0" : i < 6 ? "t2" : "t7") << i;
  }
}

// A replayed partial image (after a crash) older than the stored document changes nothing.
TEST_F(ElasticsearchSinkTest, AReplayedPartialImageOlderThanTheDocumentIsSuperseded) {
  auto es = sink();
  ASSERT_FALSE(write_and_wait(*es, batch_of({row_change(10, Operation::kInsert, R"({"id":1})",
                                                        R"({"id":1,"a":1,"big":"t"})")}))
                   .failure);
  auto replayed = row_change(4, Operation::kUpdate, R"({"id":1})", R"({"id":1,"a":0})");
  replayed.unchanged_columns = {"big"};
  auto report = write_and_wait(*es, batch_of({replayed}));
  ASSERT_FALSE(report.failure) << describe(report);
  EXPECT_TRUE(report.rejected.empty()) << describe(report);
  EXPECT_EQ(server_.documents("public_items")["1"],
            json::parse(R"({"_cdc_version":10,"id":1,"a":1,"big":"t"})"));
}

TEST_F(ElasticsearchSinkTest, TruncatePolicies) {
  Change truncate;
  truncate.lsn = 50;
  truncate.entity = "public.items";
  truncate.operation = Operation::kTruncate;
  {
    auto es = sink("truncate: delete_by_query\n");
    auto report = write_and_wait(
        *es, batch_of({row_change(1, Operation::kInsert, R"({"id":1})", R"({"id":1})"), truncate,
                       row_change(60, Operation::kInsert, R"({"id":2})", R"({"id":2})")}));
    ASSERT_FALSE(report.failure) << describe(report);
    auto docs = server_.documents("public_items");
    EXPECT_EQ(docs.size(), 1u) << docs.dump();
    EXPECT_TRUE(docs.contains("2"));
  }
  {
    auto es = sink("truncate: stop\n");
    auto report = write_and_wait(*es, batch_of({truncate}));
    ASSERT_EQ(report.rejected.size(), 1u);
    EXPECT_THAT(report.rejected[0].reason, ::testing::HasSubstr("truncate"));
  }
  {
    auto es = sink();  // ignore
    auto report = write_and_wait(*es, batch_of({truncate}));
    EXPECT_FALSE(report.failure);
    EXPECT_TRUE(report.rejected.empty());
    EXPECT_EQ(server_.documents("public_items").size(), 1u);
  }
}

TEST_F(ElasticsearchSinkTest, ChangelogDocumentsAreEveryChangeInTheChosenFormat) {
  auto es = sink("document: changelog\nformat: debezium\nindex: \"cdc_{table}\"\n");
  auto report = write_and_wait(
      *es, batch_of({row_change(7, Operation::kInsert, R"({"id":1})", R"({"id":1})"),
                     row_change(8, Operation::kDelete, R"({"id":1})", R"({"id":1})")}));
  ASSERT_FALSE(report.failure) << describe(report);
  auto docs = server_.documents("cdc_items");
  ASSERT_EQ(docs.size(), 2u) << docs.dump();
  EXPECT_EQ(docs["7-0"]["op"], "c");
  EXPECT_EQ(docs["8-0"]["op"], "d");
}

TEST_F(ElasticsearchSinkTest, StopUnblocksAWriteThatIsRetrying) {
  auto es = sink();
  server_.faults({{"reject_all", 429}});
  auto promise = std::make_shared<std::promise<DeliveryReport>>();
  auto future = promise->get_future();
  std::thread writer([&] {
    es->write(batch_of({row_change(1, Operation::kInsert, R"({"id":1})", R"({"id":1})")}),
              [promise](DeliveryReport r) { promise->set_value(std::move(r)); });
  });
  ASSERT_TRUE(wait_until([&] { return !es->healthy(); }, 10s)) << "retrying makes it unhealthy";
  EXPECT_EQ(future.wait_for(200ms), std::future_status::timeout);
  auto started = std::chrono::steady_clock::now();
  es->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
  writer.join();
  auto report = future.get();
  ASSERT_TRUE(report.failure);
  EXPECT_THAT(report.failure->message, ::testing::HasSubstr("429"));
}

TEST_F(ElasticsearchSinkTest, GzipBodiesAndFailoverToTheNextUrl) {
  int dead = free_port();
  auto es = build_plugin_sink("elasticsearch",
                              "urls: [\"http://127.0.0.1:" + std::to_string(dead) + "\", \"" +
                                  server_.url() + "\"]\nbulk: {compression: gzip}\n",
                              metrics_, "search");
  ASSERT_TRUE(es);
  ASSERT_TRUE(es->start());
  std::vector<Change> changes;
  for (int i = 1; i <= 200; ++i) {
    changes.push_back(row_change(i, Operation::kInsert, "{\"id\":" + std::to_string(i) + "}",
                                 "{\"id\":" + std::to_string(i) + ",\"text\":\"the same words\"}"));
  }
  for (int round = 0; round < 4; ++round) {
    auto report = write_and_wait(*es, batch_of(changes));
    ASSERT_FALSE(report.failure) << describe(report);
  }
  auto counters = server_.state()["counters"];
  EXPECT_LT(counters["wire_bytes"].get<double>(), counters["bytes"].get<double>() / 3)
      << counters.dump();
  EXPECT_LT(metric(metrics_, "cdcd_elasticsearch_request_bytes_total", "wire"),
            metric(metrics_, "cdcd_elasticsearch_request_bytes_total", "uncompressed"));
}

class ElasticsearchAuthTest : public ::testing::Test {
 protected:
  TempDir dir_;
  EsTestServer server_{dir_.path(),
                       EsTestServer::Options{{"--user", "elastic", "--password", "s3cret-pw"}}};
  Metrics metrics_;
};

TEST_F(ElasticsearchAuthTest, BadCredentialsFailStartClearlyWithoutTheSecret) {
  auto es = build_plugin_sink(
      "elasticsearch",
      "urls: [\"" + server_.url() + "\"]\nauth: {username: elastic, password: wrong-pw-123}\n",
      metrics_, "search");
  ASSERT_TRUE(es);
  auto started = es->start();
  ASSERT_FALSE(started);
  EXPECT_FALSE(started.error().retryable) << "no retry loop on bad credentials";
  EXPECT_THAT(started.error().message, ::testing::HasSubstr("authentication failed"));
  EXPECT_THAT(started.error().message, ::testing::HasSubstr("401"));
  EXPECT_THAT(started.error().message, ::testing::Not(::testing::HasSubstr("wrong-pw-123")));
  EXPECT_FALSE(es->healthy());
}

TEST_F(ElasticsearchAuthTest, GoodCredentialsWrite) {
  auto es = build_plugin_sink(
      "elasticsearch",
      "urls: [\"" + server_.url() + "\"]\nauth: {username: elastic, password: s3cret-pw}\n",
      metrics_, "search");
  ASSERT_TRUE(es);
  ASSERT_TRUE(es->start());
  auto report = write_and_wait(
      *es, batch_of({row_change(1, Operation::kInsert, R"({"id":1})", R"({"id":1})")}));
  ASSERT_FALSE(report.failure) << describe(report);
  EXPECT_EQ(server_.documents("public_items").size(), 1u);
}

TEST(ElasticsearchTransport, SecretsInUrlsAndErrorsAreRedacted) {
  http::ClientOptions options;
  options.urls = {"http://user:hunter2@127.0.0.1:" + std::to_string(free_port())};
  options.auth = {http::Auth::Kind::kApiKey, "", "key-abc"};
  options.connect_timeout = 500ms;
  http::Client client(options);
  auto response = client.perform({http::Request{}}).front();
  ASSERT_TRUE(response.transport_error);
  EXPECT_THAT(*response.transport_error, ::testing::Not(::testing::HasSubstr("hunter2")));
  EXPECT_EQ(client.redact("key-abc and hunter2"), "*** and ***");
}

// Everything the default logger (the sinks' log in build_plugin_sink) writes while it lives.
class CapturedLog {
 public:
  CapturedLog() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~CapturedLog() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  std::string text() { return stream_.str(); }

 private:
  std::ostringstream stream_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

TEST_F(ElasticsearchSinkTest, WarnsAtStartWhenGcDeletesIsShorterThanTheReplayWindow) {
  auto [status, body] =
      server_.request("PUT", "/public_items", R"({"settings": {"index": {"gc_deletes": "10s"}}})");
  ASSERT_EQ(status, 200) << body;
  {
    CapturedLog log;
    auto es = sink("index: public_items\nreplay_window: 2m\n");
    EXPECT_THAT(log.text(), ::testing::HasSubstr("index public_items's index.gc_deletes (10000 ms) "
                                                 "is shorter than the replay window (120000 ms)"));
  }
  {
    CapturedLog log;
    auto es = sink("index: public_items\nreplay_window: 5s\n");
    EXPECT_THAT(log.text(), ::testing::Not(::testing::HasSubstr("gc_deletes")));
  }
  {
    CapturedLog log;
    auto es = sink("index: public_items\nreplay_window: 2m\ndeletes: soft\n");
    EXPECT_THAT(log.text(), ::testing::Not(::testing::HasSubstr("gc_deletes")))
        << "soft deletes do not depend on index.gc_deletes";
  }
}

TEST(ElasticsearchOpenSearch, StartsAgainstAnOpenSearchClusterAndWrites) {
  TempDir dir;
  EsTestServer server(dir.path(), EsTestServer::Options{{}, true, "opensearch"});
  Metrics metrics;
  CapturedLog log;
  auto es = build_plugin_sink("elasticsearch", "urls: \"" + server.url() + "\"\n", metrics);
  ASSERT_TRUE(es);
  ASSERT_TRUE(es->start());
  EXPECT_THAT(log.text(), ::testing::HasSubstr("connected to opensearch 2.11.0"));
  auto report = write_and_wait(
      *es, batch_of({row_change(1, Operation::kInsert, R"({"id":1})", R"({"id":1})")}));
  ASSERT_FALSE(report.failure) << describe(report);
  EXPECT_EQ(server.documents("public_items").size(), 1u);
}

TEST(ElasticsearchConfig, RejectsBadOptionsWithTheirLocation) {
  Metrics metrics;
  ::testing::internal::CaptureStderr();
  bool failed_bad_url = false, failed_auth = false, failed_format = false;
  {
    ::testing::TestPartResultArray results;
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    failed_bad_url =
        build_plugin_sink("elasticsearch", "urls: [\"ftp://x\"]\n", metrics) == nullptr;
    failed_auth = build_plugin_sink("elasticsearch",
                                    "urls: [\"http://x\"]\nauth: {username: u, api_key: k}\n",
                                    metrics) == nullptr;
    failed_format = build_plugin_sink("elasticsearch", "urls: [\"http://x\"]\nformat: debezium\n",
                                      metrics) == nullptr;
    ASSERT_EQ(results.size(), 3);
    EXPECT_THAT(results.GetTestPartResult(0).message(),
                ::testing::HasSubstr("cdcd.yaml:1:7: error: sinks.conformance.urls: expected URLs "
                                     "starting with http:// or https://"));
    EXPECT_THAT(results.GetTestPartResult(1).message(),
                ::testing::HasSubstr("expected one of username/password, api_key or bearer"));
    EXPECT_THAT(results.GetTestPartResult(2).message(),
                ::testing::HasSubstr("applies to document: changelog only"));
  }
  ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(failed_bad_url && failed_auth && failed_format);
}

}  // namespace
}  // namespace cdcd::test
