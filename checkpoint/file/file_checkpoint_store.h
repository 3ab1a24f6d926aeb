#pragma once

#include <memory>
#include <optional>
#include <string>

#include <spdlog/logger.h>

#include "daemon/core/result.h"
#include "daemon/plugin/checkpoint_store.h"
#include "daemon/plugin/registry.h"

namespace cdcd {

// `checkpoints: {type: file, dir: DIR}`: one JSON file per consumer, DIR/<consumer>.json, replaced
// atomically (temp file, fsync, rename, fsync of DIR), so that a crash at any moment leaves either
// the previous checkpoint or the new one, never a torn file. A relative DIR is relative to the
// daemon's working directory.
//
// One process at a time: start() takes an exclusive flock(2) on DIR/.lock, held until the store
// is destroyed (the kernel releases it when the process dies, so a crash never leaves it behind).
// A second daemon, or `cdcd checkpoint set|reset` while a daemon runs, is refused and told the
// holder's pid, which the holder writes into the lock file.
class FileCheckpointStore : public CheckpointStore {
 public:
  FileCheckpointStore(std::string dir, std::shared_ptr<spdlog::logger> log);
  ~FileCheckpointStore() override;
  FileCheckpointStore(const FileCheckpointStore&) = delete;
  FileCheckpointStore& operator=(const FileCheckpointStore&) = delete;

  // Creates DIR (with its parents), takes its lock (a permanent error when another process holds
  // it), and deletes the temp files a crash left behind.
  Status start() override;
  // nullopt when the consumer has no file; an error naming the file when it cannot be read or
  // parsed (a damaged checkpoint is never mistaken for "start from scratch").
  Result<std::optional<Checkpoint>> load(const std::string& consumer) override;
  // Writes `checkpoint` with saved_at_us set to the current time.
  Status save(const std::string& consumer, const Checkpoint& checkpoint) override;
  Status remove(const std::string& consumer) override;

  // DIR/<consumer>.json
  std::string path_of(const std::string& consumer) const;

 private:
  Status sync_dir() const;
  Status lock_dir();

  std::string dir_;
  int lock_fd_ = -1;
  std::shared_ptr<spdlog::logger> log_;
};

void register_checkpoint_file(PluginRegistry& registry);

}  // namespace cdcd
