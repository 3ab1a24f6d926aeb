// The cdcd daemon with a postgres source against a real PostgreSQL 15: killed at random moments
// under a write load, restarted from its checkpoints, and compared with the tables afterwards.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "daemon/core/lsn.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/postgres_server.h"
#include "tests/support/test_util.h"

namespace cdcd {
namespace {

using nlohmann::json;
using test::ChildProcess;
using test::PgSession;
using test::PostgresServer;
using test::TempDir;

struct Event {
  std::uint64_t lsn = 0;
  std::uint32_t seq = 0;
  json line;
};

// The file sink's native lines, once each by (lsn, seq), in log order. Redelivered transactions
// (at-least-once after a crash) collapse onto their first copy.
std::vector<Event> read_events(const std::string& path, std::size_t* duplicates = nullptr) {
  std::map<std::pair<std::uint64_t, std::uint32_t>, json> unique;
  std::size_t repeated = 0;
  for (const auto& text : test::read_lines(path)) {
    json line = json::parse(text);
    auto id = std::make_pair(line["lsn"].get<std::uint64_t>(), line.value("seq", 0u));
    if (!unique.emplace(id, std::move(line)).second) ++repeated;
  }
  if (duplicates) *duplicates = repeated;
  std::vector<Event> events;
  for (auto& [id, line] : unique) events.push_back(Event{id.first, id.second, std::move(line)});
  return events;
}

bool has_insert(const std::string& path, const std::string& entity) {
  for (const auto& text : test::read_lines(path)) {
    if (text.find("\"" + entity + "\"") != std::string::npos &&
        text.find("\"insert\"") != std::string::npos) {
      return true;
    }
  }
  return false;
}

class PostgresDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = server_.create_database();
    config_ = dir_.file("cdcd.yaml");
    output_ = dir_.file("out.jsonl");
  }
  void TearDown() override { server_.drop_database(db_); }

  void write_config(const std::string& source_extra) {
    write_config_with_consumers(source_extra, {"all"});
  }

  // One file sink per consumer (out.jsonl for "all", NAME.jsonl otherwise), file checkpoints.
  // `options`: extra flow-map entries of a consumer, e.g. {"b", "entities: [public.t]"}; without
  // `batch:` among them, batches of 500 changes or 20 ms.
  void write_config_with_consumers(const std::string& source_extra,
                                   const std::vector<std::string>& consumers,
                                   const std::map<std::string, std::string>& options = {}) {
    std::string sinks = "sinks:\n";
    std::string consumer_map = "consumers:\n";
    for (const auto& name : consumers) {
      sinks += "  " + name + ": {type: file, path: " + output_of(name) +
               ", format: native, fsync: never}\n";
      auto extra = options.find(name);
      std::string settings = extra == options.end() ? "" : extra->second;
      if (settings.find("batch:") == std::string::npos) {
        settings +=
            std::string(settings.empty() ? "" : ", ") + "batch: {max_events: 500, max_wait: 20ms}";
      }
      consumer_map += "  " + name + ": {source: pg, sinks: [" + name + "], " + settings + "}\n";
    }
    test::write_file(config_, "sources:\n  pg:\n    type: postgres\n    dsn: \"" +
                                  server_.dsn(db_) +
                                  "\"\n    slot: cdcd_test\n    publication: cdcd_test\n"
                                  "    status_interval: 200ms\n    heartbeat: 500ms\n" +
                                  source_extra + sinks +
                                  "checkpoints: {type: file, dir: " + dir_.file("checkpoints") +
                                  ", interval: 200ms}\n" + consumer_map + "log: {level: info}\n");
  }

  std::string output_of(const std::string& consumer) const {
    return consumer == "all" ? output_ : dir_.file(consumer + ".jsonl");
  }
  std::string checkpoint_of(const std::string& consumer) const {
    return dir_.file("checkpoints/" + consumer + ".json");
  }

  std::unique_ptr<ChildProcess> start_daemon() {
    return std::make_unique<ChildProcess>(
        std::vector<std::string>{test::cdcd_binary(), "run", "--config", config_}, dir_.path());
  }

  void sql(const std::string& statement) { server_.execute(statement, db_); }

