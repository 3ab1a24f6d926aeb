#include "sources/postgres/postgres_source.h"

#include <poll.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <spdlog/spdlog.h>

#include "daemon/core/lsn.h"
#include "sources/postgres/pgoutput.h"
#include "sources/postgres/type_catalog.h"

namespace cdcd::postgres {

namespace {

constexpr char kHeartbeatPrefix[] = "cdcd_heartbeat";
constexpr std::chrono::milliseconds kMaxBackoff{30000};
constexpr std::chrono::milliseconds kFirstBackoff{250};
// The longest a poll() keeps reading after its first change before handing its changes to the
// pipeline, when the walsender never lets it catch up.
constexpr std::chrono::milliseconds kHandOverLinger{2};
constexpr std::chrono::microseconds kReadCoalescing{500};

std::int64_t now_unix_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string default_spill_dir() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp && *tmp ? tmp : "/tmp";
}

// libpq's "publication_names" is a list of identifiers: quote so any name survives.
std::string publication_names_literal(const std::string& name) {
  std::string quoted = "\"";
  for (char c : name) {
    if (c == '"') quoted += '"';
    if (c == '\'') quoted += '\'';
    quoted += c;
  }
  return "'" + quoted + "\"'";
}

Error with_context(const Error& error, const std::string& context) {
  return Error{context + ": " + error.message, error.retryable};
}

}  // namespace

PostgresSource::PostgresSource(PostgresSourceOptions options, SourceContext context)
    : options_(std::move(options)),
      context_(std::move(context)),
      log_(context_.log ? context_.log : spdlog::default_logger()),
      where_(describe_dsn(options_.dsn)),
      buffer_(options_.max_transaction_bytes,
              options_.spill_dir.empty() ? default_spill_dir() : options_.spill_dir) {
  if (context_.registry) {
    retained_wal_ = &prometheus::BuildGauge()
                         .Name("cdcd_postgres_slot_retained_wal_bytes")
                         .Help("WAL bytes the source's replication slot keeps on the server")
                         .Register(*context_.registry)
                         .Add({{"source", context_.name}});
    slot_budget_ = std::make_unique<SlotBudgetMetrics>(*context_.registry, context_.name);
    snapshot_rows_ = &prometheus::BuildCounter()
                          .Name("cdcd_postgres_snapshot_rows_total")
                          .Help("Rows read by the initial snapshot, per table")
                          .Register(*context_.registry);
  }
  decoder_.set_type_lookup([this](std::uint32_t oid) -> Result<CustomType> {
    auto conn = sql();
    if (!conn) return tl::unexpected(conn.error());
    return look_up_type(**conn, oid);
  });
}

PostgresSource::~PostgresSource() = default;

// ---------------------------------------------------------------------------------------------
// start()

Status PostgresSource::start(const StartPosition& from) {
  stop();
  next_lsn_ = from.first_lsn;
  in_transaction_ = false;
  pending_ = {};
  undecoded_.reset();
  buffer_.clear();

  auto sql = PgConnection::connect(options_.dsn, source_overrides(options_.dsn));
  if (!sql) return tl::unexpected(sql.error());
  sql_ = interruptible(std::move(*sql));
  where_ = sql_.describe();

  if (auto checked = check_server(); !checked) return checked;
  auto tables = resolve_tables();
  if (!tables) return tl::unexpected(tables.error());
  if (auto published = ensure_publication(*tables); !published) return published;
  auto slot = inspect_slot();
  if (!slot) return tl::unexpected(slot.error());
  auto action = plan_slot(*slot, from);
  if (!action) return tl::unexpected(action.error());
  if (*action != SlotAction::kStream && !options_.create_slot) {
    return fail("replication slot \"" + options_.slot + "\" " +
                (slot->exists ? "needs a new initial snapshot" : "does not exist") + " on " +
                where_ + " and create_slot is false");
  }
  if (*action == SlotAction::kRecreate) {
    if (auto dropped = drop_slot(*slot, from.first_lsn); !dropped) return dropped;
  }
  if (auto connected = connect_replication(); !connected) return connected;
  if (*action != SlotAction::kStream) {
    if (auto created = create_slot_and_snapshot(); !created) return created;
  }
  if (!snapshot_) {
    if (auto started = start_streaming(/*slot_busy_is_permanent=*/true); !started) return started;
  }
  connected_ = true;
  log_->info("postgres source {}: {} slot {} publication {} on {}", context_.name,
             snapshot_ ? "taking the initial snapshot, then streaming from" : "streaming from",
             options_.slot, options_.publication, where_);
  return ok();
}

