#include "checkpoint/postgres/postgres_checkpoint_store.h"

#include <unistd.h>

#include <charconv>

#include <spdlog/spdlog.h>

namespace cdcd::postgres {

namespace {

std::optional<std::uint64_t> parse_u64(const char* text) {
  std::string_view view(text);
  std::uint64_t value = 0;
  auto [end, error] = std::from_chars(view.data(), view.data() + view.size(), value);
  if (error != std::errc() || end != view.data() + view.size()) return std::nullopt;
  return value;
}

// The advisory lock's key: "cdcd" in the high half, the table's oid in the low half (as the
// bigint form of pg_try_advisory_lock, which pg_locks shows as classid, objid, objsubid 1).
constexpr std::uint64_t kLockKeyPrefix = 0x63646364;  // "cdcd"

}  // namespace

PostgresCheckpointStore::PostgresCheckpointStore(PostgresCheckpointStoreOptions options,
                                                 CheckpointStoreContext context)
    : options_(std::move(options)), context_(std::move(context)) {}

Status PostgresCheckpointStore::connect() {
  auto overrides = source_overrides(options_.dsn);
  // The pid lets a refused process name the one holding the table's lock.
  overrides.emplace_back("application_name",
                         "cdcd checkpoints (pid " + std::to_string(::getpid()) + ")");
  auto conn = PgConnection::connect(options_.dsn, overrides);
  if (!conn) return tl::unexpected(conn.error());
  conn_ = std::move(*conn);
  auto dot = options_.table.find('.');
  table_sql_ = dot == std::string::npos
                   ? conn_.quote_identifier(options_.table)
                   : conn_.quote_identifier(options_.table.substr(0, dot)) + "." +
                         conn_.quote_identifier(options_.table.substr(dot + 1));
  return ok();
}

Status PostgresCheckpointStore::connect_and_lock() {
  if (auto connected = connect(); !connected) return connected;
  if (auto locked = lock_table(); !locked) {
    conn_.close();
    return locked;
  }
  return ok();
}

Status PostgresCheckpointStore::lock_table() {
  const std::string key = "((" + std::to_string(kLockKeyPrefix) + "::bigint << 32) | " +
                          "to_regclass(" + conn_.quote_literal(table_sql_) + ")::oid::bigint)";
  auto locked = conn_.exec("SELECT pg_try_advisory_lock(" + key + ")");
  if (!locked) return tl::unexpected(locked.error());
  if (first_value(locked->get()) == "t") return ok();
  auto holder = conn_.exec(
      "SELECT a.application_name || ', server pid ' || a.pid FROM pg_locks l "
      "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
      "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = "
      "current_database()) AND ((l.classid::bigint << 32) | l.objid::bigint) = " +
      key);
  std::string who = holder ? first_value(holder->get()).value_or("unknown") : "unknown";
  return fail("checkpoint table " + options_.table + " on " + conn_.describe() +
              " is in use by another cdcd process (" + who +
              "); two processes must not write the same checkpoints: stop it first");
}

Status PostgresCheckpointStore::start() {
  std::lock_guard lock(mutex_);
  if (auto connected = connect(); !connected) return connected;
  auto created = conn_.exec("CREATE TABLE IF NOT EXISTS " + table_sql_ +
                            " (consumer text PRIMARY KEY, lsn numeric(20, 0) NOT NULL, "
                            "\"offset\" numeric(20, 0) NOT NULL, commit_time_us bigint NOT NULL, "
                            "saved_at_us bigint NOT NULL, saved_at timestamptz NOT NULL, "
                            "segment numeric(20, 0) NOT NULL DEFAULT 0); "
                            // Tables created before segments were recorded.
                            "ALTER TABLE " +
                            table_sql_ +
                            " ADD COLUMN IF NOT EXISTS segment numeric(20, 0) NOT NULL DEFAULT 0");
  if (!created) {
    return fail("cannot create checkpoint table " + options_.table + " on " + conn_.describe() +
                ": " + created.error().message);
  }
  if (auto locked = lock_table(); !locked) {
    conn_.close();
    return locked;
  }
  auto named = conn_.exec(
      "SELECT current_database(), n.nspname, c.relname FROM pg_class c JOIN "
      "pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = " +
      conn_.quote_literal(table_sql_) + "::regclass");
  if (!named || PQntuples(named->get()) != 1) {
    conn_.close();
    return fail("cannot find checkpoint table " + options_.table + " on " + conn_.describe());
  }
  PGresult* row = named->get();
  own_entities_ = {StoreEntity{PQgetvalue(row, 0, 0),
                               std::string(PQgetvalue(row, 0, 1)) + "." + PQgetvalue(row, 0, 2)}};
  auto log = context_.log ? context_.log : spdlog::default_logger();
  log->info("checkpoints in table {} on {}", options_.table, conn_.describe());
  return ok();
}

Result<PgResult> PostgresCheckpointStore::run(const Statement& statement) {
  if (!conn_.ok()) {
    if (auto connected = connect_and_lock(); !connected) return tl::unexpected(connected.error());
  }
  auto result = statement(conn_);
  if (result || conn_.ok()) {
    // A failed statement inside BEGIN ... COMMIT leaves the session in an aborted transaction.
    if (!result && PQtransactionStatus(conn_.get()) == PQTRANS_INERROR)
      (void)conn_.exec("ROLLBACK");
    return result;
  }
  if (auto connected = connect_and_lock(); !connected) return tl::unexpected(connected.error());
  return statement(conn_);
}

Result<std::optional<Checkpoint>> PostgresCheckpointStore::load(const std::string& consumer) {
  std::lock_guard lock(mutex_);
  auto result = run([&](PgConnection& conn) {
    return conn.exec_params(
        "SELECT lsn::text, \"offset\"::text, commit_time_us, saved_at_us, segment::text FROM " +
            table_sql_ + " WHERE consumer = $1",
        {consumer});
  });
  if (!result) return tl::unexpected(result.error());
  PGresult* rows = result->get();
  if (PQntuples(rows) == 0) return std::optional<Checkpoint>();
  auto lsn = parse_u64(PQgetvalue(rows, 0, 0));
  auto offset = parse_u64(PQgetvalue(rows, 0, 1));
  auto segment = parse_u64(PQgetvalue(rows, 0, 4));
  if (!lsn || !offset || !segment)
    return fail("malformed checkpoint of consumer " + consumer + " in " + options_.table);
  Checkpoint checkpoint;
  checkpoint.lsn = *lsn;
  checkpoint.offset = *offset;
  checkpoint.segment = *segment;
  checkpoint.commit_time_us = std::strtoll(PQgetvalue(rows, 0, 2), nullptr, 10);
  checkpoint.saved_at_us = std::strtoll(PQgetvalue(rows, 0, 3), nullptr, 10);
  return std::optional<Checkpoint>(checkpoint);
}

Status PostgresCheckpointStore::save(const std::string& consumer, const Checkpoint& checkpoint) {
  std::lock_guard lock(mutex_);
  auto result = run([&](PgConnection& conn) {
    // One round trip; synchronous_commit on for this transaction only makes it durable whatever
    // the server's default.
    return conn.exec(
        "BEGIN; SET LOCAL synchronous_commit = on; INSERT INTO " + table_sql_ +
        " (consumer, lsn, \"offset\", commit_time_us, saved_at_us, saved_at, segment) VALUES (" +
        conn.quote_literal(consumer) + ", " + std::to_string(checkpoint.lsn) + ", " +
        std::to_string(checkpoint.offset) + ", " + std::to_string(checkpoint.commit_time_us) +
        ", " + std::to_string(checkpoint.saved_at_us) + ", now(), " +
        std::to_string(checkpoint.segment) +
        ") ON CONFLICT (consumer) DO UPDATE SET lsn = EXCLUDED.lsn, "
        "\"offset\" = EXCLUDED.\"offset\", commit_time_us = EXCLUDED.commit_time_us, "
        "saved_at_us = EXCLUDED.saved_at_us, saved_at = EXCLUDED.saved_at, "
        "segment = EXCLUDED.segment; COMMIT");
  });
  if (!result) {
    return tl::unexpected(Error{"saving checkpoint of " + consumer + ": " + result.error().message,
                                result.error().retryable});
  }
  return ok();
}

Status PostgresCheckpointStore::remove(const std::string& consumer) {
  std::lock_guard lock(mutex_);
  auto result = run([&](PgConnection& conn) {
    return conn.exec_params("DELETE FROM " + table_sql_ + " WHERE consumer = $1", {consumer});
  });
  if (!result) return tl::unexpected(result.error());
  return ok();
}

}  // namespace cdcd::postgres
