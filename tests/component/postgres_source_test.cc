// The postgres source against a real PostgreSQL 15 started by the test (tests/support).
#include <atomic>
#include <cstdlib>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "daemon/config/node.h"
#include "daemon/core/lsn.h"
#include "daemon/plugin/registry.h"
#include "sources/postgres/pg_connection.h"
#include "sources/postgres/postgres_source.h"
#include "tests/support/postgres_server.h"
#include "tests/support/postgres_source_fixture.h"

namespace cdcd {
void register_source_postgres(PluginRegistry& registry);
}

namespace cdcd::postgres {
namespace {

using nlohmann::json;
using test::PgSession;
using test::PostgresServer;
using Clock = std::chrono::steady_clock;

using test::RecordingEmitter;

json parse(const std::string& text) { return text.empty() ? json() : json::parse(text); }

class PostgresSourceTest : public test::PostgresSourceFixture {
 protected:
  static void SetUpTestSuite() {
    start_server({"wal_sender_timeout = 3s", "max_wal_size = 256MB"});
  }

  std::uint64_t confirmed_flush() {
    auto lsn = value(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'slot_" +
        db_ + "'");
    return lsn ? parse_lsn(*lsn).value_or(0) : 0;
  }
  std::size_t count_changes(const RecordingEmitter& out) { return out.changes().size(); }
};

TEST_F(PostgresSourceTest, EveryCommonTypeBecomesTypedJson) {
  sql("CREATE TYPE mood AS ENUM ('sad', 'happy');"
      "CREATE DOMAIN positive AS int CHECK (VALUE > 0);"
      "CREATE TABLE types (id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, "
      "f8 float8, f8nan float8, f8inf float8, n numeric, t text, vc varchar(10), c char(4), "
      "j json, jb jsonb, u uuid, d date, tm time, ts timestamp, tstz timestamptz, iv interval, "
      "by bytea, ia int[], ta text[], m2 int[][], e mood, ea mood[], dom positive, ip inet, "
      "tz timetz, nul text)");
  auto& source = start_source(options());
  sql("INSERT INTO types VALUES (1, true, -2, 2147483647, 9223372036854775807, 1.5, "
      "0.1, 'NaN', '-Infinity', 123456789012345678901234567890.123456789, 'he said \"hi\"\n\ttab', "
      "'varchar', 'ab', '{\"a\": [1, 2],\n \"b\": null}', '{\"z\": 1, \"a\": \"x\"}', "
      "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '13:14:15.5', "
      "'2024-02-29 13:14:15.123456', '2024-02-29 13:14:15+02', '1 year 2 months 3 days 04:05:06', "
      "'\\x00ff10', '{1,NULL,3}', '{\"a b\",\"c\\\"d\",NULL,\"NULL\"}', '{{1,2},{3,4}}', 'happy', "
      "'{sad,happy}', 7, '10.0.0.1/8', '10:00:00+05:30', NULL)");
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 1; }));
  auto changes = out.changes();
  ASSERT_EQ(changes.size(), 1u);
  json expected = {
      {"id", 1},
      {"b", true},
      {"i2", -2},
      {"i4", 2147483647},
      {"i8", 9223372036854775807LL},
      {"f4", 1.5},
      {"f8", 0.1},
      {"f8nan", "NaN"},
      {"f8inf", "-Infinity"},
      {"n", "123456789012345678901234567890.123456789"},
      {"t", "he said \"hi\"\n\ttab"},
      {"vc", "varchar"},
      {"c", "ab  "},
      {"j", {{"a", {1, 2}}, {"b", nullptr}}},
      {"jb", {{"a", "x"}, {"z", 1}}},
      {"u", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
      {"d", "2024-02-29"},
      {"tm", "13:14:15.5"},
      {"ts", "2024-02-29T13:14:15.123456"},
      {"tstz", "2024-02-29T11:14:15+00:00"},
      {"iv", "P1Y2M3DT4H5M6S"},
      {"by", "AP8Q"},
      {"ia", {1, nullptr, 3}},
      {"ta", {"a b", "c\"d", nullptr, "NULL"}},
      {"m2", {{1, 2}, {3, 4}}},
      {"e", "happy"},
      // Types that are not built in (enums, domains, arrays of them) are their text form.
      {"ea", "{sad,happy}"},
      {"dom", "7"},
      {"ip", "10.0.0.1/8"},
      {"tz", "10:00:00+05:30"},
      {"nul", nullptr},
  };
  EXPECT_EQ(parse(changes[0].new_row), expected) << changes[0].new_row;
  // Compact: a row never spans lines, whatever the json value held.
  EXPECT_EQ(changes[0].new_row.find('\n'), std::string::npos);
  // numeric keeps every digit: it is a string in the text, not a double.
  EXPECT_NE(changes[0].new_row.find("\"123456789012345678901234567890.123456789\""),
            std::string::npos);
  EXPECT_EQ(parse(changes[0].key), json({{"id", 1}}));
  EXPECT_EQ(changes[0].operation, Operation::kInsert);
  EXPECT_EQ(changes[0].entity, "public.types");
  EXPECT_TRUE(changes[0].old_row.empty());
  EXPECT_EQ(changes[0].source, db_);
  ASSERT_TRUE(changes[0].txid.has_value());
  // Commit time in µs since the Unix epoch (PostgreSQL counts from 2000): within a minute of now.
  auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  EXPECT_LT(std::llabs(changes[0].timestamp_us - now_us), 60'000'000);
  EXPECT_EQ(out.ends()[0].lsn, changes[0].lsn);
  EXPECT_EQ(out.ends()[0].timestamp_us, changes[0].timestamp_us);
}

