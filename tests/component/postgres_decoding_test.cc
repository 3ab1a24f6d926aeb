// What the postgres source makes of a change depends only on the replication stream: decoded
// on time, or late from a second slot after the catalog changed, the output is the same. Runs
// against a real PostgreSQL 15 started by the test (tests/support).
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "daemon/format/format.h"
#include "sources/postgres/postgres_source.h"
#include "tests/support/postgres_source_fixture.h"

namespace cdcd::postgres {
namespace {

using nlohmann::json;

using test::RecordingEmitter;

json parse(const std::string& text) { return text.empty() ? json() : json::parse(text); }

// The whole change as the file sink writes it: lsn, txid, commit time, key, old key, images.
std::vector<std::string> native_lines(const std::vector<Change>& changes) {
  std::vector<std::string> lines;
  for (const auto& change : changes) {
    std::string line;
    encode_change(Format::kNative, change, EncodeContext{"pg", "postgres", 0}, line);
    lines.push_back(std::move(line));
  }
  return lines;
}

class PostgresDecodingTest : public test::PostgresSourceFixture {
 protected:
  static void SetUpTestSuite() { start_server({"wal_sender_timeout = 5s"}); }
};

// Issue 9, items 7-9: one workload, read by one slot while it runs and by a second slot after
// the domain, the enum and two tables are dropped and a primary key was added.
TEST_F(PostgresDecodingTest, ALateSlotAfterDdlGivesTheSameChanges) {
  sql("CREATE DOMAIN positive AS int CHECK (VALUE > 0);"
      "CREATE TYPE mood AS ENUM ('sad', 'happy');"
      "CREATE TABLE typed (id int PRIMARY KEY, d positive, da positive[], e mood, ea mood[]);"
      "CREATE TABLE full_nokey (a int, b text); ALTER TABLE full_nokey REPLICA IDENTITY FULL;"
      "CREATE TABLE full_pk (id int PRIMARY KEY, v text);"
      "ALTER TABLE full_pk REPLICA IDENTITY FULL;"
      "CREATE TABLE arrays (id int PRIMARY KEY, ip inet[], pt point[], m money[], r int4range[], "
      "u uuid[], d date[], tz timestamptz[], jb jsonb[], bx box[], lb int[], t text[])");
  auto& live = start_source(options("live_" + db_));
  sql("SELECT pg_create_logical_replication_slot('late_" + db_ + "', 'pgoutput')");

  const std::vector<std::string> workload = {
      "INSERT INTO typed VALUES (1, 3, '{42}', 'happy', '{sad,happy}')",
      "UPDATE typed SET id = 2, d = 4 WHERE id = 1",
      "UPDATE typed SET e = 'sad' WHERE id = 2",
      "INSERT INTO full_nokey VALUES (1, 'x'), (2, 'y')",
      "UPDATE full_nokey SET b = 'z' WHERE a = 1",
      "DELETE FROM full_nokey WHERE a = 2",
      "INSERT INTO full_pk VALUES (1, 'x')",
      "UPDATE full_pk SET v = 'w'",
      "INSERT INTO arrays VALUES (1, '{10.0.0.1/8,NULL}', '{\"(1,2)\"}', '{1.50}', "
      "'{\"[1,5)\",empty}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{2024-02-29,infinity}', "
      "'{\"2024-02-29 13:14:15+02\"}', ARRAY['{\"a\": [1, 2]}'::jsonb, 'null'], "
      "ARRAY[box(point(1,1), point(0,0))], '[2:3]={1,2}', '{\"a,b\",\"c\\\"d\",NULL,\"NULL\"}')",
  };
  for (const auto& statement : workload) sql(statement);
  RecordingEmitter on_time;
  ASSERT_TRUE(read_transactions(live, on_time, workload.size()));

  sql("ALTER TABLE full_nokey ADD PRIMARY KEY (a);"
      "DROP TABLE typed; DROP DOMAIN positive; DROP TYPE mood; DROP TABLE full_pk");
  auto late_options = options("late_" + db_);
  late_options.create_slot = false;
  auto& late_source = start_source(late_options);
  RecordingEmitter late;
  ASSERT_TRUE(read_transactions(late_source, late, workload.size()));

  EXPECT_EQ(native_lines(late.changes()), native_lines(on_time.changes()));

  // And what they are: types not built in are their text form, built-in arrays JSON arrays.
  auto typed = on_time.changes_of("public.typed");
  ASSERT_EQ(typed.size(), 3u);
  EXPECT_EQ(parse(typed[0].new_row),
            json::parse(R"({"id":1,"d":"3","da":"{42}","e":"happy","ea":"{sad,happy}"})"));
  // The key changed: old_key names the row that is gone. It did not in the next update.
  EXPECT_EQ(parse(typed[1].key), json({{"id", 2}}));
  EXPECT_EQ(parse(typed[1].old_key), json({{"id", 1}}));
  EXPECT_EQ(parse(typed[1].old_row), json({{"id", 1}}));
  EXPECT_EQ(typed[2].old_key, "");
  // REPLICA IDENTITY FULL: every column is the key, with or without a primary key.
  auto nokey = on_time.changes_of("public.full_nokey");
  ASSERT_EQ(nokey.size(), 4u);
  EXPECT_EQ(parse(nokey[2].key), json({{"a", 1}, {"b", "z"}}));
  EXPECT_EQ(parse(nokey[2].old_key), json({{"a", 1}, {"b", "x"}}));
  EXPECT_EQ(parse(nokey[3].key), json({{"a", 2}, {"b", "y"}}));
  auto full_pk = on_time.changes_of("public.full_pk");
  ASSERT_EQ(full_pk.size(), 2u);
  EXPECT_EQ(parse(full_pk[0].key), json({{"id", 1}, {"v", "x"}}));
  EXPECT_EQ(parse(full_pk[1].old_key), json({{"id", 1}, {"v", "x"}}));
  auto arrays = on_time.changes_of("public.arrays");
  ASSERT_EQ(arrays.size(), 1u);
  EXPECT_EQ(parse(arrays[0].new_row), json::parse(R"x({"id":1,"ip":["10.0.0.1/8",null],
      "pt":["(1,2)"],"m":["$1.50"],"r":["[1,5)","empty"],
      "u":["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],"d":["2024-02-29","infinity"],
      "tz":["2024-02-29T11:14:15+00:00"],"jb":[{"a":[1,2]},null],"bx":["(1,1),(0,0)"],
      "lb":"[2:3]={1,2}","t":["a,b","c\"d",null,"NULL"]})x"))
      << arrays[0].new_row;
}

// A key column of a REPLICA IDENTITY FULL table whose TOASTed value an update left alone: the new
// row lists it as unchanged, the key takes it from the old row instead of dropping it.
TEST_F(PostgresDecodingTest, UnchangedToastValueStaysInTheKey) {
  sql("CREATE TABLE docs (id int, body text, n int); ALTER TABLE docs REPLICA IDENTITY FULL;"
      "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL");
  auto& source = start_source(options());
  sql("INSERT INTO docs SELECT 1, string_agg(md5(i::text), ''), 0 FROM generate_series(1, 640) i");
  sql("UPDATE docs SET n = 1");
  RecordingEmitter out;
  ASSERT_TRUE(read_transactions(source, out, 2));
  ASSERT_EQ(out.changes().size(), 2u);
  const auto changes = out.changes();
  const Change& update = changes[1];
  EXPECT_EQ(update.unchanged_columns, std::vector<std::string>{"body"});
  json key = parse(update.key);
  json old_key = parse(update.old_key);
  EXPECT_EQ(key["body"].get<std::string>().size(), 640u * 32);
  EXPECT_EQ(key["n"], 1);
  EXPECT_EQ(old_key["body"], key["body"]);
  EXPECT_EQ(old_key["n"], 0);
  EXPECT_EQ(parse(changes[0].key), old_key);
}

// Snapshot rows map types and keys as the stream does: a row read by the initial snapshot and the
// same row as a later delete's old image (REPLICA IDENTITY FULL sends it whole) are equal.
TEST_F(PostgresDecodingTest, SnapshotRowsLookLikeStreamedRows) {
  sql("CREATE DOMAIN positive AS int CHECK (VALUE > 0);"
      "CREATE TABLE t (id int PRIMARY KEY, d positive, da positive[], ip inet[], lb int[], "
      "tz timestamptz[]);"
      "ALTER TABLE t REPLICA IDENTITY FULL;"
      "INSERT INTO t VALUES (1, 3, '{4}', '{10.0.0.1}', '[0:0]={5}', '{\"2024-02-29 "
      "13:14:15+00\"}')");
  auto opts = options();
  opts.initial_snapshot = true;
  auto& source = start_source(opts);
  RecordingEmitter out;
  ASSERT_TRUE(read_transactions(source, out, 1));
  sql("DELETE FROM t");
  ASSERT_TRUE(read_transactions(source, out, 2));
  ASSERT_EQ(out.changes().size(), 2u);
  const auto changes = out.changes();
  const Change& read = changes[0];
  const Change& removed = changes[1];
  ASSERT_EQ(read.operation, Operation::kRead);
  EXPECT_EQ(read.new_row, removed.old_row);
  EXPECT_EQ(read.key, removed.key);
  EXPECT_EQ(parse(read.new_row),
            json::parse(R"({"id":1,"d":"3","da":"{4}","ip":["10.0.0.1"],"lb":"[0:0]={5}",)"
                        R"("tz":["2024-02-29T13:14:15+00:00"]})"));
}

}  // namespace
}  // namespace cdcd::postgres
