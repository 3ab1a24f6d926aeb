#pragma once

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "daemon/format/debezium_transactions.h"
#include "daemon/format/format.h"
#include "daemon/plugin/sink.h"
#include "sinks/common/pending_writes.h"

namespace cdcd {

enum class FsyncPolicy { kAlways, kInterval, kNever };

struct FileSinkOptions {
  std::string path;
  Format format = Format::kNative;
  DebeziumOptions debezium;
  FsyncPolicy fsync = FsyncPolicy::kInterval;
  std::chrono::milliseconds fsync_interval{1000};
  // How the file is synced: fdatasync(2); tests substitute a failing or counting function.
  int (*sync_file)(int fd) = ::fdatasync;
};

// `type: file`: appends one line per change (see docs/sinks/file.md). A batch is acknowledged once
// written to the file (and fsynced first with `fsync: always`); with `fsync: interval` a timer
// syncs written data at most `fsync_interval` later, also when no more writes come. Write errors
// (disk full, I/O error) are retried with backoff, resuming after the bytes already written, so a
// line is never torn or doubled; the consumer meanwhile waits (backpressure). A failed fsync fails
// the sink for good.
class FileSink : public Sink {
 public:
  FileSink(FileSinkOptions options, SinkContext context);
  ~FileSink() override;
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;

  Status start() override;
  void write(BatchPtr batch, AckFn ack) override;
  Status flush(Deadline deadline) override;
  void stop() override;
  bool healthy() const override { return !retrying_ && !failed_; }
  bool tracks_transactions() const override;

 private:
  Status drop_partial_last_line();
  Status write_once(const std::string& data, std::size_t& done);
  Status sync_locked();
  bool interval_elapsed_locked() const;
  // Sleeps for `wait` unless stop() is called first; returns whether the sink is stopping.
  bool sleep_unless_stopping(std::chrono::milliseconds wait);
  void sync_periodically();
  void shutdown();

  const FileSinkOptions options_;
  DebeziumTransactionsByConsumer transactions_;
  SinkContext context_;
  // Held by write() from its first byte to its ack: lines of concurrent writers never interleave.
  std::timed_mutex mutex_;
  int fd_ = -1;
  // Written since the last successful sync (lsns of its first and last change, for the error
  // message of a failed sync).
  bool dirty_ = false;
  std::uint64_t first_unsynced_lsn_ = 0;
  std::uint64_t last_unsynced_lsn_ = 0;
  std::chrono::steady_clock::time_point last_sync_;
  // Set for good by a failed fsync: every later write fails with it.
  std::optional<Error> failure_;

  PendingWrites pending_;
  std::thread syncer_;
  std::mutex wake_mutex_;
  std::condition_variable wake_;
  std::once_flag stop_once_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> retrying_{false};
  std::atomic<bool> failed_{false};
};

}  // namespace cdcd