TEST_F(PostgresSourceTest, UpdateAndDeleteWithDefaultReplicaIdentity) {
  sql("CREATE TABLE items (id int PRIMARY KEY, name text, qty int)");
  auto& source = start_source(options());
  sql("INSERT INTO items VALUES (1, 'a', 1)");
  sql("UPDATE items SET qty = 2 WHERE id = 1");
  sql("UPDATE items SET id = 10 WHERE id = 1");
  sql("DELETE FROM items WHERE id = 10");
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 4; }));
  auto changes = out.changes();
  ASSERT_EQ(changes.size(), 4u);
  EXPECT_EQ(changes[1].operation, Operation::kUpdate);
  EXPECT_EQ(parse(changes[1].key), json({{"id", 1}}));
  EXPECT_EQ(parse(changes[1].old_row), json({{"id", 1}}));
  EXPECT_EQ(parse(changes[1].new_row), json({{"id", 1}, {"name", "a"}, {"qty", 2}}));
  // The key changed: old has the old key, key the new one.
  EXPECT_EQ(parse(changes[2].key), json({{"id", 10}}));
  EXPECT_EQ(parse(changes[2].old_row), json({{"id", 1}}));
  EXPECT_EQ(changes[3].operation, Operation::kDelete);
  EXPECT_EQ(parse(changes[3].key), json({{"id", 10}}));
  EXPECT_EQ(parse(changes[3].old_row), json({{"id", 10}}));
  EXPECT_TRUE(changes[3].new_row.empty());
  for (std::size_t i = 1; i < changes.size(); ++i) EXPECT_GT(changes[i].lsn, changes[i - 1].lsn);
}

TEST_F(PostgresSourceTest, UpdateAndDeleteWithReplicaIdentityFull) {
  sql("CREATE TABLE items (id int PRIMARY KEY, name text, qty int);"
      "ALTER TABLE items REPLICA IDENTITY FULL;"
      "CREATE TABLE nokey (a int, b text); ALTER TABLE nokey REPLICA IDENTITY FULL");
  auto& source = start_source(options());
  sql("INSERT INTO items VALUES (1, 'a', 1)");
  sql("UPDATE items SET qty = 2 WHERE id = 1");
  sql("DELETE FROM items WHERE id = 1");
  sql("INSERT INTO nokey VALUES (5, 'x')");
  sql("DELETE FROM nokey");
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 5; }));
  auto changes = out.changes();
  ASSERT_EQ(changes.size(), 5u);
  // Every column is the key, as pgoutput flags them; old is the whole row before the change.
  EXPECT_EQ(parse(changes[1].key), json({{"id", 1}, {"name", "a"}, {"qty", 2}}));
  EXPECT_EQ(parse(changes[1].old_row), json({{"id", 1}, {"name", "a"}, {"qty", 1}}));
  EXPECT_EQ(parse(changes[1].new_row), json({{"id", 1}, {"name", "a"}, {"qty", 2}}));
  EXPECT_EQ(parse(changes[2].key), json({{"id", 1}, {"name", "a"}, {"qty", 2}}));
  EXPECT_EQ(parse(changes[2].old_row), json({{"id", 1}, {"name", "a"}, {"qty", 2}}));
  EXPECT_EQ(parse(changes[4].key), json({{"a", 5}, {"b", "x"}}));
  EXPECT_EQ(parse(changes[4].old_row), json({{"a", 5}, {"b", "x"}}));
}

TEST_F(PostgresSourceTest, UnchangedToastValueIsListedNotInvented) {
  sql("CREATE TABLE docs (id int PRIMARY KEY, body text, n int);"
      "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL");
  auto& source = start_source(options());
  // 20 kB that cannot be stored inline: TOASTed out of line.
  sql("INSERT INTO docs SELECT 1, string_agg(md5(i::text), '') , 0 FROM generate_series(1, 640) i");
  sql("UPDATE docs SET n = 1 WHERE id = 1");
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 2; }));
  auto changes = out.changes();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(parse(changes[0].new_row)["body"].get<std::string>().size(), 640u * 32);
  EXPECT_TRUE(changes[0].unchanged_columns.empty());
  EXPECT_EQ(parse(changes[1].new_row), json({{"id", 1}, {"n", 1}}));
  EXPECT_EQ(changes[1].unchanged_columns, std::vector<std::string>{"body"});
}

