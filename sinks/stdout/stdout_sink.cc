#include "sinks/stdout/stdout_sink.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "daemon/format/batch_lines.h"
#include "daemon/plugin/registry.h"

namespace cdcd {

namespace {

std::string errno_text(const char* what) {
  return std::string(what) + " standard output: " + std::strerror(errno);
}

}  // namespace

StdoutSink::StdoutSink(SinkFormat format, SinkContext context, int fd)
    : format_(std::move(format)), context_(std::move(context)), fd_(fd) {}

bool StdoutSink::tracks_transactions() const {
  return format_.format == Format::kDebezium && format_.debezium.transaction_metadata;
}

StdoutSink::~StdoutSink() {
  stop();
  if (wake_read_ >= 0) ::close(wake_read_);
  if (wake_write_ >= 0) ::close(wake_write_);
}

Status StdoutSink::start() {
  struct stat info {};
  if (::fstat(fd_, &info) != 0) return fail(errno_text("checking"));
  chunked_ = S_ISFIFO(info.st_mode) || S_ISSOCK(info.st_mode);
  int wake[2];
  if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) return fail(errno_text("preparing"));
  wake_read_ = wake[0];
  wake_write_ = wake[1];
  return ok();
}

void StdoutSink::write(BatchPtr batch, AckFn ack) {
  PendingWrites::Guard pending(pending_);
  auto not_running = [&] {
    ack(DeliveryReport{Error{"stdout sink " + context_.name + " is not running", false}, {}});
  };
  if (stopping_ || wake_read_ < 0) return not_running();
  std::string lines;
  encode_batch_lines(format_.format, *batch, lines, &format_.debezium,
                     tracks_transactions() ? &transactions_.of(batch->consumer) : nullptr);
  std::lock_guard lock(mutex_);
  if (stopping_) return not_running();
  if (auto written = write_all(lines); !written) {
    if (!stopping_) {
      context_.metrics.errors->Increment();
      failed_ = true;
    }
    ack(DeliveryReport{written.error(), {}});
    return;
  }
  ack(DeliveryReport{});
}

// A closed or broken stdout does not come back: fail rather than retry.
Status StdoutSink::write_all(const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    std::size_t chunk = data.size() - done;
    if (chunked_) {
      auto writable = wait_writable();
      if (!writable) return tl::unexpected(writable.error());
      if (!*writable) {
        return fail("stdout sink " + context_.name + " stopped while standard output was full");
      }
      // Room for PIPE_BUF bytes at least: a write of no more than that does not block.
      chunk = std::min<std::size_t>(chunk, PIPE_BUF);
    }
    ssize_t n = ::write(fd_, data.data() + done, chunk);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return fail(errno_text("writing to"));
    }
    done += static_cast<std::size_t>(n);
  }
  return ok();
}

Result<bool> StdoutSink::wait_writable() {
  pollfd fds[2] = {{fd_, POLLOUT, 0}, {wake_read_, POLLIN, 0}};
  while (!stopping_) {
    int ready = ::poll(fds, 2, -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return fail(errno_text("waiting for"));
    }
    if (fds[1].revents != 0) break;
    // POLLERR (the reader is gone) is left to write() to report as EPIPE.
    if (fds[0].revents != 0) return true;
  }
  return false;
}

Status StdoutSink::flush(Deadline deadline) {
  if (pending_.wait_idle(deadline)) return ok();
  return fail_retryable("stdout sink " + context_.name +
                        ": a write is still waiting for standard output to take it");
}

void StdoutSink::stop() {
  if (stopping_.exchange(true)) return;
  if (wake_write_ >= 0) {
    char byte = 0;
    (void)!::write(wake_write_, &byte, 1);
  }
  // Every write() has acknowledged when stop() returns.
  pending_.wait_idle();
}

void register_sink_stdout(PluginRegistry& registry) {
  registry.add_sink("stdout", [](config::Node& options, const SinkContext& context) {
    auto errors = options.diagnostics().items().size();
    auto format = parse_sink_format(options, Format::kNative);
    options.check_unknown_keys();
    if (!format || options.diagnostics().items().size() != errors) return std::unique_ptr<Sink>();
    return std::unique_ptr<Sink>(std::make_unique<StdoutSink>(std::move(*format), context));
  });
}

}  // namespace cdcd
