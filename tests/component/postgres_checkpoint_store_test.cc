// The postgres checkpoint store against a real PostgreSQL 15 started by the test.
#include <thread>

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "checkpoint/postgres/postgres_checkpoint_store.h"
#include "daemon/config/node.h"
#include "daemon/plugin/registry.h"
#include "tests/support/checkpoint_store_conformance.h"
#include "tests/support/postgres_server.h"

namespace cdcd {
void register_checkpoint_postgres(PluginRegistry& registry);
}

namespace cdcd::postgres {
namespace {

using test::PostgresServer;

class PostgresCheckpointStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new PostgresServer(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { db_ = server_->create_database(); }
  void TearDown() override { server_->drop_database(db_); }

  std::unique_ptr<PostgresCheckpointStore> make(const std::string& table = "cdcd_checkpoints") {
    return std::make_unique<PostgresCheckpointStore>(
        PostgresCheckpointStoreOptions{server_->dsn(db_), table}, CheckpointStoreContext{});
  }

  static PostgresServer* server_;
  std::string db_;
};

PostgresServer* PostgresCheckpointStoreTest::server_ = nullptr;

TEST_F(PostgresCheckpointStoreTest, SaveLoadOverwriteAndRemove) {
  auto store = make();
  ASSERT_TRUE(store->start());
  auto missing = store->load("orders");
  ASSERT_TRUE(missing);
  EXPECT_FALSE(missing->has_value());

  Checkpoint first{1042, 7, 1763719200123456, 1763719201000000};
  ASSERT_TRUE(store->save("orders", first));
  // The largest lsn survives the round trip (numeric column, not bigint).
  Checkpoint second{~0ull, ~0ull - 1, 1763719300000000, 1763719301000000};
  ASSERT_TRUE(store->save("users", second));
  Checkpoint third{2000, 9, 1763719400000000, 1763719401000000};
  ASSERT_TRUE(store->save("orders", third));

  auto loaded = store->load("orders");
  ASSERT_TRUE(loaded && loaded->has_value());
  EXPECT_EQ((*loaded)->lsn, 2000u);
  EXPECT_EQ((*loaded)->offset, 9u);
  EXPECT_EQ((*loaded)->commit_time_us, 1763719400000000);
  EXPECT_EQ((*loaded)->saved_at_us, 1763719401000000);
  auto users = store->load("users");
  ASSERT_TRUE(users && users->has_value());
  EXPECT_EQ((*users)->lsn, ~0ull);
  EXPECT_EQ((*users)->offset, ~0ull - 1);
  EXPECT_EQ(server_->query_value("SELECT count(*) FROM cdcd_checkpoints", db_), "2");

  ASSERT_TRUE(store->remove("orders"));
  auto removed = store->load("orders");
  ASSERT_TRUE(removed);
  EXPECT_FALSE(removed->has_value());
  EXPECT_TRUE(store->remove("never-saved"));

  // A second store (a restarted daemon, once the first is gone) reads what the first one saved.
  store.reset();
  auto reopened = make();
  ASSERT_TRUE(reopened->start());
  auto again = reopened->load("users");
  ASSERT_TRUE(again && again->has_value());
  EXPECT_EQ((*again)->lsn, ~0ull);
}

TEST_F(PostgresCheckpointStoreTest, SchemaQualifiedTableAndOddConsumerNames) {
  server_->execute("CREATE SCHEMA cdc", db_);
  auto store = make("cdc.Positions");
  ASSERT_TRUE(store->start());
  std::string name = "it's \"quoted\"; DROP TABLE x; --";
  ASSERT_TRUE(store->save(name, Checkpoint{5, 0, 1, 2}));
  auto loaded = store->load(name);
  ASSERT_TRUE(loaded && loaded->has_value());
  EXPECT_EQ((*loaded)->lsn, 5u);
  EXPECT_EQ(server_->query_value("SELECT consumer FROM cdc.\"Positions\"", db_), name);
}

TEST_F(PostgresCheckpointStoreTest, ConcurrentSavesFromSeveralThreads) {
  auto store = make();
  ASSERT_TRUE(store->start());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (std::uint64_t lsn = 1; lsn <= 50; ++lsn) {
        ASSERT_TRUE(store->save("consumer" + std::to_string(t), Checkpoint{lsn, 0, 0, 0}));
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) {
    auto loaded = store->load("consumer" + std::to_string(t));
    ASSERT_TRUE(loaded && loaded->has_value());
    EXPECT_EQ((*loaded)->lsn, 50u);
  }
}

TEST_F(PostgresCheckpointStoreTest, ReconnectsAfterTheServerRestarts) {
  auto store = make();
  ASSERT_TRUE(store->start());
  ASSERT_TRUE(store->save("c", Checkpoint{1, 0, 0, 0}));
  server_->restart();
  auto saved = store->save("c", Checkpoint{2, 0, 0, 0});
  ASSERT_TRUE(saved) << saved.error().message;
  auto loaded = store->load("c");
  ASSERT_TRUE(loaded && loaded->has_value());
  EXPECT_EQ((*loaded)->lsn, 2u);
}

TEST_F(PostgresCheckpointStoreTest, ServerDownIsARetryableError) {
  auto store = std::make_unique<PostgresCheckpointStore>(
      PostgresCheckpointStoreOptions{
          "host=127.0.0.1 port=" + std::to_string(test::free_port()) + " dbname=x", "t"},
      CheckpointStoreContext{});
  auto started = store->start();
  ASSERT_FALSE(started);
  EXPECT_TRUE(started.error().retryable);
}

// The session advisory lock goes with the session: when the server ends it, the store takes the
// lock again before its next statement, and while another process holds it, saves fail instead
// of overwriting that process's checkpoints.
TEST_F(PostgresCheckpointStoreTest, TheLockIsTakenAgainAfterAReconnectAndSavesFailWhileHeld) {
  auto first = make();
  ASSERT_TRUE(first->start());
  ASSERT_TRUE(first->save("c", Checkpoint{1, 0, 0, 0}));
  const std::string first_session = "SELECT count(*) FROM pg_stat_activity WHERE datname = '" +
                                    db_ + "' AND application_name LIKE 'cdcd checkpoints%'";
  ASSERT_EQ(server_->query_value(first_session), "1");
  // An administrator (or a failover) ends the first store's session, and with it the lock.
  server_->execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" +
                   db_ + "' AND application_name LIKE 'cdcd checkpoints%'");
  ASSERT_TRUE(test::wait_until([&] { return server_->query_value(first_session) == "0"; }));

