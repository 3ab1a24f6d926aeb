// PostgreSQL -> cdcd -> the Elasticsearch sink (against the strict `_bulk` test server): an initial
// snapshot, then an update that leaves a TOASTed column out of the new row image (pgoutput's
// "unchanged TOAST" marker) keeps that field in the document, version-fenced by the partial-update
// script; deletes remove documents; a TRUNCATE with `truncate: delete_by_query` empties the index.

#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/daemon_fixture.h"
#include "tests/support/es_test_server.h"
#include "tests/support/postgres_server.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

TEST(ElasticsearchPostgresTest, PartialToastUpdatesKeepTheOmittedFieldAndTruncateEmptiesTheIndex) {
  TempDir dir;
  PostgresServer postgres;
  EsTestServer es(dir.path());
  const std::string db = postgres.create_database();
  // EXTERNAL storage: the long value is stored out of line uncompressed, so an update that does not
  // touch it sends it as "unchanged TOAST".
  postgres.execute(
      "CREATE TABLE docs (id int PRIMARY KEY, title text, body text);"
      "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;"
      "INSERT INTO docs VALUES (1, 'snapshot', repeat('toast', 4000)), (2, 'two', 'short');",
      db);
  write_config(dir, "sources:\n  pg:\n    type: postgres\n    dsn: \"" + postgres.dsn(db) +
                        "\"\n    slot: cdcd_es\n    publication: cdcd_es\n    snapshot: initial\n"
                        "    status_interval: 200ms\nsinks:\n  search:\n    type: elasticsearch\n"
                        "    urls: [\"" +
                        es.url() +
                        "\"]\n    index: \"{schema}_{table}\"\n    truncate: delete_by_query\n"
                        "    retry: {initial_backoff: 20ms, max_backoff: 200ms}\n"
                        "checkpoints: {type: file, dir: " +
                        dir.file("checkpoints") +
                        ", interval: 200ms}\nconsumers:\n  c:\n    source: pg\n    sinks: "
                        "[search]\n    batch: {max_events: 100, max_wait: 20ms}\n");
  DaemonProcess daemon(dir.file("cdcd.yaml"), dir.path());
  daemon.start();
  ASSERT_TRUE(wait_until([&] { return es.documents("public_docs").size() == 2; }, scaled(30s)))
      << daemon.stderr_text();
  ASSERT_TRUE(wait_until([&] {
    return postgres.query_value("SELECT count(*) FROM pg_replication_slots WHERE active", db) ==
           "1";
  }));

  postgres.execute(
      "UPDATE docs SET title = 'streamed' WHERE id = 1;"
      "DELETE FROM docs WHERE id = 2;"
      "INSERT INTO docs VALUES (3, 'three', 'x');",
      db);
  json docs;
  ASSERT_TRUE(wait_until(
      [&] {
        docs = es.documents("public_docs");
        return docs.contains("3") && !docs.contains("2") && docs.contains("1") &&
               docs["1"]["title"] == "streamed";
      },
      scaled(30s)))
      << docs.dump().substr(0, 500) << "\n"
      << daemon.stderr_text();
  ASSERT_TRUE(docs["1"].contains("body")) << "the unchanged TOAST column was wiped";
  std::string body;
  for (int i = 0; i < 4000; ++i) body += "toast";
  EXPECT_EQ(docs["1"]["body"], body);
  // The update went out as a partial image (merged into the document read back), not as a whole
  // row, and its version fences it.
  const json state = es.state();
  EXPECT_GT(state["counters"]["mget_requests"].get<int>(), 0)
      << "the update carried the whole row: no TOAST column was left out";
  EXPECT_GT(docs["1"]["_cdc_version"].get<std::uint64_t>(), 0u);

  postgres.execute("TRUNCATE docs", db);
  ASSERT_TRUE(wait_until([&] { return es.documents("public_docs").empty(); }, scaled(30s)))
      << daemon.stderr_text();
  EXPECT_EQ(daemon.stop(scaled(30s)), 0) << daemon.stderr_text();
  postgres.drop_database(db);
}

}  // namespace
}  // namespace cdcd::test
