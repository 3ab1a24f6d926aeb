#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tests/support/test_util.h"

struct pg_conn;

namespace cdcd::test {

struct PostgresServerOptions {
  std::string wal_level = "logical";
  // Extra postgresql.conf lines, e.g. "wal_sender_timeout = 3s".
  std::vector<std::string> extra_config;
};

using SqlRow = std::vector<std::optional<std::string>>;

// A throwaway PostgreSQL 15 cluster: initdb in a TempDir, listening on a free loopback port,
// started in the constructor and stopped (and removed) in the destructor. Runs as the `postgres`
// user when the tests run as root (initdb refuses root). Errors throw std::runtime_error.
class PostgresServer {
 public:
  explicit PostgresServer(PostgresServerOptions options = {});
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  int port() const { return port_; }
  // libpq conninfo for a database and user of this server.
  std::string dsn(const std::string& database = "postgres",
                  const std::string& user = "postgres") const;

  // Runs SQL (one or more statements) in its own session.
  void execute(const std::string& sql, const std::string& database = "postgres") const;
  std::vector<SqlRow> query(const std::string& sql, const std::string& database = "postgres") const;
  // The first column of the first row (nullopt when NULL or no row).
  std::optional<std::string> query_value(const std::string& sql,
                                         const std::string& database = "postgres") const;

  // Creates a database with a fresh name and returns the name.
  std::string create_database();
  // Drops the database's replication slots (they pin WAL) and the database itself.
  void drop_database(const std::string& database);

  void start();
  void stop();  // fast shutdown
  void restart();
  bool running() const { return running_; }

  const std::string& data_dir() const { return data_dir_; }
  std::string log() const;

 private:
  void run_as_postgres(std::vector<std::string> argv, const std::string& what) const;
  void pg_ctl(const std::vector<std::string>& args, const std::string& what) const;

  PostgresServerOptions options_;
  TempDir dir_;
  std::string data_dir_;
  int port_ = 0;
  bool running_ = false;
  int databases_ = 0;
};

// One libpq session, for tests that interleave transactions of several sessions.
class PgSession {
 public:
  explicit PgSession(const std::string& dsn);
  ~PgSession();
  PgSession(const PgSession&) = delete;
  PgSession& operator=(const PgSession&) = delete;

  void execute(const std::string& sql);
  std::vector<SqlRow> query(const std::string& sql);
  // Like execute, but returns the error message instead of throwing ("" on success).
  std::string try_execute(const std::string& sql);
  bool ok() const;

 private:
  pg_conn* conn_ = nullptr;
};

}  // namespace cdcd::test
