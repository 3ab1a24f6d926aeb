// The whole daemon writing to the Elasticsearch sink (jsonl source -> `type: elasticsearch` -> the
// strict `_bulk` test server): the index converges on the source's final rows through per-item and
// per-request 429s and SIGKILLs at random moments while the log grows; a mapping error dead-letters
// exactly that change; bad credentials stop the daemon at start with one clear error.

#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/daemon_fixture.h"
#include "tests/support/es_test_server.h"
#include "tests/support/log_appender.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr int kChanges = 30'000;
constexpr int kKeysPerEntity = 300;
constexpr int kKills = 5;
constexpr std::size_t kChunkChanges = 100;
constexpr auto kChunkPeriod = 40ms;

// The index each entity's documents go to with `index: "{schema}_{table}"`.
std::string index_of(const std::string& entity) {
  std::string index = entity;
  index[index.rfind('.')] = '_';
  return index;
}

// The source's final rows: index -> id -> row (deleted rows absent).
std::map<std::string, std::map<std::string, json>> final_rows(const NativeFile& log) {
  std::map<std::string, std::map<std::string, json>> rows;
  for (const auto& change : log.changes) {
    auto& index = rows[index_of(change.entity)];
    std::string id = std::to_string(json::parse(change.key)["id"].get<long>());
    if (change.operation == "delete") {
      index.erase(id);
    } else {
      index[id] = change.new_row;
    }
  }
  return rows;
}

std::string sink_yaml(const std::string& url, const std::string& extra = "") {
  return "  search:\n    type: elasticsearch\n    urls: [\"" + url +
         "\"]\n    index: \"{schema}_{table}\"\n"
         "    retry: {initial_backoff: 20ms, max_backoff: 200ms}\n"
         "    bulk: {max_actions: 150, concurrency: 3}\n" +
         extra;
}

TEST(ElasticsearchDaemonTest, IndexConvergesOnTheSourceThrough429sAndSigkills) {
  TempDir dir;
  EsTestServer server(dir.path(), EsTestServer::Options{{}, /*keep_log=*/false});
  const std::string generated = dir.file("generated.jsonl");
  const std::string log_path = dir.file("changes.jsonl");
  generate_changelog(generated, kChanges, kKeysPerEntity);
  const std::string text = read_file(generated);
  const NativeFile log = read_native_file(generated);
  ASSERT_EQ(log.changes.size(), static_cast<std::size_t>(kChanges));
  const std::uint64_t last_lsn = log.changes.back().lsn;
  write_file(log_path, "");
  const std::string checkpoints = dir.file("checkpoints");
  write_config(dir, "sources:\n  log: {type: jsonl, path: " + log_path +
                        ", follow: true, poll_interval: 20ms}\nsinks:\n" + sink_yaml(server.url()) +
                        "checkpoints: {type: file, dir: " + checkpoints +
                        ", interval: 100ms}\nconsumers:\n  c:\n    source: log\n    sinks: "
                        "[search]\n    batch: {max_events: 500, max_wait: 20ms}\nlog: {level: "
                        "info}\n");
  // Per-item 429s throughout, and whole requests refused now and then.
  server.faults({{"item_statuses", {{"count", 600}, {"status", 429}}},
                 {"request_statuses", {429, 503, 429}}});

  DaemonProcess daemon(dir.file("cdcd.yaml"), dir.path());
  LogAppender appender(log_path, log, text, kChunkChanges, kChunkPeriod);
  appender.start();
  ASSERT_TRUE(kill_at_random_moments(daemon, appender, checkpoints + "/c.json", kKills, [&] {
    server.faults({{"item_statuses", {{"count", 300}, {"status", 429}}}});
  }));
  appender.join();
  ASSERT_EQ(appender.error(), "");
  daemon.start();
  ASSERT_TRUE(wait_for_checkpoint(checkpoints + "/c.json", last_lsn, scaled(120s)))
      << daemon.stderr_text();
  EXPECT_EQ(daemon.stop(scaled(30s)), 0) << daemon.stderr_text();
  EXPECT_EQ(daemon.stderr_text().find(" error ["), std::string::npos) << daemon.stderr_text();

  auto state = server.state();
  EXPECT_GT(state["counters"]["item_failures"].get<int>(), 100) << "429s were injected";
  std::size_t compared = 0;
  for (const auto& [index, rows] : final_rows(log)) {
    json docs = state["indices"].contains(index) ? state["indices"][index]["docs"] : json::object();
    std::size_t mismatches = 0;
    for (const auto& [id, row] : rows) {
      ++compared;
      if (!docs.contains(id)) {
        if (++mismatches <= 3) ADD_FAILURE() << index << "/" << id << " missing; want " << row;
        continue;
      }
      json source = docs[id]["_source"];
      source.erase("_cdc_version");
      if (source != row && ++mismatches <= 3) {
        ADD_FAILURE() << index << "/" << id << " is " << source << "; want " << row;
      }
    }
    for (const auto& [id, doc] : docs.items()) {
      if (!rows.count(id) && ++mismatches <= 3) {
        ADD_FAILURE() << index << "/" << id << " exists but the source deleted it";
      }
    }
    EXPECT_EQ(mismatches, 0u) << index;
    EXPECT_EQ(docs.size(), rows.size()) << index;
  }
  EXPECT_GT(compared, 500u);
}

