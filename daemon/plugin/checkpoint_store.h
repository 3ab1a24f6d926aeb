#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "daemon/core/result.h"
#include "daemon/plugin/checkpoint.h"

namespace cdcd {

// A table (or other entity) the store writes to, named as a source's changes name it: `source` and
// `entity` as in Change (PostgreSQL: the database and "schema.table").
struct StoreEntity {
  std::string source;
  std::string entity;
};

struct CheckpointStoreContext {
  std::shared_ptr<spdlog::logger> log;
};

// Durable per-consumer positions. Thread-safe: consumers save concurrently.
class CheckpointStore {
 public:
  virtual ~CheckpointStore() = default;

  // Opens the store (creates its directory or table). No I/O happens before this.
  virtual Status start() = 0;

  // The consumer's checkpoint, or nullopt when it has none yet.
  virtual Result<std::optional<Checkpoint>> load(const std::string& consumer) = 0;

  // Durable when it returns OK: a crash right after never loses it, and never leaves a torn one.
  virtual Status save(const std::string& consumer, const Checkpoint& checkpoint) = 0;

  // Forgets the consumer's checkpoint (it will start according to its `start` setting).
  virtual Status remove(const std::string& consumer) = 0;

  // What the store writes to, when a source may capture it (a table in a database that a
  // PostgreSQL source replicates FOR ALL TABLES): the runtime never delivers those changes, so a
  // save is never a change that causes another save. Known after start().
  virtual std::vector<StoreEntity> own_entities() const { return {}; }
};

}  // namespace cdcd
