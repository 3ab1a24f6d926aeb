#pragma once

#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>

#include "daemon/format/debezium_options.h"
#include "daemon/format/debezium_transactions.h"
#include "daemon/format/format.h"
#include "daemon/plugin/sink.h"
#include "sinks/common/pending_writes.h"

namespace cdcd {

// `type: stdout`: writes each change as one line on standard output (logs go to stderr). A batch is
// acknowledged once all its lines were written, before write() returns. A full pipe blocks the
// writer (backpressure) until the reader catches up or stop() is called.
class StdoutSink : public Sink {
 public:
  // `fd` is standard output except in tests; the sink does not own it.
  StdoutSink(SinkFormat format, SinkContext context, int fd = STDOUT_FILENO);
  ~StdoutSink() override;
  StdoutSink(const StdoutSink&) = delete;
  StdoutSink& operator=(const StdoutSink&) = delete;

  Status start() override;
  void write(BatchPtr batch, AckFn ack) override;
  Status flush(Deadline deadline) override;
  void stop() override;
  bool healthy() const override { return !failed_; }
  bool tracks_transactions() const override;

 private:
  Status write_all(const std::string& data);
  // Waits until `fd_` takes more bytes or stop() is called; false once stopped.
  Result<bool> wait_writable();

  const SinkFormat format_;
  DebeziumTransactionsByConsumer transactions_;
  SinkContext context_;
  const int fd_;
  // Pipes and sockets are written a PIPE_BUF at a time after poll() said there is room, so that a
  // reader that stops reading cannot keep write() blocked beyond stop().
  bool chunked_ = false;
  // Written by stop() to wake a writer waiting for room.
  int wake_read_ = -1;
  int wake_write_ = -1;
  std::mutex mutex_;
  PendingWrites pending_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> failed_{false};
};

}  // namespace cdcd