  auto second = make();
  ASSERT_TRUE(second->start());
  auto refused = first->save("c", Checkpoint{2, 0, 0, 0});
  ASSERT_FALSE(refused) << "the first store overwrote the checkpoints of the lock's holder";
  EXPECT_NE(refused.error().message.find("in use"), std::string::npos) << refused.error().message;
  ASSERT_TRUE(second->save("c", Checkpoint{3, 0, 0, 0}));

  second.reset();
  auto saved = first->save("c", Checkpoint{4, 0, 0, 0});
  ASSERT_TRUE(saved) << saved.error().message;
  auto loaded = first->load("c");
  ASSERT_TRUE(loaded && loaded->has_value());
  EXPECT_EQ((*loaded)->lsn, 4u);
}

// The shared checkpoint store suite: one server for the suite, a database per test.
test::PostgresServer& conformance_server() {
  static test::PostgresServer* server = nullptr;
  if (server == nullptr) {
    server = new test::PostgresServer();
    struct StopServer : ::testing::Environment {
      void TearDown() override {
        delete server;
        server = nullptr;
      }
    };
    ::testing::AddGlobalTestEnvironment(new StopServer);
  }
  return *server;
}

class PostgresStoreHarness : public test::CheckpointStoreHarness {
 public:
  PostgresStoreHarness() : db_(conformance_server().create_database()) {}
  ~PostgresStoreHarness() override { conformance_server().drop_database(db_); }

  std::unique_ptr<CheckpointStore> make_store() override {
    return std::make_unique<PostgresCheckpointStore>(
        PostgresCheckpointStoreOptions{conformance_server().dsn(db_), "cdcd_checkpoints"},
        CheckpointStoreContext{});
  }

  // A session that dies between its UPSERT and its COMMIT.
  bool leave_an_interrupted_save(const std::string& consumer,
                                 const Checkpoint& checkpoint) override {
    test::PgSession session(conformance_server().dsn(db_));
    session.execute("BEGIN; UPDATE cdcd_checkpoints SET lsn = " + std::to_string(checkpoint.lsn) +
                    ", \"offset\" = " + std::to_string(checkpoint.offset) + " WHERE consumer = '" +
                    consumer + "'");
    return true;
  }

 private:
  std::string db_;
};

const bool kConformanceRegistered = [] {
  test::register_checkpoint_store_conformance("PostgresCheckpointStoreConformance", [] {
    return std::make_unique<PostgresStoreHarness>();
  });
  return true;
}();

TEST(PostgresCheckpointConfigTest, OptionsAreValidated) {
  PluginRegistry registry;
  register_checkpoint_postgres(registry);
  config::Diagnostics diagnostics;
  auto context = std::make_shared<config::ParseContext>(config::ParseContext{
      "test.yaml", &diagnostics, [](const std::string&) { return std::nullopt; }});
  auto make = [&](const std::string& yaml) {
    config::Node node(YAML::Load(yaml), "checkpoints", context);
    node.mark_known({"type"});
    return (*registry.checkpoint_store("postgres"))(node, CheckpointStoreContext{});
  };
  EXPECT_NE(make("{type: postgres, dsn: 'host=db dbname=app', table: cdc.positions, interval: 1s}"),
            nullptr);
  EXPECT_TRUE(diagnostics.empty()) << diagnostics.to_string();
  EXPECT_EQ(make("{type: postgres, table: a.b.c, intervall: 1s}"), nullptr);
  std::string text = diagnostics.to_string();
  EXPECT_NE(text.find("dsn"), std::string::npos) << text;
  EXPECT_NE(text.find("table"), std::string::npos) << text;
  EXPECT_NE(text.find("intervall"), std::string::npos) << text;
}

}  // namespace
}  // namespace cdcd::postgres
