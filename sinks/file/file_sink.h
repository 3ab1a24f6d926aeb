#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>

#include "daemon/format/format.h"
#include "daemon/plugin/sink.h"

namespace cdcd {

enum class FsyncPolicy { kAlways, kInterval, kNever };

struct FileSinkOptions {
  std::string path;
  Format format = Format::kNative;
  FsyncPolicy fsync = FsyncPolicy::kInterval;
  std::chrono::milliseconds fsync_interval{1000};
};

// `type: file`: appends one line per change. A batch is acknowledged once written to the file (and
// fsynced first with `fsync: always`). Write errors (disk full, I/O error) are retried with
// backoff, resuming after the bytes already written, so a line is never torn or doubled; the
// consumer meanwhile waits (backpressure).
class FileSink : public Sink {
 public:
  FileSink(FileSinkOptions options, SinkContext context);
  ~FileSink() override;

  Status start() override;
  void write(BatchPtr batch, AckFn ack) override;
  Status flush(Deadline deadline) override;
  void stop() override;
  bool healthy() const override { return !retrying_.load(); }

 private:
  Status drop_partial_last_line();
  Status write_once(const std::string& data, std::size_t& done);
  Status sync_locked();

  const FileSinkOptions options_;
  SinkContext context_;
  std::mutex mutex_;
  int fd_ = -1;
  bool dirty_ = false;
  std::chrono::steady_clock::time_point last_sync_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> retrying_{false};
};

}  // namespace cdcd
