#pragma once

#include <memory>
#include <optional>
#include <string>

#include <spdlog/logger.h>

#include "daemon/core/result.h"
#include "daemon/plugin/checkpoint.h"

namespace cdcd {

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
};

}  // namespace cdcd