TEST(ElasticsearchDaemonTest, AMappingErrorDeadLettersExactlyThatChange) {
  TempDir dir;
  EsTestServer server(dir.path());
  const std::string log_path = dir.file("changes.jsonl");
  write_file(
      log_path,
      R"({"lsn":10,"seq":0,"timestamp":1,"entity":"public.items","key":{"id":1},"operation":"insert","old":null,"new":{"id":1,"n":1}})"
      "\n"
      R"({"lsn":20,"seq":0,"timestamp":2,"entity":"public.items","key":{"id":2},"operation":"insert","old":null,"new":{"id":2,"n":"not a number"}})"
      "\n"
      R"({"lsn":30,"seq":0,"timestamp":3,"entity":"public.items","key":{"id":3},"operation":"insert","old":null,"new":{"id":3,"n":3}})"
      "\n" +
          commit_marker_line(30));
  const std::string dead_letters = dir.file("dead.jsonl");
  const int port = free_port();
  const std::string checkpoints = dir.file("checkpoints");
  write_config(dir, "sources:\n  log: {type: jsonl, path: " + log_path +
                        ", follow: true, poll_interval: 20ms}\nsinks:\n" + sink_yaml(server.url()) +
                        "  dlq: {type: file, path: " + dead_letters +
                        ", format: native}\ncheckpoints: {type: file, dir: " + checkpoints +
                        ", interval: 100ms}\nconsumers:\n  c:\n    source: log\n    sinks: "
                        "[search]\n    on_error: dead_letter\n    dead_letter_sink: dlq\n"
                        "metrics: {listen: 127.0.0.1:" +
                        std::to_string(port) + "}\n");
  DaemonProcess daemon(dir.file("cdcd.yaml"), dir.path());
  daemon.start();
  ASSERT_TRUE(wait_for_checkpoint(checkpoints + "/c.json", 30, scaled(30s)))
      << daemon.stderr_text();
  // The sink's metrics, as Prometheus scrapes them.
  auto samples = scrape(port);
  const std::map<std::string, std::string> search{{"sink", "search"}};
  auto outcome = [&](const std::string& name) {
    return metric_value(samples, "cdcd_elasticsearch_items_total",
                        {{"sink", "search"}, {"outcome", name}});
  };
  EXPECT_EQ(outcome("created"), 2);
  EXPECT_EQ(outcome("rejected"), 1);
  EXPECT_EQ(outcome("superseded"), 0);
  EXPECT_GE(metric_value(samples, "cdcd_elasticsearch_bulk_duration_seconds_count", search), 1);
  EXPECT_GT(metric_value(samples, "cdcd_elasticsearch_request_bytes_total",
                         {{"sink", "search"}, {"stage", "uncompressed"}}),
            metric_value(samples, "cdcd_elasticsearch_request_bytes_total",
                         {{"sink", "search"}, {"stage", "wire"}}));
  EXPECT_EQ(metric_value(samples, "cdcd_elasticsearch_requests_in_flight", search), 0);
  EXPECT_EQ(daemon.stop(scaled(30s)), 0) << daemon.stderr_text();
  auto docs = server.documents("public_items");
  EXPECT_EQ(docs.size(), 2u) << docs;
  EXPECT_TRUE(docs.contains("1") && docs.contains("3")) << docs;
  auto lines = read_lines(dead_letters);
  ASSERT_EQ(lines.size(), 1u) << read_file(dead_letters);
  auto letter = json::parse(lines[0]);
  EXPECT_EQ(letter["lsn"], 20);
  EXPECT_THAT(letter["new"]["reason"].get<std::string>(),
              ::testing::HasSubstr("document_parsing_exception"));
  EXPECT_THAT(letter["new"]["reason"].get<std::string>(),
              ::testing::HasSubstr("failed to parse field [n] of type [long]"));
}

TEST(ElasticsearchDaemonTest, BadCredentialsStopTheDaemonAtStartWithOneClearError) {
  TempDir dir;
  EsTestServer server(dir.path(),
                      EsTestServer::Options{{"--user", "elastic", "--password", "right-pw"}});
  const std::string log_path = dir.file("changes.jsonl");
  write_file(log_path, "");
  write_config(
      dir,
      "sources:\n  log: {type: jsonl, path: " + log_path + ", follow: true}\nsinks:\n" +
          sink_yaml(server.url(), "    auth: {username: elastic, password: \"${ES_PASSWORD}\"}\n") +
          "checkpoints: {type: file, dir: " + dir.file("checkpoints") +
          "}\nconsumers:\n  c:\n    source: log\n    sinks: [search]\n");
  ::setenv("ES_PASSWORD", "wrong-secret-4711", 1);
  auto result = run_cdcd({"run", "--config", dir.file("cdcd.yaml")}, scaled(30s));
  ::unsetenv("ES_PASSWORD");
  ASSERT_TRUE(result.exit_code) << "cdcd kept running (a retry loop?):\n" << result.err;
  EXPECT_NE(*result.exit_code, 0);
  const std::string output = result.out + result.err;
  EXPECT_THAT(output, ::testing::HasSubstr("authentication failed"));
  EXPECT_THAT(output, ::testing::HasSubstr("401"));
  EXPECT_THAT(output, ::testing::Not(::testing::HasSubstr("wrong-secret-4711")));
  std::size_t mentions = 0;
  for (auto at = output.find("authentication failed"); at != std::string::npos;
       at = output.find("authentication failed", at + 1)) {
    ++mentions;
  }
  EXPECT_LE(mentions, 2u) << "one clear error, not a retry loop:\n" << output;
  EXPECT_EQ(server.state()["counters"]["bulk_requests"], 0);
}

}  // namespace
}  // namespace cdcd::test