TEST_F(PostgresSourceTest, ManyStatementsInOneTransactionSpillBeyondTheMemoryBound) {
  sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  auto opts = options();
  opts.max_transaction_bytes = 16 * 1024;  // forces the spill file
  auto& source = start_source(opts);
  std::string statements = "BEGIN;";
  for (int i = 0; i < 3000; ++i) {
    statements +=
        "INSERT INTO t VALUES (" + std::to_string(i) + ", 'row " + std::to_string(i) + "');";
  }
  statements += "UPDATE t SET v = 'updated' WHERE id < 100; COMMIT;";
  sql(statements);
  sql("INSERT INTO t VALUES (-1, 'after')");
  RecordingEmitter out;
  // Backpressure in the middle of the transaction: delivery resumes where it stopped.
  out.room = 1000;
  ASSERT_TRUE(poll_until(source, out, [&] { return out.events.size() >= 1000; }));
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(source.poll(out, Clock::now() + std::chrono::milliseconds(20)));
  EXPECT_EQ(out.events.size(), 1000u);
  out.room.reset();
  ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 2; }));
  auto changes = out.changes();
  ASSERT_EQ(changes.size(), 3101u);
  for (std::size_t i = 0; i < 3100; ++i) {
    ASSERT_EQ(changes[i].lsn, changes[0].lsn);
    ASSERT_EQ(changes[i].seq, i);
  }
  EXPECT_EQ(parse(changes[2999].new_row), json({{"id", 2999}, {"v", "row 2999"}}));
  EXPECT_EQ(changes[3000].operation, Operation::kUpdate);
  // The transaction's end comes after all of its changes, then the next transaction.
  ASSERT_TRUE(std::holds_alternative<TransactionEnd>(out.events[3100]));
  EXPECT_EQ(std::get<TransactionEnd>(out.events[3100]).lsn, changes[0].lsn);
  EXPECT_GT(changes[3100].lsn, changes[0].lsn);
}

TEST_F(PostgresSourceTest, InterleavedTransactionsArriveInCommitOrder) {
  sql("CREATE TABLE t (id int PRIMARY KEY, who text)");
  auto& source = start_source(options());
  PgSession first(server_->dsn(db_));
  PgSession second(server_->dsn(db_));
  first.execute("BEGIN; INSERT INTO t VALUES (1, 'first')");
  second.execute("BEGIN; INSERT INTO t VALUES (2, 'second')");
  first.execute("INSERT INTO t VALUES (3, 'first')");
  second.execute("INSERT INTO t VALUES (4, 'second'); COMMIT");
  first.execute("INSERT INTO t VALUES (5, 'first'); COMMIT");
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 2; }));
  std::vector<std::string> order;
  for (const auto& event : out.events) {
    if (const auto* change = std::get_if<Change>(&event)) {
      order.push_back(parse(change->new_row)["who"].get<std::string>() + ":" +
                      parse(change->key)["id"].dump());
    } else {
      order.push_back("end");
    }
  }
  EXPECT_EQ(order, (std::vector<std::string>{"second:2", "second:4", "end", "first:1", "first:3",
                                             "first:5", "end"}));
  auto ends = out.ends();
  EXPECT_LT(ends[0].lsn, ends[1].lsn);
}

TEST_F(PostgresSourceTest, TruncateOfSeveralTables) {
  sql("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)");
  auto& source = start_source(options());
  sql("INSERT INTO a VALUES (1); INSERT INTO b VALUES (1)");
  sql("TRUNCATE a, b");
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 2; }));
  auto changes = out.changes();
  ASSERT_EQ(changes.size(), 4u);
  std::set<std::string> truncated;
  for (std::size_t i = 2; i < 4; ++i) {
    EXPECT_EQ(changes[i].operation, Operation::kTruncate);
    EXPECT_EQ(changes[i].key, "{}");
    EXPECT_TRUE(changes[i].old_row.empty() && changes[i].new_row.empty());
    EXPECT_EQ(changes[i].lsn, changes[2].lsn);
    truncated.insert(changes[i].entity);
  }
  EXPECT_EQ(truncated, (std::set<std::string>{"public.a", "public.b"}));
}

TEST_F(PostgresSourceTest, ColumnsAddedAndDroppedMidStreamShowInLaterChanges) {
  sql("CREATE TABLE t (id int PRIMARY KEY, a text, gone int)");
  auto& source = start_source(options());
  sql("INSERT INTO t VALUES (1, 'x', 9)");
  sql("BEGIN; INSERT INTO t VALUES (2, 'y', 8); ALTER TABLE t ADD COLUMN added jsonb; "
      "INSERT INTO t VALUES (3, 'z', 7, '[1]'); COMMIT");
  sql("ALTER TABLE t DROP COLUMN gone");
  sql("UPDATE t SET added = '{\"k\": true}' WHERE id = 1");
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 3; }));
  auto changes = out.changes();
  ASSERT_EQ(changes.size(), 4u);
  EXPECT_EQ(parse(changes[0].new_row), json({{"id", 1}, {"a", "x"}, {"gone", 9}}));
  EXPECT_EQ(parse(changes[1].new_row), json({{"id", 2}, {"a", "y"}, {"gone", 8}}));
  EXPECT_EQ(parse(changes[2].new_row),
            json({{"id", 3}, {"a", "z"}, {"gone", 7}, {"added", json::array({1})}}));
  EXPECT_EQ(parse(changes[3].new_row), json({{"id", 1}, {"a", "x"}, {"added", {{"k", true}}}}));
}