Status PostgresSource::check_server() {
  auto result = sql_.exec(
      "SELECT current_setting('wal_level'), r.rolreplication OR r.rolsuper, current_user, "
      "current_database(), current_setting('server_version_num')::int "
      "FROM pg_roles r WHERE r.rolname = current_user");
  if (!result) return tl::unexpected(with_context(result.error(), "checking " + where_));
  PGresult* row = result->get();
  if (PQntuples(row) != 1) return fail("cannot read the role of the current user on " + where_);
  std::string wal_level = PQgetvalue(row, 0, 0);
  bool replication = std::string(PQgetvalue(row, 0, 1)) == "t";
  std::string user = PQgetvalue(row, 0, 2);
  database_ = PQgetvalue(row, 0, 3);
  int version = std::atoi(PQgetvalue(row, 0, 4));
  server_version_ = version;
  if (version < 100000) {
    return fail("PostgreSQL " + std::to_string(version) + " on " + where_ +
                " is too old: logical replication with pgoutput needs version 10 or later");
  }
  if (wal_level != "logical") {
    return fail("wal_level is '" + wal_level + "' on " + where_ +
                ": logical decoding needs wal_level = logical (set it in postgresql.conf and "
                "restart the server)");
  }
  if (!replication) {
    return fail("role \"" + user + "\" on " + where_ +
                " lacks the REPLICATION attribute needed for logical replication (ALTER ROLE " +
                sql_.quote_identifier(user) + " REPLICATION)");
  }
  return ok();
}

Result<std::vector<SnapshotTable>> PostgresSource::resolve_tables() {
  std::vector<SnapshotTable> tables;
  for (const auto& name : options_.tables) {
    auto result = sql_.exec_params(
        "SELECT c.oid, n.nspname, c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
        {name});
    if (!result && result.error().retryable) return tl::unexpected(result.error());
    if (!result || PQntuples(result->get()) != 1) {
      return fail("unknown table \"" + name + "\" in `tables`: no such table on " + where_);
    }
    PGresult* row = result->get();
    std::string kind = PQgetvalue(row, 0, 3);
    if (kind != "r" && kind != "p") {
      return fail("\"" + name + "\" in `tables` is not a table (relkind '" + kind + "')");
    }
    tables.push_back(
        SnapshotTable{static_cast<std::uint32_t>(std::strtoul(PQgetvalue(row, 0, 0), nullptr, 10)),
                      PQgetvalue(row, 0, 1), PQgetvalue(row, 0, 2)});
  }
  return tables;
}

Status PostgresSource::ensure_publication(const std::vector<SnapshotTable>& tables) {
  auto existing = sql_.exec_params("SELECT puballtables FROM pg_publication WHERE pubname = $1",
                                   {options_.publication});
  if (!existing) return tl::unexpected(with_context(existing.error(), "reading publications"));
  if (PQntuples(existing->get()) == 1) {
    if (tables.empty() || first_value(existing->get()) == "t") return ok();
    for (const auto& table : tables) {
      auto member = sql_.exec_params(
          "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND "
          "tablename = $3",
          {options_.publication, table.schema, table.name});
      if (!member) return tl::unexpected(member.error());
      if (PQntuples(member->get()) == 0) {
        return fail("publication \"" + options_.publication + "\" does not include table " +
                    table.schema + "." + table.name + " listed in `tables` (ALTER PUBLICATION " +
                    sql_.quote_identifier(options_.publication) + " ADD TABLE ...)");
      }
    }
    return ok();
  }
  if (!options_.create_publication) {
    return fail("publication \"" + options_.publication + "\" does not exist on " + where_ +
                " and create_publication is false");
  }
  std::string sql = "CREATE PUBLICATION " + sql_.quote_identifier(options_.publication);
  if (tables.empty()) {
    sql += " FOR ALL TABLES";
  } else {
    sql += " FOR TABLE ";
    for (std::size_t i = 0; i < tables.size(); ++i) {
      if (i > 0) sql += ", ";
      sql += sql_.quote_identifier(tables[i].schema) + "." + sql_.quote_identifier(tables[i].name);
    }
  }
  auto created = sql_.exec(sql);
  if (!created) {
    return tl::unexpected(with_context(
        created.error(), "cannot create publication \"" + options_.publication + "\""));
  }
  log_->info("postgres source {}: created publication {}", context_.name, options_.publication);
  return ok();
}

