#include "tests/support/postgres_server.h"

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

#include <libpq-fe.h>

namespace cdcd::test {

namespace {

constexpr char kPgBin[] = "/usr/lib/postgresql/15/bin/";

std::vector<SqlRow> run_sql(pg_conn* conn, const std::string& sql) {
  PGresult* result = PQexec(conn, sql.c_str());
  auto status = PQresultStatus(result);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    std::string message = PQresultErrorMessage(result);
    if (message.empty()) message = PQerrorMessage(conn);
    PQclear(result);
    throw std::runtime_error("SQL failed: " + message + " in: " + sql.substr(0, 300));
  }
  std::vector<SqlRow> rows;
  for (int row = 0; row < PQntuples(result); ++row) {
    SqlRow values;
    for (int column = 0; column < PQnfields(result); ++column) {
      if (PQgetisnull(result, row, column)) {
        values.emplace_back(std::nullopt);
      } else {
        values.emplace_back(PQgetvalue(result, row, column));
      }
    }
    rows.push_back(std::move(values));
  }
  PQclear(result);
  return rows;
}

pg_conn* connect_or_throw(const std::string& dsn) {
  pg_conn* conn = PQconnectdb(dsn.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string message = PQerrorMessage(conn);
    PQfinish(conn);
    throw std::runtime_error("cannot connect to test PostgreSQL: " + message);
  }
  return conn;
}

}  // namespace

PostgresServer::PostgresServer(PostgresServerOptions options) : options_(std::move(options)) {
  data_dir_ = dir_.file("data");
  std::filesystem::create_directory(data_dir_);
  ::chmod(data_dir_.c_str(), 0700);
  if (::geteuid() == 0) {
    passwd* user = ::getpwnam("postgres");
    if (user == nullptr) throw std::runtime_error("no postgres user to run the test server as");
    if (::chown(data_dir_.c_str(), user->pw_uid, user->pw_gid) != 0) {
      throw std::runtime_error("cannot chown the test server's data directory");
    }
  }
  run_as_postgres({std::string(kPgBin) + "initdb", "-D", data_dir_, "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"},
                  "initdb");
  port_ = free_port();
  std::string config = "\nlisten_addresses = '127.0.0.1'\nport = " + std::to_string(port_) +
                       "\nunix_socket_directories = '" + data_dir_ +
                       "'\nwal_level = " + options_.wal_level +
                       "\nmax_replication_slots = 20\nmax_wal_senders = 20\nfsync = off\n"
                       "synchronous_commit = off\nfull_page_writes = off\n";
  for (const auto& line : options_.extra_config) config += line + "\n";
  append_file(data_dir_ + "/postgresql.conf", config);
  start();
}

PostgresServer::~PostgresServer() {
  try {
    if (running_) stop();
  } catch (const std::exception&) {
    // A server that cannot stop cleanly: kill it, so that no process outlives the test.
    std::string pid = read_file(data_dir_ + "/postmaster.pid");
    if (!pid.empty()) ::kill(std::stoi(pid), SIGKILL);
  }
}

void PostgresServer::run_as_postgres(std::vector<std::string> argv, const std::string& what) const {
  if (::geteuid() == 0) argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  std::string output;
  int code = run_command(argv, &output, std::chrono::seconds(90));
  if (code != 0) {
    throw std::runtime_error(what + " failed (exit " + std::to_string(code) + "): " + output +
                             "\nserver log:\n" + log());
  }
}

void PostgresServer::pg_ctl(const std::vector<std::string>& args, const std::string& what) const {
  std::vector<std::string> argv{std::string(kPgBin) + "pg_ctl", "-D", data_dir_};
  argv.insert(argv.end(), args.begin(), args.end());
  run_as_postgres(argv, what);
}

void PostgresServer::start() {
  pg_ctl({"-l", data_dir_ + "/server.log", "-w", "-t", "60", "start"}, "pg_ctl start");
  running_ = true;
}

void PostgresServer::stop() {
  pg_ctl({"-m", "fast", "-w", "-t", "60", "stop"}, "pg_ctl stop");
  running_ = false;
}

void PostgresServer::restart() {
  stop();
  start();
}

std::string PostgresServer::log() const { return read_file(data_dir_ + "/server.log"); }

std::string PostgresServer::dsn(const std::string& database, const std::string& user) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + database + " user=" + user;
}

void PostgresServer::execute(const std::string& sql, const std::string& database) const {
  query(sql, database);
}

std::vector<SqlRow> PostgresServer::query(const std::string& sql,
                                          const std::string& database) const {
  pg_conn* conn = connect_or_throw(dsn(database));
  try {
    auto rows = run_sql(conn, sql);
    PQfinish(conn);
    return rows;
  } catch (...) {
    PQfinish(conn);
    throw;
  }
}

std::optional<std::string> PostgresServer::query_value(const std::string& sql,
                                                       const std::string& database) const {
  auto rows = query(sql, database);
  if (rows.empty() || rows[0].empty()) return std::nullopt;
  return rows[0][0];
}

std::string PostgresServer::create_database() {
  std::string name = "db" + std::to_string(++databases_);
  execute("CREATE DATABASE " + name);
  return name;
}

void PostgresServer::drop_database(const std::string& database) {
  execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = '" +
          database + "' AND active_pid IS NOT NULL");
  wait_until([&] {
    return query_value("SELECT count(*) FROM pg_replication_slots WHERE database = '" + database +
                       "' AND active_pid IS NOT NULL") == "0";
  });
  execute(
      "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '" +
      database + "'");
  execute("DROP DATABASE IF EXISTS " + database + " WITH (FORCE)");
}

PgSession::PgSession(const std::string& dsn) : conn_(connect_or_throw(dsn)) {}

PgSession::~PgSession() { PQfinish(conn_); }

void PgSession::execute(const std::string& sql) { run_sql(conn_, sql); }

std::vector<SqlRow> PgSession::query(const std::string& sql) { return run_sql(conn_, sql); }

std::string PgSession::try_execute(const std::string& sql) {
  try {
    run_sql(conn_, sql);
    return "";
  } catch (const std::exception& error) {
    return error.what();
  }
}

bool PgSession::ok() const { return PQstatus(conn_) == CONNECTION_OK; }

}  // namespace cdcd::test