TEST_F(PostgresSourceTest, RestartDeliversNothingBeforeTheStartPosition) {
  sql("CREATE TABLE t (id int PRIMARY KEY)");
  std::uint64_t second_lsn = 0;
  {
    auto& source = start_source(options());
    for (int i = 1; i <= 3; ++i) sql("INSERT INTO t VALUES (" + std::to_string(i) + ")");
    RecordingEmitter out;
    ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 3; }));
    second_lsn = out.ends()[1].lsn;
    // Only the first transaction is checkpointed: the slot keeps (and resends) the others.
    source.commit(out.ends()[0].lsn);
    ASSERT_TRUE(poll_until(source, out, [&] { return confirmed_flush() == out.ends()[0].lsn; }));
    source.stop();
  }
  sql("INSERT INTO t VALUES (4)");
  auto& restarted = start_source(options(), second_lsn + 1);
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(restarted, out, [&] { return out.ends().size() == 2; }));
  auto changes = out.changes();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(parse(changes[0].key), json({{"id", 3}}));
  EXPECT_EQ(parse(changes[1].key), json({{"id", 4}}));
  for (const auto& change : changes) EXPECT_GT(change.lsn, second_lsn);
}

TEST_F(PostgresSourceTest, CommitAdvancesTheSlotButNeverBeyondWhatWasCommitted) {
  sql("CREATE TABLE t (id int PRIMARY KEY)");
  auto registry = std::make_shared<prometheus::Registry>();
  auto& read_lsn = prometheus::BuildGauge().Name("read").Register(*registry).Add({});
  auto& head_lsn = prometheus::BuildGauge().Name("head").Register(*registry).Add({});
  auto& source = make_source(options(), registry, SourceMetrics{&read_lsn, &head_lsn, nullptr});
  ASSERT_TRUE(source.start(StartPosition{}));
  std::uint64_t initial = confirmed_flush();
  for (int i = 1; i <= 5; ++i) sql("INSERT INTO t VALUES (" + std::to_string(i) + ")");
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 5; }));
  auto ends = out.ends();
  EXPECT_EQ(read_lsn.Value(), static_cast<double>(ends[4].lsn));
  // Received but not committed: the slot must not move past them.
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(source.poll(out, Clock::now() + std::chrono::milliseconds(50)));
  EXPECT_EQ(confirmed_flush(), initial);
  source.commit(ends[1].lsn);
  ASSERT_TRUE(poll_until(source, out, [&] { return confirmed_flush() == ends[1].lsn; }));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(source.poll(out, Clock::now() + std::chrono::milliseconds(100)));
    EXPECT_EQ(confirmed_flush(), ends[1].lsn);
  }
  source.commit(ends[4].lsn);
  ASSERT_TRUE(poll_until(source, out, [&] { return confirmed_flush() == ends[4].lsn; }));
  // Lag and slot health.
  ASSERT_TRUE(poll_until(source, out, [&] { return head_lsn.Value() >= ends[4].lsn; }));
  EXPECT_GE(source.bytes_behind(ends[0].lsn, 0), ends[4].lsn - ends[0].lsn);
  EXPECT_EQ(source.bytes_behind(~0ull, 0), 0u);
  EXPECT_TRUE(source.connected());
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, registry->Collect());
  EXPECT_NE(text.str().find("cdcd_postgres_slot_retained_wal_bytes{source=\"pg\"}"),
            std::string::npos)
      << text.str();
}

TEST_F(PostgresSourceTest, HeartbeatsLetAnIdleSlotAdvance) {
  auto opts = options();
  opts.heartbeat = std::chrono::milliseconds(200);
  auto& source = start_source(opts);
  std::uint64_t initial = confirmed_flush();
  // WAL written elsewhere (another database) is invisible to this slot.
  server_->execute("CREATE TABLE IF NOT EXISTS busy (x int); INSERT INTO busy VALUES (1)");
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(source, out, [&] { return !out.ends().empty(); }));
  EXPECT_TRUE(out.changes().empty());
  source.commit(out.ends()[0].lsn);
  ASSERT_TRUE(poll_until(source, out, [&] { return confirmed_flush() > initial; }));
}

TEST_F(PostgresSourceTest, BackpressureKeepsTheConnectionAlive) {
  sql("CREATE TABLE t (id int PRIMARY KEY)");
  auto opts = options();
  opts.status_interval = std::chrono::milliseconds(500);
  auto& source = start_source(opts);
  sql("INSERT INTO t SELECT generate_series(1, 50)");
  for (int i = 51; i <= 60; ++i) sql("INSERT INTO t VALUES (" + std::to_string(i) + ")");
  RecordingEmitter out;
  out.room = 10;
  // Longer than the server's wal_sender_timeout (3s): only status updates keep us connected.
  auto until = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < until) {
    auto polled = source.poll(out, Clock::now() + std::chrono::milliseconds(100));
    ASSERT_TRUE(polled) << polled.error().message;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(out.events.size(), 10u);
  EXPECT_TRUE(source.connected());
  out.room.reset();
  ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 11; }));
  EXPECT_EQ(out.changes().size(), 60u);
  EXPECT_EQ(server_->log().find("terminating walsender process due to replication timeout"),
            std::string::npos);
}

