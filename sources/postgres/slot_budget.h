#pragma once

#include <string>

#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "daemon/core/result.h"
#include "sources/postgres/pg_connection.h"

namespace cdcd::postgres {

// The replication slot's WAL budget, as the server sees it, so that alert rules need no hard-coded
// sizes: how much WAL the server lets a slot keep (max_slot_wal_keep_size), how much may still be
// written before the slot is lost (safe_wal_size), its wal_status and whether a reader holds it.
class SlotBudgetMetrics {
 public:
  SlotBudgetMetrics(prometheus::Registry& registry, const std::string& source);

  // Reads the slot's row of pg_replication_slots over `conn` (not the replication connection)
  // and sets the gauges; a missing slot leaves them as they were.
  Status refresh(PgConnection& conn, const std::string& slot);

 private:
  prometheus::Gauge& max_keep_bytes_;
  prometheus::Gauge& safe_bytes_;
  prometheus::Gauge& active_;
  prometheus::Family<prometheus::Gauge>& wal_status_family_;
  std::string source_;
};

}  // namespace cdcd::postgres