  // Replays what the sink at `path` received, in log order, and compares it with the tables.
  void expect_replay_equals_tables(const std::string& path, bool with_history) {
    // Replay what the sink received, in log order, and compare with the tables.
    std::map<int, json> accounts;
    std::map<int, int> base_changes;     // `changes` of the last snapshot row or insert of the row
    std::map<int, int> counted_updates;  // updates delivered since then
    std::set<long> history;
    for (const auto& event : read_events(path)) {
      const json& line = event.line;
      const std::string entity = line["entity"];
      const std::string op = line["operation"];
      if (entity == "public.accounts") {
        int id = line["key"]["id"];
        if (op == "delete") {
          accounts.erase(id);
        } else if (op == "update") {
          ++counted_updates[id];
          accounts[id] = line["new"];
        } else {
          base_changes[id] = line["new"]["changes"];
          counted_updates[id] = 0;
          accounts[id] = line["new"];
        }
      } else if (entity == "public.history") {
        history.insert(line["key"]["id"].get<long>());
      }
    }
    std::size_t rows = 0;
    for (const auto& row : server_.query("SELECT id, balance, changes FROM accounts", db_)) {
      ++rows;
      int id = std::stoi(*row[0]);
      ASSERT_TRUE(accounts.count(id)) << "account " << id << " missing from the sink";
      EXPECT_EQ(accounts[id]["balance"].get<int>(), std::stoi(*row[1])) << "account " << id;
      EXPECT_EQ(accounts[id]["changes"].get<int>(), std::stoi(*row[2])) << "account " << id;
      // Every committed update of the row was delivered: none skipped between base and now.
      EXPECT_EQ(base_changes[id] + counted_updates[id], std::stoi(*row[2])) << "account " << id;
    }
    EXPECT_EQ(accounts.size(), rows);
    if (!with_history) {
      EXPECT_TRUE(history.empty());
      return;
    }
    auto history_rows = server_.query("SELECT id FROM history", db_);
    EXPECT_EQ(history.size(), history_rows.size());
    for (const auto& row : history_rows) EXPECT_TRUE(history.count(std::stol(*row[0]))) << *row[0];
  }

  PostgresServer server_;
  TempDir dir_;
  std::string db_;
  std::string config_;
  std::string output_;
};

// pgbench-like transactions: move an amount between accounts, each update counted in the row's
// own `changes` column, and log it in history; sometimes open or close an account.
void write_load(const std::string& dsn, int worker, std::atomic<bool>& stop,
                std::atomic<int>& committed) {
  std::mt19937 random(worker * 7919 + 1);
  std::unique_ptr<PgSession> session;
  int next_account = 100000 * (worker + 1);
  while (!stop) {
    int from = static_cast<int>(random() % 1000) + 1;
    int to = static_cast<int>(random() % 1000) + 1;
    int amount = static_cast<int>(random() % 100) + 1;
    std::string txn = "BEGIN; UPDATE accounts SET balance = balance - " + std::to_string(amount) +
                      ", changes = changes + 1 WHERE id = " + std::to_string(from) +
                      "; UPDATE accounts SET balance = balance + " + std::to_string(amount) +
                      ", changes = changes + 1 WHERE id = " + std::to_string(to) +
                      "; INSERT INTO history (from_id, to_id, amount) VALUES (" +
                      std::to_string(from) + ", " + std::to_string(to) + ", " +
                      std::to_string(amount) + ");";
    if (random() % 20 == 0) {
      ++next_account;
      txn += "INSERT INTO accounts (id, balance) VALUES (" + std::to_string(next_account) +
             ", 0); DELETE FROM accounts WHERE id = " + std::to_string(next_account - 1) +
             " AND id > 100000;";
    }
    txn += "COMMIT";
    try {
      if (!session) session = std::make_unique<PgSession>(dsn);
      session->execute(txn);
      ++committed;
    } catch (const std::exception&) {
      session.reset();
    }
    // About 300 transactions/s per worker: a steady load the test can catch up with.
    std::this_thread::sleep_for(std::chrono::microseconds(3000));
  }
}

TEST_F(PostgresDaemonTest, KilledAtRandomMomentsUnderLoadDeliversEveryCommittedChange) {
  sql("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL, changes int NOT NULL "
      "DEFAULT 0);"
      "INSERT INTO accounts (id, balance) SELECT i, 1000 FROM generate_series(1, 1000) i;"
      "CREATE TABLE history (id bigserial PRIMARY KEY, from_id int, to_id int, amount int);"
      "CREATE TABLE marker (id int PRIMARY KEY)");
  write_config("    snapshot: initial\n");
  std::atomic<bool> stop{false};
  std::atomic<int> committed{0};
  std::vector<std::thread> writers;
  for (int worker = 0; worker < 2; ++worker) {
    writers.emplace_back(write_load, server_.dsn(db_), worker, std::ref(stop), std::ref(committed));
  }

  std::mt19937 random(std::random_device{}());
  const int kKills = 6;
  for (int kill = 0; kill < kKills; ++kill) {
    auto daemon = start_daemon();
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + random() % 2200));
    ASSERT_TRUE(daemon->running()) << daemon->stderr_text() << daemon->stdout_text();
    daemon->signal(SIGKILL);
    ASSERT_EQ(daemon->wait(std::chrono::seconds(10)), 128 + SIGKILL);
  }
  auto daemon = start_daemon();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  stop = true;
  for (auto& writer : writers) writer.join();
  EXPECT_GT(committed.load(), 500);
  sql("INSERT INTO marker VALUES (1)");
  ASSERT_TRUE(test::wait_until([&] { return has_insert(output_, "public.marker"); },
                               std::chrono::seconds(120)))
      << daemon->stdout_text() << daemon->stderr_text();
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(std::chrono::seconds(40)), 0) << daemon->stdout_text();

  expect_replay_equals_tables(output_, /*with_history=*/true);
}