TEST_F(PostgresSourceTest, ServerRestartDuringStreamingLosesNothing) {
  sql("CREATE TABLE t (id int PRIMARY KEY)");
  prometheus::Registry registry;
  // Counted, not sampled: a reconnect can happen inside one poll(), between two looks at
  // connected().
  auto& reconnects = prometheus::BuildCounter().Name("reconnects").Register(registry).Add({});
  SourceMetrics metrics;
  metrics.reconnects = &reconnects;
  auto& source = make_source(options(), nullptr, metrics);
  ASSERT_TRUE(source.start(StartPosition{}));
  std::atomic<bool> stop{false};
  std::atomic<int> inserted{0};
  std::thread writer([&] {
    std::unique_ptr<PgSession> session;
    int next = 1;
    while (!stop) {
      try {
        if (!session || !session->ok()) session = std::make_unique<PgSession>(server_->dsn(db_));
        session->execute("INSERT INTO t VALUES (" + std::to_string(next) + ")");
        ++next;
        ++inserted;
      } catch (const std::exception&) {
        // The server is restarting. A commit cut short may or may not have happened; the final
        // comparison is against the table itself.
        session.reset();
        ++next;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  });
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() >= 100; }));
  server_->restart();
  const int inserted_before = inserted;
  ASSERT_TRUE(poll_until(
      source, out,
      [&] {
        return inserted > inserted_before + 200 && reconnects.Value() >= 1 && source.connected();
      },
      std::chrono::seconds(60)));
  stop = true;
  writer.join();
  sql("CREATE TABLE marker (id int PRIMARY KEY); INSERT INTO marker VALUES (1)");
  ASSERT_TRUE(poll_until(
      source, out, [&] { return !out.changes_of("public.marker").empty(); },
      std::chrono::seconds(60)));
  std::map<int, int> delivered;
  for (const auto& change : out.changes_of("public.t")) delivered[parse(change.key)["id"]]++;
  std::size_t rows = 0;
  for (const auto& row : server_->query("SELECT id FROM t ORDER BY id", db_)) {
    ++rows;
    EXPECT_EQ(delivered[std::stoi(*row[0])], 1) << "row " << *row[0];
  }
  EXPECT_EQ(delivered.size(), rows);
  // Transactions stay in commit order across the reconnect.
  auto ends = out.ends();
  for (std::size_t i = 1; i < ends.size(); ++i) ASSERT_GT(ends[i].lsn, ends[i - 1].lsn);
}

TEST_F(PostgresSourceTest, InitialSnapshotWhileWritesContinueEqualsTheTable) {
  sql("CREATE TABLE t (id int PRIMARY KEY, v int, s text);"
      "INSERT INTO t SELECT i, 0, 'initial' FROM generate_series(1, 20000) i;"
      "CREATE TABLE other (k text PRIMARY KEY); INSERT INTO other VALUES ('x')");
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    PgSession session(server_->dsn(db_));
    int i = 0;
    while (!stop) {
      ++i;
      int id = (i * 7919) % 25000 + 1;
      session.execute("BEGIN; INSERT INTO t VALUES (" + std::to_string(id) + ", " +
                      std::to_string(i) +
                      ", 'w') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, s = 'u'; "
                      "DELETE FROM t WHERE id = " +
                      std::to_string((i * 31) % 25000 + 1) + "; COMMIT");
    }
  });
  auto registry = std::make_shared<prometheus::Registry>();
  auto opts = options();
  opts.initial_snapshot = true;
  opts.tables = {"public.t", "other"};
  auto& source = make_source(opts, registry);
  ASSERT_TRUE(source.start(StartPosition{}));
  RecordingEmitter out;
  std::optional<std::uint64_t> snapshot_lsn;
  ASSERT_TRUE(poll_until(
      source, out,
      [&] {
        if (!out.ends().empty()) snapshot_lsn = out.ends()[0].lsn;
        return out.ends().size() >= 20;
      },
      std::chrono::seconds(60)));
  stop = true;
  writer.join();
  sql("INSERT INTO other VALUES ('done')");
  ASSERT_TRUE(poll_until(
      source, out,
      [&] {
        for (const auto& change : out.changes_of("public.other")) {
          if (change.operation == Operation::kInsert) return true;
        }
        return false;
      },
      std::chrono::seconds(60)));

  std::map<int, json> state;
  std::size_t snapshot_rows = 0;
  for (const auto& change : out.changes_of("public.t")) {
    int id = parse(change.key)["id"];
    if (change.operation == Operation::kRead) {
      ++snapshot_rows;
      EXPECT_EQ(change.lsn, *snapshot_lsn);
    } else {
      EXPECT_GT(change.lsn, *snapshot_lsn);
    }
    if (change.operation == Operation::kDelete) {
      state.erase(id);
    } else {
      state[id] = parse(change.new_row);
    }
  }
  EXPECT_GT(snapshot_rows, 15000u);
  std::map<int, json> table;
  for (const auto& row : server_->query("SELECT id, v, s FROM t", db_)) {
    int id = std::stoi(*row[0]);
    table[id] = json({{"id", id}, {"v", std::stoi(*row[1])}, {"s", *row[2]}});
  }
  EXPECT_EQ(state.size(), table.size());
  EXPECT_TRUE(state == table);
  auto others = out.changes_of("public.other");
  ASSERT_GE(others.size(), 1u);
  EXPECT_EQ(others[0].operation, Operation::kRead);
  EXPECT_EQ(parse(others[0].key), json({{"k", "x"}}));
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, registry->Collect());
  EXPECT_NE(text.str().find("cdcd_postgres_snapshot_rows_total{source=\"pg\",table=\"public.t\"}"),
            std::string::npos);
}

