#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "daemon/plugin/checkpoint_store.h"
#include "sources/postgres/pg_connection.h"

namespace cdcd::postgres {

struct PostgresCheckpointStoreOptions {
  std::string dsn;
  std::string table = "cdcd_checkpoints";  // "name" or "schema.name"
};

// `checkpoints: {type: postgres}`: one row per consumer in a table of the given database. Each
// save is an UPSERT in its own transaction committed with synchronous_commit on, so it is durable
// when save() returns even on a server that runs with synchronous_commit off. Thread-safe: one
// connection under a mutex, reconnected once when it was lost.
class PostgresCheckpointStore : public CheckpointStore {
 public:
  PostgresCheckpointStore(PostgresCheckpointStoreOptions options, CheckpointStoreContext context);

  Status start() override;
  Result<std::optional<Checkpoint>> load(const std::string& consumer) override;
  Status save(const std::string& consumer, const Checkpoint& checkpoint) override;
  Status remove(const std::string& consumer) override;
  std::vector<StoreEntity> own_entities() const override { return own_entities_; }

 private:
  using Statement = std::function<Result<PgResult>(PgConnection&)>;
  // Runs `statement`, reconnecting and running it once more if the connection was lost.
  Result<PgResult> run(const Statement& statement);
  Status connect();
  // connect(), then the table's advisory lock: the connection is dropped again if another
  // session holds it.
  Status connect_and_lock();
  Status lock_table();

  PostgresCheckpointStoreOptions options_;
  CheckpointStoreContext context_;
  std::mutex mutex_;
  PgConnection conn_;
  std::string table_sql_;                  // quoted identifier(s)
  std::vector<StoreEntity> own_entities_;  // the table, as the postgres source names it
};

}  // namespace cdcd::postgres