// Two consumers of one slot, one filtering, each checkpointing on its own schedule: killed under
// load at moments where their checkpoints differ, each still gets every change it wants.
TEST_F(PostgresDaemonTest, TwoConsumersAtDifferentPositionsSurviveKills) {
  sql("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL, changes int NOT NULL "
      "DEFAULT 0);"
      "INSERT INTO accounts (id, balance) SELECT i, 1000 FROM generate_series(1, 1000) i;"
      "CREATE TABLE history (id bigserial PRIMARY KEY, from_id int, to_id int, amount int);"
      "CREATE TABLE marker (id int PRIMARY KEY)");
  write_config_with_consumers(
      "    snapshot: initial\n", {"all", "b"},
      {{"b",
        "entities: [public.accounts, public.marker], batch: {max_events: 50, "
        "max_wait: 300ms}"}});
  std::atomic<bool> stop{false};
  std::atomic<int> committed{0};
  std::thread writer(write_load, server_.dsn(db_), 0, std::ref(stop), std::ref(committed));
  // A failed assertion returns early: the writer must not outlive the test.
  std::unique_ptr<std::thread, std::function<void(std::thread*)>> joined(&writer,
                                                                         [&](std::thread* thread) {
                                                                           stop = true;
                                                                           if (thread->joinable())
                                                                             thread->join();
                                                                         });
  // Both hold a checkpoint before the first kill (one without would need the snapshot again).
  auto daemon = start_daemon();
  ASSERT_TRUE(test::wait_until(
      [&] {
        return test::read_checkpoint_file(checkpoint_of("all")) &&
               test::read_checkpoint_file(checkpoint_of("b"));
      },
      std::chrono::seconds(60)))
      << daemon->stderr_text();
  std::mt19937 random(std::random_device{}());
  std::size_t differing = 0;
  for (int kill = 0; kill < 4; ++kill) {
    if (kill > 0) daemon = start_daemon();
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + random() % 1500));
    ASSERT_TRUE(daemon->running()) << daemon->stderr_text() << daemon->stdout_text();
    daemon->signal(SIGKILL);
    ASSERT_EQ(daemon->wait(std::chrono::seconds(10)), 128 + SIGKILL);
    if (test::read_checkpoint_file(checkpoint_of("all"))->lsn !=
        test::read_checkpoint_file(checkpoint_of("b"))->lsn) {
      ++differing;
    }
  }
  daemon = start_daemon();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  joined.reset();
  sql("INSERT INTO marker VALUES (1)");
  for (const auto& name : {"all", "b"}) {
    ASSERT_TRUE(test::wait_until([&] { return has_insert(output_of(name), "public.marker"); },
                                 std::chrono::seconds(120)))
        << name << daemon->stdout_text() << daemon->stderr_text();
  }
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(std::chrono::seconds(40)), 0) << daemon->stdout_text();
  std::cout << differing << " of 4 kills left the consumers at different positions\n";
  expect_replay_equals_tables(output_of("all"), /*with_history=*/true);
  expect_replay_equals_tables(output_of("b"), /*with_history=*/false);
}