TEST_F(PostgresSourceTest, InterruptedSnapshotIsTakenAgainOnRestart) {
  sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)");
  auto opts = options();
  opts.initial_snapshot = true;
  {
    auto& source = start_source(opts);
    RecordingEmitter out;
    out.room = 10;
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(source.poll(out, Clock::now() + std::chrono::milliseconds(50)));
    EXPECT_TRUE(out.ends().empty());
    source.stop();
  }
  sql("INSERT INTO t VALUES (101)");
  // No consumer checkpointed the snapshot: the slot is remade and the snapshot taken again.
  auto& source = start_source(opts, 0);
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(source, out, [&] { return !out.ends().empty(); }));
  auto changes = out.changes();
  EXPECT_EQ(changes.size(), 101u);
  for (const auto& change : changes) EXPECT_EQ(change.operation, Operation::kRead);
}

// --- The slot and the consumers' positions ------------------------------------------------

ConsumerStart with_checkpoint(const std::string& name, std::uint64_t lsn,
                              std::int64_t commit_time_us = 0) {
  return ConsumerStart{name, lsn + 1, 0, Checkpoint{lsn, 0, commit_time_us, 0, 0}};
}

StartPosition position_of(std::vector<ConsumerStart> consumers) {
  StartPosition from;
  from.first_lsn = ~0ull;
  for (const auto& consumer : consumers)
    from.first_lsn = std::min(from.first_lsn, consumer.first_lsn);
  from.consumers = std::move(consumers);
  return from;
}

TEST_F(PostgresSourceTest, CheckpointBehindTheSlotIsAnErrorNamingTheConsumer) {
  sql("CREATE TABLE t (id int PRIMARY KEY)");
  std::vector<TransactionEnd> ends;
  {
    auto& source = start_source(options());
    for (int i = 1; i <= 3; ++i) sql("INSERT INTO t VALUES (" + std::to_string(i) + ")");
    RecordingEmitter out;
    ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 3; }));
    ends = out.ends();
    source.commit(ends[1].lsn);
    ASSERT_TRUE(poll_until(source, out, [&] { return confirmed_flush() == ends[1].lsn; }));
    source.stop();
  }
  // A restored checkpoint store: consumer a's checkpoint precedes what the slot holds.
  auto& behind = make_source(options());
  auto started = behind.start(
      position_of({with_checkpoint("a", ends[0].lsn), with_checkpoint("b", ends[2].lsn)}));
  ASSERT_FALSE(started.has_value());
  EXPECT_FALSE(started.error().retryable);
  EXPECT_NE(started.error().message.find("consumer a resumes after its checkpoint"),
            std::string::npos)
      << started.error().message;
  EXPECT_EQ(started.error().message.find("consumer b"), std::string::npos)
      << started.error().message;
  behind.stop();
  EXPECT_EQ(confirmed_flush(), ends[1].lsn);
  // At the slot's position it streams what follows.
  auto& resumed = make_source(options());
  ASSERT_TRUE(resumed.start(position_of({with_checkpoint("a", ends[1].lsn)})));
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(resumed, out, [&] { return out.ends().size() == 1; }));
  EXPECT_EQ(out.ends()[0].lsn, ends[2].lsn);
}

TEST_F(PostgresSourceTest, ConsumerWithoutTheSnapshotNeverCostsTheSlot) {
  sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3)");
  auto opts = options();
  opts.initial_snapshot = true;
  std::uint64_t snapshot_lsn = 0;
  {
    auto& source = start_source(opts);
    RecordingEmitter out;
    ASSERT_TRUE(poll_until(source, out, [&] { return out.ends().size() == 1; }));
    // The snapshot sorts just before the slot's position: checkpointing it leaves the slot there.
    snapshot_lsn = out.ends()[0].lsn;
    EXPECT_EQ(confirmed_flush(), snapshot_lsn + 1);
    source.stop();
  }
  sql("DELETE FROM t WHERE id = 2");
  auto& added = make_source(opts);
  auto started =
      added.start(position_of({with_checkpoint("a", snapshot_lsn), ConsumerStart{"b", 0, 0, {}}}));
  ASSERT_FALSE(started.has_value());
  EXPECT_NE(started.error().message.find("consumer b has no checkpoint"), std::string::npos)
      << started.error().message;
  added.stop();
  // The slot was kept: consumer a still gets the delete, and no second snapshot.
  auto& resumed = make_source(opts);
  ASSERT_TRUE(resumed.start(position_of({with_checkpoint("a", snapshot_lsn)})));
  RecordingEmitter out;
  ASSERT_TRUE(poll_until(resumed, out, [&] { return out.ends().size() == 1; }));
  auto changes = out.changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].operation, Operation::kDelete);
  EXPECT_EQ(parse(changes[0].key), json({{"id", 2}}));
}

TEST_F(PostgresSourceTest, InterruptEndsASlotCreationWaitingForATransaction) {
  sql("CREATE TABLE t (id int PRIMARY KEY)");
  // CREATE_REPLICATION_SLOT waits until every transaction running when it began has ended.
  PgSession open_transaction(server_->dsn(db_));
  open_transaction.execute("BEGIN; INSERT INTO t VALUES (1)");
  auto& source = make_source(options());
  std::atomic<bool> returned{false};
  Status started = ok();
  std::thread starter([&] {
    started = source.start(StartPosition{});
    returned = true;
  });
  ASSERT_TRUE(test::wait_until([&] {
    return value(
               "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' AND "
               "state = 'active'") == "1";
  }));
  source.interrupt();
  bool ended = test::wait_until([&] { return returned.load(); }, std::chrono::seconds(5));
  open_transaction.execute("COMMIT");  // lets a start() that ignored the interrupt finish
  starter.join();
  EXPECT_TRUE(ended) << "start() went on after interrupt()";
  EXPECT_FALSE(started.has_value());
  source.stop();
}

