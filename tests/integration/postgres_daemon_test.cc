// The cdcd daemon with a postgres source against a real PostgreSQL 15: killed at random moments
// under a write load, restarted from its checkpoints, and compared with the tables afterwards.
#include <signal.h>

#include <atomic>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

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
    test::write_file(config_, "sources:\n  pg:\n    type: postgres\n    dsn: \"" +
                                  server_.dsn(db_) +
                                  "\"\n    slot: cdcd_test\n    publication: cdcd_test\n"
                                  "    status_interval: 200ms\n    heartbeat: 500ms\n" +
                                  source_extra + "sinks:\n  out: {type: file, path: " + output_ +
                                  ", format: native, fsync: never}\n"
                                  "checkpoints: {type: file, dir: " +
                                  dir_.file("checkpoints") +
                                  ", interval: 200ms}\n"
                                  "consumers:\n  all: {source: pg, sinks: [out], batch: "
                                  "{max_events: 500, max_wait: 20ms}}\n"
                                  "log: {level: info}\n");
  }

  std::unique_ptr<ChildProcess> start_daemon() {
    return std::make_unique<ChildProcess>(
        std::vector<std::string>{test::cdcd_binary(), "run", "--config", config_}, dir_.path());
  }

  void sql(const std::string& statement) { server_.execute(statement, db_); }

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

  // Replay what the sink received, in log order, and compare with the tables.
  std::map<int, json> accounts;
  std::map<int, int> base_changes;     // `changes` of the last snapshot row or insert of the row
  std::map<int, int> counted_updates;  // updates delivered since then
  std::set<long> history;
  for (const auto& event : read_events(output_)) {
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
  auto history_rows = server_.query("SELECT id FROM history", db_);
  EXPECT_EQ(history.size(), history_rows.size());
  for (const auto& row : history_rows) EXPECT_TRUE(history.count(std::stol(*row[0]))) << *row[0];
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