Result<SlotFacts> PostgresSource::inspect_slot() {
  SlotFacts facts{options_.slot, where_, false, 0, options_.initial_snapshot};
  auto give_up = Clock::now() + options_.slot_busy_grace;
  while (true) {
    auto result = sql_.exec_params(
        "SELECT slot_type, plugin, database, active_pid, confirmed_flush_lsn::text "
        "FROM pg_replication_slots WHERE slot_name = $1",
        {options_.slot});
    if (!result) return tl::unexpected(with_context(result.error(), "reading replication slots"));
    PGresult* row = result->get();
    if (PQntuples(row) == 0) return facts;
    std::string slot = "replication slot \"" + options_.slot + "\"";
    if (std::string(PQgetvalue(row, 0, 0)) != "logical") {
      return fail(slot + " is a physical slot; cdcd needs a logical one");
    }
    if (std::string(PQgetvalue(row, 0, 1)) != "pgoutput") {
      return fail(slot + " uses output plugin \"" + PQgetvalue(row, 0, 1) +
                  "\"; cdcd needs pgoutput (drop it or choose another slot name)");
    }
    if (std::string(PQgetvalue(row, 0, 2)) != database_) {
      return fail(slot + " belongs to database \"" + PQgetvalue(row, 0, 2) + "\", not \"" +
                  database_ + "\"");
    }
    if (!PQgetisnull(row, 0, 3)) {
      // A walsender whose client just died (e.g. a killed cdcd) lets go within moments.
      if (Clock::now() < give_up && !interrupted_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        continue;
      }
      return fail(slot + " is in use by another process (walsender pid " + PQgetvalue(row, 0, 3) +
                  ") on " + where_ + "; two readers cannot share a slot");
    }
    facts.exists = true;
    facts.confirmed_lsn =
        parse_lsn(PQgetisnull(row, 0, 4) ? "" : PQgetvalue(row, 0, 4)).value_or(0);
    return facts;
  }
}

Status PostgresSource::drop_slot(const SlotFacts& slot, std::uint64_t first_lsn) {
  // No consumer holds a checkpoint (a crash cut the snapshot short, or every checkpoint was
  // removed): nothing depends on what the slot holds, and a new one brings a new snapshot.
  log_->warn(
      "postgres source {}: replication slot {} is at lsn {} but consumers without a checkpoint "
      "need lsn {}; no consumer has a checkpoint, so it is dropped to take a new initial snapshot",
      context_.name, options_.slot, describe_pg_lsn(slot.confirmed_lsn),
      describe_pg_lsn(first_lsn));
  auto dropped = sql_.exec_params("SELECT pg_drop_replication_slot($1)", {options_.slot});
  if (!dropped) {
    return tl::unexpected(
        with_context(dropped.error(), "dropping replication slot \"" + options_.slot + "\""));
  }
  return ok();
}

Status PostgresSource::connect_replication() {
  auto overrides = source_overrides(options_.dsn);
  overrides.emplace_back("replication", "database");
  overrides.emplace_back("application_name", "cdcd");
  auto repl = PgConnection::connect(options_.dsn, overrides);
  if (!repl) return tl::unexpected(repl.error());
  repl_ = interruptible(std::move(*repl));
  return ok();
}

Status PostgresSource::create_slot_and_snapshot() {
  std::string command = create_slot_command(repl_.quote_identifier(options_.slot),
                                            options_.initial_snapshot, server_version_);
  auto created = repl_.exec(command);
  if (!created) {
    return tl::unexpected(
        with_context(created.error(), "cannot create replication slot \"" + options_.slot + "\""));
  }
  PGresult* row = created->get();
  auto consistent = parse_lsn(PQgetvalue(row, 0, 1));
  log_->info("postgres source {}: created replication slot {} at lsn {}", context_.name,
             options_.slot, describe_pg_lsn(consistent.value_or(0)));
  if (!options_.initial_snapshot) return ok();
  if (!consistent || *consistent == 0) return fail("unexpected CREATE_REPLICATION_SLOT result");

  auto snapshot_conn = PgConnection::connect(options_.dsn, source_overrides(options_.dsn));
  if (!snapshot_conn) return tl::unexpected(snapshot_conn.error());
  snapshot_conn->set_interrupt(&interrupted_);
  auto began = snapshot_conn->exec(
      "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT " +
      snapshot_conn->quote_literal(PQgetvalue(row, 0, 2)));
  if (!began) return tl::unexpected(with_context(began.error(), "importing the slot snapshot"));
  auto tables = published_tables(*snapshot_conn);
  if (!tables) return tl::unexpected(tables.error());
  // Rows of the snapshot sort just before the first transaction the slot will stream.
  snapshot_position_ = {*consistent - 1, now_unix_us(), database_};
  auto counter = [this](const std::string& table) -> prometheus::Counter* {
    if (!snapshot_rows_) return nullptr;
    return &snapshot_rows_->Add({{"source", context_.name}, {"table", table}});
  };
  log_->info("postgres source {}: initial snapshot of {} tables at lsn {}", context_.name,
             tables->size(), describe_pg_lsn(*consistent));
  snapshot_ = std::make_unique<SnapshotReader>(std::move(*snapshot_conn), std::move(*tables),
                                               snapshot_position_, log_, counter);
  return ok();
}