// Pure decisions: no server needed.

SlotFacts slot_at(std::uint64_t confirmed, bool initial_snapshot) {
  return SlotFacts{"s", "host=h", true, confirmed, initial_snapshot};
}

TEST(SlotPlanTest, ASlotIsMadeOnlyWhenNoCheckpointDependsOnIt) {
  SlotFacts missing{"s", "host=h", false, 0, true};
  EXPECT_EQ(plan_slot(missing, position_of({ConsumerStart{"a", 0, 0, {}}})), SlotAction::kCreate);
  auto refused = plan_slot(missing, position_of({with_checkpoint("a", 100)}));
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message.find("consumers a have checkpoints"), std::string::npos)
      << refused.error().message;
  // Nobody holds a checkpoint: a new snapshot serves everyone.
  EXPECT_EQ(plan_slot(slot_at(500, true), position_of({ConsumerStart{"a", 0, 0, {}}})),
            SlotAction::kRecreate);
  // ... but never under a checkpoint.
  auto added = plan_slot(slot_at(500, true),
                         position_of({with_checkpoint("a", 499), ConsumerStart{"b", 0, 0, {}}}));
  ASSERT_FALSE(added.has_value());
  EXPECT_NE(added.error().message.find("consumer b has no checkpoint"), std::string::npos);
  EXPECT_NE(added.error().message.find("own source"), std::string::npos);
  EXPECT_NE(added.error().message.find("checkpoint reset --all-consumers"), std::string::npos);
}

TEST(SlotPlanTest, WhatEachKindOfStartNeeds) {
  // Without a snapshot the source begins where the slot is.
  EXPECT_EQ(plan_slot(slot_at(500, false),
                      position_of({with_checkpoint("a", 700), ConsumerStart{"b", 0, 0, {}}})),
            SlotAction::kStream);
  // start: {lsn} below the slot.
  auto lsn = plan_slot(slot_at(500, false), position_of({ConsumerStart{"b", 300, 0, {}}}));
  ASSERT_FALSE(lsn.has_value());
  EXPECT_NE(lsn.error().message.find("consumer b has no checkpoint and starts at lsn 300"),
            std::string::npos)
      << lsn.error().message;
  EXPECT_EQ(plan_slot(slot_at(500, false), position_of({ConsumerStart{"b", 500, 0, {}}})),
            SlotAction::kStream);
  // start: {timestamp}: a checkpoint at the slot's position committed before it shows that the
  // slot holds everything from then on.
  const std::int64_t t = 1763719200000000;
  EXPECT_EQ(plan_slot(slot_at(500, true), position_of({with_checkpoint("a", 499, t - 1),
                                                       ConsumerStart{"c", 0, t, {}}})),
            SlotAction::kStream);
  auto late =
      plan_slot(slot_at(500, true),
                position_of({with_checkpoint("a", 499, t + 1), ConsumerStart{"c", 0, t, {}}}));
  ASSERT_FALSE(late.has_value());
  EXPECT_NE(late.error().message.find("consumer c has no checkpoint and starts at 2025-11-21"),
            std::string::npos)
      << late.error().message;
  // Without consumer details (not the daemon), the position alone.
  StartPosition anonymous;
  anonymous.first_lsn = 400;
  EXPECT_FALSE(plan_slot(slot_at(500, false), anonymous).has_value());
  anonymous.first_lsn = 500;
  EXPECT_EQ(plan_slot(slot_at(500, false), anonymous), SlotAction::kStream);
}

