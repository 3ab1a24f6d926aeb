#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "sources/postgres/postgres_source.h"
#include "tests/support/postgres_server.h"

namespace cdcd::test {

// Keeps every event a source emits; with `room`, wants_more() turns false at that many events.
class RecordingEmitter : public Emitter {
 public:
  void emit(SourceEvent&& event) override { events.push_back(std::move(event)); }
  bool wants_more() const override { return !room || events.size() < *room; }

  std::vector<Change> changes() const;
  std::vector<TransactionEnd> ends() const;
  std::vector<Change> changes_of(const std::string& entity) const;

  std::vector<SourceEvent> events;
  std::optional<std::size_t> room;
};

// Postgres sources against a real PostgreSQL 15: one server per test suite (the subclass's
// SetUpTestSuite calls start_server with its settings), a database per test.
class PostgresSourceFixture : public ::testing::Test {
 protected:
  static void start_server(std::vector<std::string> settings);
  static void stop_server();
  static void TearDownTestSuite() { stop_server(); }

  void SetUp() override;
  void TearDown() override;

  // Options for a source on the test's database; `slot` defaults to "slot_<database>".
  postgres::PostgresSourceOptions options(std::string slot = "");
  postgres::PostgresSource& make_source(postgres::PostgresSourceOptions options,
                                        std::shared_ptr<prometheus::Registry> registry = nullptr,
                                        SourceMetrics metrics = {});
  postgres::PostgresSource& start_source(postgres::PostgresSourceOptions options,
                                         std::uint64_t first_lsn = 0);

  // Polls until `done` holds; fails the test on a permanent error or after `timeout`. Retryable
  // errors are waited out.
  bool poll_until(Source& source, RecordingEmitter& out, const std::function<bool()>& done,
                  std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Polls until `transactions` transactions ended; fails the test on any error or after 30 s.
  bool read_transactions(Source& source, RecordingEmitter& out, std::size_t transactions);

  void sql(const std::string& statement) { server_->execute(statement, db_); }
  std::optional<std::string> value(const std::string& statement) {
    return server_->query_value(statement, db_);
  }

  static PostgresServer* server_;
  std::string db_;
  std::shared_ptr<spdlog::logger> logger_;
  std::vector<std::unique_ptr<postgres::PostgresSource>> sources_;
};

}  // namespace cdcd::test