Result<std::vector<SnapshotTable>> PostgresSource::published_tables(PgConnection& conn) {
  auto result = conn.exec_params(
      "SELECT c.oid, p.schemaname, p.tablename FROM pg_publication_tables p "
      "JOIN pg_namespace n ON n.nspname = p.schemaname "
      "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename "
      "WHERE p.pubname = $1 ORDER BY 2, 3",
      {options_.publication});
  if (!result) return tl::unexpected(result.error());
  std::vector<SnapshotTable> tables;
  for (int i = 0; i < PQntuples(result->get()); ++i) {
    tables.push_back(SnapshotTable{
        static_cast<std::uint32_t>(std::strtoul(PQgetvalue(result->get(), i, 0), nullptr, 10)),
        PQgetvalue(result->get(), i, 1), PQgetvalue(result->get(), i, 2)});
  }
  return tables;
}

Status PostgresSource::start_streaming(bool slot_busy_is_permanent) {
  std::string command =
      start_replication_command(repl_.quote_identifier(options_.slot),
                                publication_names_literal(options_.publication), server_version_);
  PgResult result(PQexec(repl_.get(), command.c_str()));
  if (PQresultStatus(result.get()) != PGRES_COPY_BOTH) {
    Error error = statement_error(repl_.get(), result.get(), "START_REPLICATION failed");
    std::string state = sqlstate(result.get());
    // 55006: another walsender holds the slot. At start-up that is a second reader (we waited
    // for a vanished one in check_slot); after a dropped connection it is our old walsender,
    // which lets go in a moment.
    if (state == "55006") error.retryable = !slot_busy_is_permanent;
    return tl::unexpected(error);
  }
  streaming_ = true;
  auto now = Clock::now();
  next_status_ = now + options_.status_interval;
  next_monitor_ = now;
  last_activity_ = now;
  return ok();
}

Result<PgConnection*> PostgresSource::sql() {
  if (!sql_.ok()) {
    auto conn = PgConnection::connect(options_.dsn, source_overrides(options_.dsn));
    if (!conn) return tl::unexpected(conn.error());
    sql_ = interruptible(std::move(*conn));
  }
  return &sql_;
}

PgConnection PostgresSource::interruptible(PgConnection conn) {
  conn.set_interrupt(&interrupted_);
  return conn;
}

// ---------------------------------------------------------------------------------------------
// poll()

Result<PollOutcome> PostgresSource::poll(Emitter& out, Deadline deadline) {
  if (snapshot_) return poll_snapshot(out, deadline);
  if (!streaming_) return poll_disconnected(out, deadline);
  return poll_stream(out, deadline);
}

Result<PollOutcome> PostgresSource::poll_snapshot(Emitter& out, Deadline deadline) {
  // A long snapshot keeps the lag and slot metrics current (the stream is not started yet).
  if (auto now = Clock::now(); now >= next_monitor_) {
    monitor();
    next_monitor_ = now + options_.status_interval;
  }
  auto done = snapshot_->step(out, deadline);
  if (!done) {
    snapshot_.reset();
    // The exported snapshot died with its transaction; the next start takes a new one.
    return fail("initial snapshot failed (it is taken again when cdcd restarts): " +
                done.error().message);
  }
  if (!*done) return PollOutcome::kMore;
  snapshot_.reset();
  out.emit(TransactionEnd{snapshot_position_.lsn, 0, snapshot_position_.timestamp_us});
  next_lsn_ = snapshot_position_.lsn + 1;
  if (context_.metrics.read_lsn) {
    context_.metrics.read_lsn->Set(static_cast<double>(snapshot_position_.lsn));
  }
  if (auto started = start_streaming(false); !started) return disconnected(started.error());
  return PollOutcome::kMore;
}