TEST(SlotPlanTest, CommandsFollowTheServerVersion) {
  // `messages` exists from PostgreSQL 14 on; before, the option is an error.
  EXPECT_EQ(start_replication_command("\"s\"", "'\"p\"'", 130000),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0 (proto_version '1', publication_names "
            "'\"p\"')");
  EXPECT_EQ(start_replication_command("\"s\"", "'\"p\"'", 140000),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0 (proto_version '1', publication_names "
            "'\"p\"', messages 'true')");
  // CREATE_REPLICATION_SLOT's parenthesized options exist from PostgreSQL 15 on.
  EXPECT_EQ(create_slot_command("\"s\"", true, 100000),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput EXPORT_SNAPSHOT");
  EXPECT_EQ(create_slot_command("\"s\"", false, 140000),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput NOEXPORT_SNAPSHOT");
  EXPECT_EQ(create_slot_command("\"s\"", true, 150000),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'export')");
}

TEST(LsnTest, DecimalAndPostgresForms) {
  EXPECT_EQ(parse_lsn("0/16B3748"), 0x16B3748u);
  EXPECT_EQ(parse_lsn("16/B374D848"), 0x16B374D848u);
  EXPECT_EQ(parse_lsn("23803720"), 23803720u);
  EXPECT_EQ(parse_lsn(""), std::nullopt);
  EXPECT_EQ(parse_lsn("0/"), std::nullopt);
  EXPECT_EQ(parse_lsn("1/2/3"), std::nullopt);
  EXPECT_EQ(parse_lsn("12x"), std::nullopt);
  EXPECT_EQ(parse_lsn("100000000/0"), std::nullopt);
  EXPECT_EQ(format_pg_lsn(0x16B374D848u), "16/B374D848");
  EXPECT_EQ(describe_pg_lsn(23803720), "23803720 (0/16B3748)");
}

// --- Misconfiguration: clear, permanent errors ----------------------------------------------

Error start_error(PostgresSource& source) {
  auto started = source.start(StartPosition{});
  if (started) return Error{"started", true};
  return started.error();
}

TEST_F(PostgresSourceTest, UnknownTableIsAPermanentError) {
  sql("CREATE TABLE known (id int PRIMARY KEY)");
  auto opts = options();
  opts.tables = {"public.known", "public.missing"};
  auto error = start_error(make_source(opts));
  EXPECT_FALSE(error.retryable);
  EXPECT_NE(error.message.find("unknown table \"public.missing\""), std::string::npos)
      << error.message;
}

TEST_F(PostgresSourceTest, RoleWithoutReplicationIsAPermanentError) {
  sql("DO $$ BEGIN CREATE ROLE plain LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  auto opts = options();
  opts.dsn = server_->dsn(db_, "plain");
  auto error = start_error(make_source(opts));
  EXPECT_FALSE(error.retryable);
  EXPECT_NE(error.message.find("lacks the REPLICATION attribute"), std::string::npos)
      << error.message;
}

TEST_F(PostgresSourceTest, SlotInUseByAnotherProcessIsAPermanentError) {
  start_source(options());
  auto error = start_error(make_source(options()));
  EXPECT_FALSE(error.retryable);
  EXPECT_NE(error.message.find("is in use by another process"), std::string::npos) << error.message;
}

TEST_F(PostgresSourceTest, MissingSlotOrPublicationWithoutCreateIsAPermanentError) {
  auto opts = options();
  opts.create_publication = false;
  auto error = start_error(make_source(opts));
  EXPECT_FALSE(error.retryable);
  EXPECT_NE(error.message.find("publication \"pub\" does not exist"), std::string::npos)
      << error.message;
  opts = options();
  opts.create_slot = false;
  error = start_error(make_source(opts));
  EXPECT_FALSE(error.retryable);
  EXPECT_NE(error.message.find("does not exist"), std::string::npos) << error.message;
}

TEST_F(PostgresSourceTest, UnreachableServerIsRetryable) {
  auto opts = options();
  opts.dsn = "host=127.0.0.1 port=" + std::to_string(test::free_port()) +
             " dbname=x user=postgres password=secret-word connect_timeout=2";
  auto error = start_error(make_source(opts));
  EXPECT_TRUE(error.retryable);
  // Where it tried to connect, never the password.
  EXPECT_NE(error.message.find("host=127.0.0.1"), std::string::npos) << error.message;
  EXPECT_EQ(error.message.find("secret-word"), std::string::npos) << error.message;
}

TEST(PostgresWalLevelTest, WalLevelNotLogicalIsAPermanentError) {
  PostgresServer server(test::PostgresServerOptions{"replica", {}});
  PostgresSourceOptions options;
  options.dsn = server.dsn();
  options.slot = "s";
  options.publication = "p";
  SourceContext context{"pg", nullptr, nullptr, {}};
  PostgresSource source(options, context);
  auto error = start_error(source);
  EXPECT_FALSE(error.retryable);
  EXPECT_NE(error.message.find("wal_level is 'replica'"), std::string::npos) << error.message;
}

// --- Config --------------------------------------------------------------------------------

class PostgresConfigTest : public ::testing::Test {
 protected:
  std::unique_ptr<Source> make(const std::string& yaml) {
    PluginRegistry registry;
    register_source_postgres(registry);
    auto context = std::make_shared<config::ParseContext>(config::ParseContext{
        "test.yaml", &diagnostics_, [](const std::string&) { return std::nullopt; }});
    config::Node node(YAML::Load(yaml), "sources.pg", context);
    node.mark_known({"type"});
    return (*registry.source("postgres"))(node, SourceContext{"pg", nullptr, nullptr, {}});
  }
  config::Diagnostics diagnostics_;
};

TEST_F(PostgresConfigTest, ValidOptionsMakeASource) {
  auto source = make(
      "{type: postgres, dsn: 'postgresql://cdc@127.0.0.1:5432/app', slot: cdcd_app, publication: "
      "p, "
      "tables: [public.orders], snapshot: initial, heartbeat: 0s, status_interval: 1s, "
      "max_transaction_bytes: 8MiB, create_slot: false, create_publication: false}");
  EXPECT_NE(source, nullptr);
  EXPECT_TRUE(diagnostics_.empty()) << diagnostics_.to_string();
}

TEST_F(PostgresConfigTest, EveryProblemIsReported) {
  auto source = make(
      "{type: postgres, dsn: 'host=a password=hunter2 = =', slot: Bad-Name, snapshot: sometimes, "
      "status_intervall: 1s}");
  EXPECT_EQ(source, nullptr);
  std::string text = diagnostics_.to_string();
  EXPECT_NE(text.find("dsn"), std::string::npos) << text;
  EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
  EXPECT_NE(text.find("slot"), std::string::npos) << text;
  EXPECT_NE(text.find("publication"), std::string::npos) << text;
  EXPECT_NE(text.find("snapshot"), std::string::npos) << text;
  EXPECT_NE(text.find("status_interval"), std::string::npos) << text;
}

}  // namespace
}  // namespace cdcd::postgres
