// The postgres checkpoint store against a real PostgreSQL 15 started by the test.
#include <thread>

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "checkpoint/postgres/postgres_checkpoint_store.h"
#include "daemon/config/node.h"
#include "daemon/plugin/registry.h"
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

  // A second store (a restarted daemon) reads what the first one saved.
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