TEST_F(PostgresDaemonTest, CleanRestartResumesFromTheCheckpointWithoutRedelivery) {
  sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  write_config("");
  auto daemon = start_daemon();
  // The slot exists once the source is streaming; changes from then on are captured.
  ASSERT_TRUE(test::wait_until([&] {
    return server_.query_value("SELECT count(*) FROM pg_replication_slots WHERE active") == "1";
  }));
  sql("INSERT INTO t SELECT i, 'first' FROM generate_series(1, 500) i");
  for (int i = 501; i <= 600; ++i) sql("INSERT INTO t VALUES (" + std::to_string(i) + ", 'x')");
  ASSERT_TRUE(test::wait_until([&] { return test::read_lines(output_).size() == 600; }))
      << test::read_lines(output_).size();
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(std::chrono::seconds(40)), 0);

  sql("UPDATE t SET v = 'second' WHERE id <= 100");
  daemon = start_daemon();
  ASSERT_TRUE(test::wait_until([&] { return test::read_lines(output_).size() >= 700; }));
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(std::chrono::seconds(40)), 0);
  std::size_t duplicates = 0;
  auto events = read_events(output_, &duplicates);
  EXPECT_EQ(duplicates, 0u);
  EXPECT_EQ(events.size(), 700u);
  EXPECT_EQ(test::read_lines(output_).size(), 700u);
}

std::size_t count_operation(const std::vector<Event>& events, const std::string& operation) {
  return std::count_if(events.begin(), events.end(),
                       [&](const Event& event) { return event.line["operation"] == operation; });
}

bool has_delete(const std::string& path, int id) {
  for (const auto& event : read_events(path)) {
    if (event.line["operation"] == "delete" && event.line["key"]["id"] == id) return true;
  }
  return false;
}

// The initial snapshot is taken once per slot. A consumer added later cannot have it: the source
// refuses to start and names it, instead of dropping the slot that the other consumer's checkpoint
// depends on for a new snapshot (which cost that consumer every delete committed in between).
TEST_F(PostgresDaemonTest, ConsumerAddedLaterNeverCostsTheOthersAChange) {
  sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3)");
  write_config_with_consumers("    snapshot: initial\n", {"a"});
  auto daemon = start_daemon();
  ASSERT_TRUE(test::wait_until([&] { return read_events(output_of("a")).size() == 3; }))
      << daemon->stderr_text() << daemon->stdout_text();
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(std::chrono::seconds(40)), 0);
  ASSERT_TRUE(test::read_checkpoint_file(checkpoint_of("a")).has_value());

  sql("DELETE FROM t WHERE id = 2");
  write_config_with_consumers("    snapshot: initial\n", {"a", "b"});
  daemon = start_daemon();
  auto code = daemon->wait(std::chrono::seconds(60));
  ASSERT_TRUE(code.has_value()) << "the daemon went on with consumer b";
  EXPECT_EQ(*code, 1);
  std::string output = daemon->stdout_text() + daemon->stderr_text();
  EXPECT_NE(output.find("consumer b has no checkpoint"), std::string::npos) << output;
  EXPECT_NE(output.find("own source"), std::string::npos) << output;

  // Consumer a kept its place: without b it gets the delete, and no second snapshot.
  write_config_with_consumers("    snapshot: initial\n", {"a"});
  daemon = start_daemon();
  ASSERT_TRUE(test::wait_until([&] { return has_delete(output_of("a"), 2); }))
      << daemon->stdout_text() << daemon->stderr_text();
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(std::chrono::seconds(40)), 0);
  auto events = read_events(output_of("a"));
  EXPECT_EQ(count_operation(events, "read"), 3u);
  EXPECT_EQ(count_operation(events, "delete"), 1u);
}

// Checkpoints kept in the captured database (a publication FOR ALL TABLES): the store's own
// writes never reach the consumer, and a save is never a change that causes another save.
TEST_F(PostgresDaemonTest, CheckpointStoreInTheCapturedDatabaseIsNotCaptured) {
  sql("CREATE TABLE t (id int PRIMARY KEY)");
  write_config("");
  std::string config = test::read_file(config_);
  auto at = config.find("checkpoints: {type: file");
  config.replace(
      at, config.find('\n', at) - at,
      "checkpoints: {type: postgres, dsn: \"" + server_.dsn(db_) + "\", interval: 100ms}");
  // No heartbeats: every checkpoint moves because of a change of the test.
  at = config.find("heartbeat: 500ms");
  config.replace(at, std::string("heartbeat: 500ms").size(), "heartbeat: 0s");
  test::write_file(config_, config);
  auto daemon = start_daemon();
  ASSERT_TRUE(test::wait_until([&] {
    return server_.query_value("SELECT count(*) FROM pg_replication_slots WHERE active") == "1";
  })) << daemon->stderr_text()
      << daemon->stdout_text();
  auto saved_lsn = [&] {
    return std::stoull(
        server_.query_value("SELECT coalesce(max(lsn), 0)::text FROM cdcd_checkpoints", db_)
            .value_or("0"));
  };
  sql("INSERT INTO t VALUES (1)");
  ASSERT_TRUE(test::wait_until([&] { return test::read_lines(output_).size() >= 1; }))
      << daemon->stderr_text() << daemon->stdout_text();
  const auto first_lsn = read_events(output_)[0].lsn;
  ASSERT_TRUE(test::wait_until([&] { return saved_lsn() == first_lsn; }));
  // The save above committed before this insert: a change of it would arrive first.
  sql("INSERT INTO t VALUES (2)");
  ASSERT_TRUE(test::wait_until([&] { return test::read_lines(output_).size() >= 2; }));
  const auto second_lsn = read_events(output_).back().lsn;
  ASSERT_TRUE(test::wait_until([&] { return saved_lsn() == second_lsn; }));
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(std::chrono::seconds(40)), 0) << daemon->stdout_text();
  auto events = read_events(output_);
  ASSERT_EQ(events.size(), 2u) << test::read_file(output_);
  EXPECT_EQ(events[0].line["entity"], "public.t");
  EXPECT_EQ(events[1].line["entity"], "public.t");
  // The last save is of the last change: the store's own transactions are not checkpointed.
  EXPECT_EQ(saved_lsn(), second_lsn);
}

