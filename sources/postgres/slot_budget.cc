#include "sources/postgres/slot_budget.h"

#include <cmath>
#include <cstdlib>

namespace cdcd::postgres {

namespace {

// pg_replication_slots.wal_status values (PostgreSQL 13+): one series each, 1 for the current one,
// so that a rule can select a state without knowing the others.
constexpr const char* kWalStatuses[] = {"reserved", "extended", "unreserved", "lost"};

prometheus::Gauge& gauge(prometheus::Registry& registry, const std::string& name,
                         const std::string& help, const std::string& source) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add(
      {{"source", source}});
}

}  // namespace

SlotBudgetMetrics::SlotBudgetMetrics(prometheus::Registry& registry, const std::string& source)
    : max_keep_bytes_(gauge(registry, "cdcd_postgres_slot_max_wal_keep_bytes",
                            "The server's max_slot_wal_keep_size in bytes: the most WAL a "
                            "replication slot may keep; -1 when unlimited.",
                            source)),
      safe_bytes_(gauge(registry, "cdcd_postgres_slot_safe_wal_bytes",
                        "WAL bytes that can still be written before the slot is in danger of "
                        "being lost (pg_replication_slots.safe_wal_size); NaN when unlimited.",
                        source)),
      active_(gauge(registry, "cdcd_postgres_slot_active",
                    "1 when a reader (this cdcd) is connected to the replication slot.", source)),
      wal_status_family_(prometheus::BuildGauge()
                             .Name("cdcd_postgres_slot_wal_status")
                             .Help("1 for the slot's current wal_status (reserved, extended, "
                                   "unreserved: WAL past the budget, lost), 0 for the others.")
                             .Register(registry)),
      source_(source) {
  safe_bytes_.Set(std::nan(""));
  for (const char* status : kWalStatuses) {
    wal_status_family_.Add({{"source", source_}, {"status", status}});
  }
}

Status SlotBudgetMetrics::refresh(PgConnection& conn, const std::string& slot) {
  auto result = conn.exec_params(
      "SELECT active, wal_status, safe_wal_size, "
      "pg_size_bytes(current_setting('max_slot_wal_keep_size')) "
      "FROM pg_replication_slots WHERE slot_name = $1",
      {slot});
  if (!result) return tl::unexpected(result.error());
  const PGresult* rows = result->get();
  if (PQntuples(rows) != 1) return ok();
  active_.Set(std::string(PQgetvalue(rows, 0, 0)) == "t" ? 1 : 0);
  const std::string status = PQgetisnull(rows, 0, 1) ? "" : PQgetvalue(rows, 0, 1);
  for (const char* known : kWalStatuses) {
    wal_status_family_.Add({{"source", source_}, {"status", known}}).Set(status == known ? 1 : 0);
  }
  safe_bytes_.Set(PQgetisnull(rows, 0, 2) ? std::nan("")
                                          : std::strtod(PQgetvalue(rows, 0, 2), nullptr));
  max_keep_bytes_.Set(std::strtod(PQgetvalue(rows, 0, 3), nullptr));
  return ok();
}

}  // namespace cdcd::postgres