Result<PollOutcome> PostgresSource::poll_disconnected(Emitter& out, Deadline deadline) {
  if (pending_.active) {
    // Already received in full: deliver it while the connection is down.
    auto done = emit_pending(out);
    if (!done) return tl::unexpected(done.error());
    if (!*done) return PollOutcome::kMore;
  }
  auto now = Clock::now();
  if (now < next_reconnect_) {
    std::this_thread::sleep_until(std::min<Clock::time_point>(deadline, next_reconnect_));
    if (Clock::now() < next_reconnect_) {
      return fail_retryable("disconnected from " + where_ + ": " + last_error_);
    }
  }
  if (auto conn = sql(); !conn) return disconnected(conn.error());
  if (auto connected = connect_replication(); !connected) return disconnected(connected.error());
  if (auto started = start_streaming(false); !started) return disconnected(started.error());
  backoff_ = std::chrono::milliseconds(0);
  connected_ = true;
  if (context_.metrics.reconnects) context_.metrics.reconnects->Increment();
  log_->info("postgres source {}: reconnected to {}, streaming from slot {}", context_.name, where_,
             options_.slot);
  return poll_stream(out, deadline);
}

Result<PollOutcome> PostgresSource::disconnected(const Error& error) {
  streaming_ = false;
  connected_ = false;
  repl_.close();
  if (in_transaction_) buffer_.clear();
  in_transaction_ = false;
  last_error_ = error.message;
  if (!error.retryable) {
    log_->error("postgres source {}: {}", context_.name, error.message);
    return tl::unexpected(error);
  }
  backoff_ = backoff_.count() == 0 ? kFirstBackoff : std::min(backoff_ * 2, kMaxBackoff);
  // Full jitter over the upper half, so that many sources do not reconnect in lock step.
  std::uniform_int_distribution<long> spread(backoff_.count() / 2, backoff_.count());
  auto wait = std::chrono::milliseconds(spread(jitter_));
  next_reconnect_ = Clock::now() + wait;
  log_->warn("postgres source {}: {}; reconnecting in {} ms", context_.name, error.message,
             wait.count());
  return fail_retryable("disconnected from " + where_ + ": " + error.message);
}

Result<PollOutcome> PostgresSource::poll_stream(Emitter& out, Deadline deadline) {
  PGconn* conn = repl_.get();
  std::optional<Clock::time_point> hand_over_at;  // set once something was emitted
  while (true) {
    auto now = Clock::now();
    if (auto maintained = maintain(now); !maintained) return disconnected(maintained.error());
    if (pending_.active) {
      auto done = emit_pending(out);
      if (!done) return tl::unexpected(done.error());
      if (!*done) return PollOutcome::kMore;
      if (!hand_over_at) hand_over_at = now + kHandOverLinger;
    }
    // What was emitted reaches the pipeline only when poll() returns: return within a moment of
    // the first emission, so that commit-to-sink latency does not depend on the deadline.
    if (!out.wants_more() || now >= deadline || (hand_over_at && now >= *hand_over_at)) {
      return PollOutcome::kMore;
    }

    char* data = nullptr;
    int length = PQgetCopyData(conn, &data, 1);
    if (length > 0) {
      Status handled = handle_copy_data(std::string_view(data, static_cast<std::size_t>(length)));
      PQfreemem(data);
      if (!handled) return disconnected(handled.error());
      continue;
    }
    if (length == 0) {
      // Caught up: what was emitted goes to the pipeline now rather than after the linger.
      if (hand_over_at) return PollOutcome::kMore;
      auto until = std::min({deadline, next_status_, next_monitor_});
      auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count();
      pollfd fd{PQsocket(conn), POLLIN, 0};
      int ready = ::poll(&fd, 1, static_cast<int>(std::clamp<long>(timeout + 1, 0, 1000)));
      // The walsender sends every message as its own small packet; reading the moment the first
      // one lands costs a wake-up per message. A short pause lets a few arrive together.
      if (ready > 0) std::this_thread::sleep_for(kReadCoalescing);
      if (PQconsumeInput(conn) == 0) {
        return disconnected(
            Error{"replication connection lost: " + std::string(PQerrorMessage(conn)), true});
      }
      continue;
    }
    // -1: the server ended the COPY (it is shutting down); -2: the connection broke.
    std::string message = PQerrorMessage(conn);
    if (length == -1) {
      PgResult end(PQgetResult(conn));
      message = statement_error(conn, end.get(), "replication stream ended").message;
    }
    while (message.ends_with('\n')) message.pop_back();
    return disconnected(Error{message.empty() ? "replication stream ended" : message, true});
  }
}