// `checkpoint set --timestamp` and `reset` would need changes the slot no longer holds.
TEST_F(PostgresDaemonTest, CheckpointCommandsThatRewindAreRefused) {
  sql("CREATE TABLE t (id int PRIMARY KEY)");
  write_config_with_consumers("", {"a", "b"});
  auto daemon = start_daemon();
  ASSERT_TRUE(test::wait_until([&] {
    return server_.query_value("SELECT count(*) FROM pg_replication_slots WHERE active") == "1";
  }));
  sql("INSERT INTO t VALUES (1)");
  ASSERT_TRUE(test::wait_until([&] {
    auto a = test::read_checkpoint_file(checkpoint_of("a"));
    auto b = test::read_checkpoint_file(checkpoint_of("b"));
    return a && b && a->lsn > 0 && b->lsn == a->lsn && !read_events(output_of("a")).empty() &&
           a->lsn >= read_events(output_of("a"))[0].lsn;
  }));
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(std::chrono::seconds(40)), 0);
  const auto saved = std::min(test::read_checkpoint_file(checkpoint_of("a"))->lsn,
                              test::read_checkpoint_file(checkpoint_of("b"))->lsn);
  auto checkpoint = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{"checkpoint"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--config", config_});
    return test::run_cdcd(argv);
  };

  auto by_time = checkpoint({"set", "--consumer", "a", "--timestamp", "2020-01-01T00:00:00Z"});
  EXPECT_EQ(by_time.exit_code, 2) << by_time.out << by_time.err;
  EXPECT_NE(by_time.err.find("cannot rewind"), std::string::npos) << by_time.err;
  auto alone = checkpoint({"reset", "--consumer", "a"});
  EXPECT_EQ(alone.exit_code, 2) << alone.out << alone.err;
  EXPECT_NE(alone.err.find("reset --all-consumers"), std::string::npos) << alone.err;
  const auto before = test::read_checkpoint_file(checkpoint_of("a"))->lsn;
  auto back = checkpoint({"set", "--consumer", "a", "--lsn", std::to_string(saved - 1)});
  EXPECT_EQ(back.exit_code, 2) << back.out << back.err;
  ASSERT_EQ(test::read_checkpoint_file(checkpoint_of("a"))->lsn, before);

  // Skipping ahead is allowed, in PostgreSQL's form too.
  auto ahead = checkpoint({"set", "--consumer", "b", "--lsn", format_pg_lsn(saved + 1)});
  EXPECT_EQ(ahead.exit_code, 0) << ahead.out << ahead.err;
  EXPECT_EQ(test::read_checkpoint_file(checkpoint_of("b"))->lsn, saved + 1);
  // Every consumer together starts over.
  auto all = checkpoint({"reset", "--all-consumers", "--consumer", "a"});
  EXPECT_EQ(all.exit_code, 0) << all.out << all.err;
  EXPECT_FALSE(test::read_checkpoint_file(checkpoint_of("a")).has_value());
  EXPECT_FALSE(test::read_checkpoint_file(checkpoint_of("b")).has_value());
}

TEST_F(PostgresDaemonTest, MisconfigurationStopsTheDaemonWithAClearError) {
  write_config("    tables: [public.does_not_exist]\n");
  auto daemon = start_daemon();
  auto code = daemon->wait(std::chrono::seconds(60));
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  std::string output = daemon->stdout_text() + daemon->stderr_text();
  EXPECT_NE(output.find("unknown table \"public.does_not_exist\""), std::string::npos) << output;
}

}  // namespace
}  // namespace cdcd
