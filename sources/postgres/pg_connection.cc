#include "sources/postgres/pg_connection.h"

#include <poll.h>

#include <array>

namespace cdcd::postgres {

namespace {

struct ConninfoDeleter {
  void operator()(PQconninfoOption* options) const { PQconninfoFree(options); }
};
using Conninfo = std::unique_ptr<PQconninfoOption, ConninfoDeleter>;

Conninfo parse_conninfo(const std::string& dsn, std::string* error) {
  char* message = nullptr;
  Conninfo options(PQconninfoParse(dsn.c_str(), &message));
  if (message != nullptr) {
    if (error) *error = message;
    PQfreemem(message);
  }
  return options;
}

std::optional<std::string> conninfo_value(const PQconninfoOption* options,
                                          std::string_view keyword) {
  for (const auto* option = options; option && option->keyword; ++option) {
    if (keyword == option->keyword && option->val && *option->val) return option->val;
  }
  return std::nullopt;
}

std::string trim_message(std::string message) {
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  return message;
}

// Connection failures libpq reports only as text. These ones will not go away by retrying: the
// server answered and refused who we are or what we asked for.
bool is_permanent_connect_failure(const std::string& message) {
  static constexpr std::array<std::string_view, 7> kPermanent = {
      "password authentication failed",
      "does not exist",
      "no pg_hba.conf entry",
      "permission denied",
      "must be superuser or replication role",
      "invalid connection option",
      "authentication failed",
  };
  for (auto pattern : kPermanent) {
    if (message.find(pattern) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

std::string describe_dsn(const std::string& dsn) {
  Conninfo options = parse_conninfo(dsn, nullptr);
  if (!options) return "(unparsable dsn)";
  auto host = conninfo_value(options.get(), "host");
  if (!host) host = conninfo_value(options.get(), "hostaddr");
  auto port = conninfo_value(options.get(), "port");
  auto dbname = conninfo_value(options.get(), "dbname");
  auto user = conninfo_value(options.get(), "user");
  return "host=" + host.value_or("(default)") + " port=" + port.value_or("(default)") +
         " dbname=" + dbname.value_or(user.value_or("(default)"));
}

std::optional<std::string> dsn_syntax_error(const std::string& dsn) {
  std::string error;
  Conninfo options = parse_conninfo(dsn, &error);
  if (options) return std::nullopt;
  return trim_message(error.empty() ? "invalid connection string" : error);
}

ConnectionOverrides source_overrides(const std::string& dsn) {
  Conninfo parsed = parse_conninfo(dsn, nullptr);
  auto user_value = [&](std::string_view keyword) {
    return parsed ? conninfo_value(parsed.get(), keyword) : std::nullopt;
  };
  std::string options = user_value("options").value_or("");
  if (!options.empty()) options += ' ';
  options +=
      "-c datestyle=ISO -c intervalstyle=iso_8601 -c timezone=UTC -c bytea_output=hex "
      "-c extra_float_digits=1";
  ConnectionOverrides overrides{{"options", options}};
  const std::pair<const char*, const char*> kDefaults[] = {
      {"connect_timeout", "10"}, {"keepalives_idle", "30"},     {"keepalives_interval", "10"},
      {"keepalives_count", "3"}, {"tcp_user_timeout", "60000"}, {"client_encoding", "UTF8"},
  };
  for (const auto& [keyword, value] : kDefaults) {
    if (!user_value(keyword)) overrides.emplace_back(keyword, value);
  }
  return overrides;
}

PgConnection::~PgConnection() { close(); }

PgConnection& PgConnection::operator=(PgConnection&& other) noexcept {
  if (this != &other) {
    close();
    conn_ = std::exchange(other.conn_, nullptr);
    interrupt_ = other.interrupt_;
  }
  return *this;
}

void PgConnection::close() {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
}

Result<PgConnection> PgConnection::connect(const std::string& dsn,
                                           const ConnectionOverrides& overrides) {
  // expand_dbname: the first "dbname" value is the user's conninfo or URI; later keywords win.
  std::vector<const char*> keywords{"dbname"};
  std::vector<const char*> values{dsn.c_str()};
  for (const auto& [key, value] : overrides) {
    keywords.push_back(key.c_str());
    values.push_back(value.c_str());
  }
  keywords.push_back(nullptr);
  values.push_back(nullptr);
  PgConnection connection(PQconnectdbParams(keywords.data(), values.data(), 1));
  if (connection.conn_ == nullptr) return fail_retryable("out of memory creating a connection");
  // Server notices ("relation already exists, skipping") would go to stderr unformatted.
  PQsetNoticeProcessor(
      connection.conn_, [](void*, const char*) {}, nullptr);
  if (PQstatus(connection.conn_) != CONNECTION_OK) {
    std::string message = trim_message(PQerrorMessage(connection.conn_));
    std::string text = "cannot connect to " + describe_dsn(dsn) + ": " + message;
    if (is_permanent_connect_failure(message)) return fail(std::move(text));
    return fail_retryable(std::move(text));
  }
  return connection;
}

Result<PgResult> PgConnection::exec(const std::string& sql) {
  if (interrupt_ == nullptr) return checked(PgResult(PQexec(conn_, sql.c_str())));
  if (interrupt_->load()) return fail_retryable("interrupted: the source is stopping");
  return wait_for_result(PQsendQuery(conn_, sql.c_str()) == 1);
}

Result<PgResult> PgConnection::exec_params(const std::string& sql,
                                           const std::vector<std::optional<std::string>>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& param : params) values.push_back(param ? param->c_str() : nullptr);
  const int count = static_cast<int>(values.size());
  if (interrupt_ == nullptr) {
    return checked(PgResult(
        PQexecParams(conn_, sql.c_str(), count, nullptr, values.data(), nullptr, nullptr, 0)));
  }
  if (interrupt_->load()) return fail_retryable("interrupted: the source is stopping");
  return wait_for_result(PQsendQueryParams(conn_, sql.c_str(), count, nullptr, values.data(),
                                           nullptr, nullptr, 0) == 1);
}

Result<PgResult> PgConnection::checked(PgResult result) {
  auto status = PQresultStatus(result.get());
  if (result && (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)) return result;
  return tl::unexpected(statement_error(conn_, result.get(), "query failed"));
}

Result<PgResult> PgConnection::wait_for_result(bool sent) {
  if (!sent) return checked(PgResult());
  bool cancelled = false;
  while (PQisBusy(conn_)) {
    if (!cancelled && interrupt_->load()) {
      // From this thread, so that no cancel can reach the server before the statement does.
      if (PGcancel* cancel = PQgetCancel(conn_)) {
        char error[256];
        PQcancel(cancel, error, sizeof error);
        PQfreeCancel(cancel);
      }
      cancelled = true;
    }
    pollfd fd{PQsocket(conn_), POLLIN, 0};
    ::poll(&fd, 1, kInterruptCheckMs);
    if (PQconsumeInput(conn_) == 0) break;  // lost: PQgetResult reports it
  }
  // Like PQexec: the last result of a statement list, or the first error.
  PgResult last;
  while (PGresult* next = PQgetResult(conn_)) {
    PgResult result(next);
    auto status = PQresultStatus(next);
    if (last && status != PGRES_FATAL_ERROR && PQresultStatus(last.get()) == PGRES_FATAL_ERROR) {
      continue;
    }
    last = std::move(result);
  }
  return checked(std::move(last));
}

std::string PgConnection::quote_identifier(std::string_view name) const {
  char* quoted = PQescapeIdentifier(conn_, name.data(), name.size());
  if (quoted == nullptr) return "\"\"";
  std::string text(quoted);
  PQfreemem(quoted);
  return text;
}

std::string PgConnection::quote_literal(std::string_view value) const {
  char* quoted = PQescapeLiteral(conn_, value.data(), value.size());
  if (quoted == nullptr) return "''";
  std::string text(quoted);
  PQfreemem(quoted);
  return text;
}

std::string PgConnection::describe() const {
  if (conn_ == nullptr) return "(not connected)";
  const char* host = PQhost(conn_);
  const char* port = PQport(conn_);
  const char* db = PQdb(conn_);
  return std::string("host=") + (host ? host : "") + " port=" + (port ? port : "") +
         " dbname=" + (db ? db : "");
}

std::string sqlstate(const PGresult* result) {
  if (result == nullptr) return "";
  const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
  return state ? state : "";
}

Error statement_error(PGconn* conn, const PGresult* result, std::string_view what) {
  std::string state = sqlstate(result);
  std::string message = result ? PQresultErrorMessage(result) : "";
  if (message.empty() && conn != nullptr) message = PQerrorMessage(conn);
  message = trim_message(message);
  bool lost = conn == nullptr || PQstatus(conn) != CONNECTION_OK || state.empty();
  // 08: connection exception; 57P0x: shutdown in progress; 53: out of resources;
  // 40: serialization failure or deadlock.
  bool retryable = lost || state.rfind("08", 0) == 0 || state.rfind("57P0", 0) == 0 ||
                   state.rfind("53", 0) == 0 || state.rfind("40", 0) == 0;
  std::string text(what);
  text += ": ";
  if (!state.empty()) text += state + " ";
  text += message.empty() ? "connection lost" : message;
  return Error{std::move(text), retryable};
}

std::optional<std::string> first_value(const PGresult* result) {
  if (result == nullptr || PQntuples(result) < 1 || PQnfields(result) < 1 ||
      PQgetisnull(result, 0, 0)) {
    return std::nullopt;
  }
  return std::string(PQgetvalue(result, 0, 0));
}

}  // namespace cdcd::postgres
