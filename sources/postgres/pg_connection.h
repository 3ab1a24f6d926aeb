#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <libpq-fe.h>

#include "daemon/core/result.h"

namespace cdcd::postgres {

struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

// Connection keywords that override (or add to) what the user's DSN says.
using ConnectionOverrides = std::vector<std::pair<std::string, std::string>>;

// Where a DSN points, for logs and errors: "host=H port=P dbname=D". Never includes the password.
std::string describe_dsn(const std::string& dsn);

// Checks that a DSN parses (libpq conninfo or URI), without connecting.
std::optional<std::string> dsn_syntax_error(const std::string& dsn);

// What every connection of the source adds to the user's DSN: session settings that make the
// server's text output of values predictable (ISO 8601 dates, UTC, ISO intervals, hex bytea),
// appended to the DSN's own `options`; and, unless the DSN sets them, a connect timeout and TCP
// keepalives/user timeout, so that a vanished server fails a blocking call instead of hanging it.
ConnectionOverrides source_overrides(const std::string& dsn);

// One libpq connection, owned. Blocking calls; errors come back as values whose `retryable`
// flag says whether trying again later may help (lost connection) or not (bad SQL, privileges).
class PgConnection {
 public:
  PgConnection() = default;
  ~PgConnection();
  PgConnection(PgConnection&& other) noexcept
      : conn_(std::exchange(other.conn_, nullptr)), interrupt_(other.interrupt_) {}
  PgConnection& operator=(PgConnection&& other) noexcept;
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  static Result<PgConnection> connect(const std::string& dsn,
                                      const ConnectionOverrides& overrides = {});

  PGconn* get() const { return conn_; }
  bool ok() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }
  void close();

  // While `*flag` is set, statements are not started, and one running is cancelled within
  // kInterruptCheckMs: another thread can end a statement that blocks (CREATE_REPLICATION_SLOT
  // waits for every running transaction) by setting the flag. Null: plain blocking calls.
  void set_interrupt(const std::atomic<bool>* flag) { interrupt_ = flag; }

  // Runs one statement (or a simple-protocol list of them); the last result must be a command
  // completion or rows.
  Result<PgResult> exec(const std::string& sql);
  // Runs one statement with text parameters ($1, $2, ...; nullopt is NULL).
  Result<PgResult> exec_params(const std::string& sql,
                               const std::vector<std::optional<std::string>>& params);

  std::string quote_identifier(std::string_view name) const;
  std::string quote_literal(std::string_view value) const;
  // "host=H port=P dbname=D" of this connection.
  std::string describe() const;

 private:
  static constexpr int kInterruptCheckMs = 100;

  explicit PgConnection(PGconn* conn) : conn_(conn) {}
  Result<PgResult> checked(PgResult result);
  Result<PgResult> wait_for_result(bool sent);

  PGconn* conn_ = nullptr;
  const std::atomic<bool>* interrupt_ = nullptr;
};

// The error of a failed statement: "what: SQLSTATE message". Retryable when the connection was
// lost or the server is shutting down or overloaded.
Error statement_error(PGconn* conn, const PGresult* result, std::string_view what);

// The SQLSTATE of a result, or "" when there is none (connection lost).
std::string sqlstate(const PGresult* result);

// The first column of the first row as text, or nullopt when NULL or absent.
std::optional<std::string> first_value(const PGresult* result);

}  // namespace cdcd::postgres
