// The postgres source's WAL budget gauges (sources/postgres/slot_budget.h) against a real
// PostgreSQL 15: the server's max_slot_wal_keep_size, the slot's safe_wal_size shrinking while
// unacknowledged WAL piles up, wal_status, and whether the slot has a reader.
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "sources/postgres/postgres_source.h"
#include "tests/support/postgres_server.h"

namespace cdcd::postgres {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kKeep = 64.0 * 1024 * 1024;  // max_slot_wal_keep_size = 64MB

class NullEmitter : public Emitter {
 public:
  void emit(SourceEvent&&) override {}
  bool wants_more() const override { return true; }
};

// The gauge `name` of source "pg" whose labels include `labels`, from the registry.
std::optional<double> gauge(prometheus::Registry& registry, const std::string& name,
                            const std::map<std::string, std::string>& labels = {}) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      std::map<std::string, std::string> have;
      for (const auto& label : metric.label) have[label.name] = label.value;
      bool match = have["source"] == "pg";
      for (const auto& [key, value] : labels) match = match && have[key] == value;
      if (match) return metric.gauge.value;
    }
  }
  return std::nullopt;
}

class PostgresSlotBudgetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = server_.create_database();
    PostgresSourceOptions options;
    options.dsn = server_.dsn(db_);
    options.slot = "slot_" + db_;
    options.publication = "pub";
    options.status_interval = std::chrono::milliseconds(100);
    options.heartbeat = std::chrono::milliseconds(0);
    SourceContext context{
        "pg",
        std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>()),
        registry_,
        {}};
    source_ = std::make_unique<PostgresSource>(options, context);
    auto started = source_->start(StartPosition{});
    ASSERT_TRUE(started.has_value()) << started.error().message;
  }
  void TearDown() override {
    source_.reset();
    server_.drop_database(db_);
  }

  // Polls the source (nothing is ever committed, so the slot keeps all WAL) until `done`.
  bool poll_until(const std::function<bool()>& done) {
    NullEmitter out;
    const auto give_up = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < give_up) {
      auto polled = source_->poll(out, Clock::now() + std::chrono::milliseconds(50));
      if (!polled && !polled.error().retryable) {
        ADD_FAILURE() << polled.error().message;
        return false;
      }
      if (done()) return true;
    }
    return false;
  }

  std::optional<double> value(const std::string& name,
                              const std::map<std::string, std::string>& labels = {}) {
    return gauge(*registry_, name, labels);
  }

  test::PostgresServer server_{test::PostgresServerOptions{
      "logical", {"max_slot_wal_keep_size = 64MB", "max_wal_size = 256MB"}}};
  std::string db_;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::unique_ptr<PostgresSource> source_;
};

TEST_F(PostgresSlotBudgetTest, BudgetShrinksAsUnacknowledgedWalGrows) {
  ASSERT_TRUE(poll_until([&] { return value("cdcd_postgres_slot_max_wal_keep_bytes") == kKeep; }))
      << "max_wal_keep_bytes " << value("cdcd_postgres_slot_max_wal_keep_bytes").value_or(-2);
  EXPECT_EQ(value("cdcd_postgres_slot_active"), 1.0);
  EXPECT_EQ(value("cdcd_postgres_slot_wal_status", {{"status", "reserved"}}), 1.0);
  EXPECT_EQ(value("cdcd_postgres_slot_wal_status", {{"status", "lost"}}), 0.0);
  const double safe_before = value("cdcd_postgres_slot_safe_wal_bytes").value_or(NAN);
  // PostgreSQL counts the safe size from segment boundaries and the checkpoint distance, so it
  // may exceed the budget itself; it is positive while the slot is far from being lost.
  ASSERT_GT(safe_before, 0.0);

  // About 24 MB of WAL the source reads but never acknowledges: the slot keeps it.
  server_.execute(
      "CREATE TABLE filler (x text); "
      "INSERT INTO filler SELECT repeat(md5(g::text), 32) FROM generate_series(1, 20000) g",
      db_);
  ASSERT_TRUE(poll_until([&] {
    return value("cdcd_postgres_slot_safe_wal_bytes").value_or(NAN) < safe_before - 16e6;
  })) << "safe_wal_bytes stayed at "
      << value("cdcd_postgres_slot_safe_wal_bytes").value_or(NAN) << " from " << safe_before;
  EXPECT_GT(value("cdcd_postgres_slot_retained_wal_bytes").value_or(0), 16e6);
}

TEST_F(PostgresSlotBudgetTest, UnlimitedBudgetIsMinusOneWithoutASafeSize) {
  // ALTER SYSTEM refuses to run inside a multi-statement (transaction) string.
  server_.execute("ALTER SYSTEM SET max_slot_wal_keep_size = -1");
  server_.execute("SELECT pg_reload_conf()");
  ASSERT_TRUE(poll_until([&] { return value("cdcd_postgres_slot_max_wal_keep_bytes") == -1.0; }))
      << value("cdcd_postgres_slot_max_wal_keep_bytes").value_or(-2);
  EXPECT_TRUE(std::isnan(value("cdcd_postgres_slot_safe_wal_bytes").value_or(0)));
  EXPECT_EQ(value("cdcd_postgres_slot_active"), 1.0);
  server_.execute("ALTER SYSTEM RESET max_slot_wal_keep_size");
  server_.execute("SELECT pg_reload_conf()");
}

}  // namespace
}  // namespace cdcd::postgres