Status PostgresSource::handle_copy_data(std::string_view data) {
  if (data[0] == 'w') {
    auto xlog = parse_xlog_data(data);
    if (!xlog || xlog->message.empty()) return fail("malformed XLogData message");
    received_lsn_ = std::max(received_lsn_, xlog->start_lsn);
    if (xlog->wal_end > head_lsn_.load(std::memory_order_relaxed)) {
      head_lsn_.store(xlog->wal_end, std::memory_order_relaxed);
    }
    message_lsn_ = xlog->start_lsn;
    return handle_message(xlog->message);
  }
  if (data[0] == 'k') {
    auto keepalive = parse_keepalive(data);
    if (!keepalive) return fail("malformed keepalive message");
    if (keepalive->wal_end > head_lsn_.load(std::memory_order_relaxed)) {
      head_lsn_.store(keepalive->wal_end, std::memory_order_relaxed);
    }
    if (keepalive->reply_requested) return send_status(false);
    return ok();
  }
  return ok();
}

Status PostgresSource::handle_message(std::string_view message) {
  switch (message[0]) {
    case 'B': {
      auto begin = parse_begin(message);
      if (!begin) return fail("malformed pgoutput Begin message");
      in_transaction_ = true;
      begin_xid_ = begin->xid;
      begin_lsn_ = message_lsn_;
      buffer_.clear();
      return ok();
    }
    case 'C': {
      auto commit = parse_commit(message);
      if (!commit || !in_transaction_) return fail("unexpected pgoutput Commit message");
      in_transaction_ = false;
      if (auto finished = buffer_.finish(); !finished) return finished;
      pending_ = PendingTransaction{true,
                                    commit->commit_lsn < next_lsn_,
                                    commit->commit_lsn,
                                    commit->commit_time + kPostgresEpochUnixUs,
                                    begin_xid_,
                                    begin_lsn_,
                                    0};
      last_activity_ = Clock::now();
      if (buffer_.spilled()) {
        log_->info("postgres source {}: transaction {} ({} messages, {} bytes) was spilled to disk",
                   context_.name, begin_xid_, buffer_.messages(), buffer_.bytes());
      }
      return ok();
    }
    case 'M':  // logical decoding messages (our heartbeats among them) carry no row change
    case 'O':  // origin of a replicated transaction
      return ok();
    case 'R':
    case 'Y':
    case 'I':
    case 'U':
    case 'D':
    case 'T':
      if (!in_transaction_) {
        return fail(std::string("pgoutput message '") + message[0] + "' outside a transaction");
      }
      return buffer_.append(message, message_lsn_);
    default:
      return fail(std::string("unexpected pgoutput message type '") + message[0] + "'");
  }
}

Result<bool> PostgresSource::emit_pending(Emitter& out) {
  const bool skip = pending_.skip;
  while (true) {
    if (!skip && !out.wants_more()) return false;
    std::string_view message;
    if (undecoded_) {
      message = *undecoded_;
    } else {
      auto next = buffer_.next();
      if (!next) return tl::unexpected(next.error());
      message = *next;
    }
    if (message.empty()) break;
    decoded_.clear();
    if (auto decoded = decoder_.decode(message, !skip, decoded_); !decoded) {
      // A catalog lookup that failed for now (lost connection): the same message is decoded again
      // at the next poll, so that no change is lost or delivered twice.
      if (decoded.error().retryable && !undecoded_) undecoded_ = std::string(message);
      return tl::unexpected(
          with_context(decoded.error(), "decoding transaction " + std::to_string(pending_.xid)));
    }
    undecoded_.reset();
    for (Change& change : decoded_) {
      change.lsn = pending_.lsn;
      change.seq = pending_.seq++;
      change.timestamp_us = pending_.timestamp_us;
      change.txid = pending_.xid;
      change.source = database_;
      change.event_lsn = buffer_.lsn();
      change.begin_lsn = pending_.begin_lsn;
      change.previous_commit_lsn = next_lsn_ > 0 ? next_lsn_ - 1 : 0;
      out.emit(std::move(change));
    }
  }
  if (!skip) {
    out.emit(TransactionEnd{pending_.lsn, 0, pending_.timestamp_us});
    next_lsn_ = pending_.lsn + 1;
    if (context_.metrics.read_lsn) {
      context_.metrics.read_lsn->Set(static_cast<double>(pending_.lsn));
    }
  }
  pending_.active = false;
  buffer_.clear();
  return true;
}

// ---------------------------------------------------------------------------------------------
// Feedback, metrics, heartbeats

Status PostgresSource::maintain(Clock::time_point now) {
  if (committed_lsn_.load() > sent_flush_lsn_ || now >= next_status_) {
    if (auto sent = send_status(false); !sent) return sent;
  }
  if (now >= next_monitor_) {
    monitor();
    auto interval = options_.status_interval;
    if (options_.heartbeat.count() > 0) interval = std::min(interval, options_.heartbeat);
    next_monitor_ = Clock::now() + interval;
  }
  return ok();
}

Status PostgresSource::send_status(bool reply_requested) {
  std::uint64_t flush = committed_lsn_.load();
  std::string message = standby_status_update(std::max(received_lsn_, flush), flush, flush,
                                              now_unix_us(), reply_requested);
  if (PQputCopyData(repl_.get(), message.data(), static_cast<int>(message.size())) != 1 ||
      PQflush(repl_.get()) != 0) {
    return fail_retryable("cannot send a standby status update: " +
                          std::string(PQerrorMessage(repl_.get())));
  }
  sent_flush_lsn_ = flush;
  next_status_ = Clock::now() + options_.status_interval;
  return ok();
}

void PostgresSource::monitor() {
  if (interrupted_) return;
  auto now = Clock::now();
  auto conn = sql();
  Status status = ok();
  if (!conn) {
    status = tl::unexpected(conn.error());
  } else {
    auto result = (*conn)->exec_params(
        "SELECT pg_current_wal_lsn()::text, (SELECT (pg_current_wal_lsn() - restart_lsn)::bigint "
        "FROM pg_replication_slots WHERE slot_name = $1)",
        {options_.slot});
    if (!result) {
      status = tl::unexpected(result.error());
    } else {
      if (auto head = parse_lsn(first_value(result->get()).value_or(""))) {
        if (*head > head_lsn_.load()) head_lsn_.store(*head);
      }
      if (retained_wal_ && !PQgetisnull(result->get(), 0, 1)) {
        retained_wal_->Set(std::strtod(PQgetvalue(result->get(), 0, 1), nullptr));
      }
    }
    if (status && slot_budget_) status = slot_budget_->refresh(**conn, options_.slot);
    // An idle database with busy neighbours would pin WAL: a tiny transaction of our own lets
    // the slot's confirmed position move forward once it is delivered and checkpointed.
    if (status && options_.heartbeat.count() > 0 && now - last_activity_ >= options_.heartbeat) {
      auto beat = (*conn)->exec(std::string("SELECT pg_logical_emit_message(true, '") +
                                kHeartbeatPrefix + "', '')");
      if (!beat) status = tl::unexpected(beat.error());
      last_activity_ = now;
    }
  }
  if (context_.metrics.head_lsn) {
    context_.metrics.head_lsn->Set(static_cast<double>(head_lsn_.load()));
  }
  if (!status && now >= next_monitor_warning_) {
    log_->warn("postgres source {}: monitoring query failed: {}", context_.name,
               status.error().message);
    next_monitor_warning_ = now + std::chrono::minutes(1);
  }
}

void PostgresSource::commit(std::uint64_t lsn) {
  std::uint64_t current = committed_lsn_.load();
  while (lsn > current && !committed_lsn_.compare_exchange_weak(current, lsn)) {
  }
}

void PostgresSource::stop() {
  if (streaming_) (void)send_status(false);
  streaming_ = false;
  connected_ = false;
  snapshot_.reset();
  repl_.close();
  sql_.close();
}

std::uint64_t PostgresSource::bytes_behind(std::uint64_t lsn, std::uint64_t /*offset*/) const {
  std::uint64_t head = head_lsn_.load();
  return head > lsn ? head - lsn : 0;
}

}  // namespace cdcd::postgres
