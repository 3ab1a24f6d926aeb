#include "sinks/file/file_sink.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <thread>

#include "daemon/core/backoff.h"
#include "daemon/format/batch_lines.h"
#include "daemon/format/debezium_options.h"
#include "daemon/plugin/registry.h"

namespace cdcd {

namespace {

std::string errno_text(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

}  // namespace

FileSink::FileSink(FileSinkOptions options, SinkContext context)
    : options_(std::move(options)), context_(std::move(context)) {}

FileSink::~FileSink() { stop(); }

Status FileSink::start() {
  std::error_code error;
  auto parent = std::filesystem::path(options_.path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, error);
  if (error) return fail("creating directory " + parent.string() + ": " + error.message());
  std::lock_guard lock(mutex_);
  if (stopping_) return fail("file sink " + context_.name + " is stopped");
  fd_ = ::open(options_.path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) return fail(errno_text("opening", options_.path));
  last_sync_ = std::chrono::steady_clock::now();
  if (auto trimmed = drop_partial_last_line(); !trimmed) return trimmed;
  if (options_.fsync == FsyncPolicy::kInterval) {
    syncer_ = std::thread([this] { sync_periodically(); });
  }
  return ok();
}

Status FileSink::drop_partial_last_line() {
  // A crash in the middle of write() leaves part of a line that was never acknowledged; the
  // consumer delivers it again from its checkpoint, and appending after the fragment would make
  // one corrupt line of the two.
  struct stat info {};
  if (::fstat(fd_, &info) != 0) return fail(errno_text("stat of", options_.path));
  off_t end = info.st_size;
  off_t keep = end;
  char buffer[64 * 1024];
  while (keep > 0) {
    off_t start = std::max<off_t>(0, keep - static_cast<off_t>(sizeof buffer));
    ssize_t n = ::pread(fd_, buffer, static_cast<std::size_t>(keep - start), start);
    if (n < 0) return fail(errno_text("reading", options_.path));
    const char* newline =
        static_cast<const char*>(memrchr(buffer, '\n', static_cast<std::size_t>(n)));
    if (newline != nullptr) {
      keep = start + (newline - buffer) + 1;
      break;
    }
    keep = start;
  }
  if (keep == end) return ok();
  if (::ftruncate(fd_, keep) != 0) return fail(errno_text("truncating", options_.path));
  context_.log->warn("{}: removed an unacknowledged partial last line of {} bytes left by a crash",
                     options_.path, end - keep);
  return ok();
}

Status FileSink::write_once(const std::string& data, std::size_t& done) {
  while (done < data.size()) {
    ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_retryable(errno_text("writing", options_.path));
    }
    done += static_cast<std::size_t>(n);
  }
  return ok();
}

// A failed fsync is not retried: Linux may have dropped the dirty pages it could not write and
// marked them clean, so a second fsync can "succeed" without the data ever reaching the disk. The
// sink fails for good instead, naming the changes that may be missing.
Status FileSink::sync_locked() {
  if (failure_) return tl::unexpected(*failure_);
  if (!dirty_) return ok();
  if (options_.sync_file(fd_) != 0) {
    failure_ = Error{errno_text("fsync of", options_.path) + "; the changes at lsn " +
                         std::to_string(first_unsynced_lsn_) + " to " +
                         std::to_string(last_unsynced_lsn_) +
                         " written since the last successful sync may not be on disk: check the "
                         "disk, then restart cdcd from a checkpoint before lsn " +
                         std::to_string(first_unsynced_lsn_),
                     false};
    failed_ = true;
    context_.metrics.errors->Increment();
    context_.log->error("file sink {}: {}", context_.name, failure_->message);
    return tl::unexpected(*failure_);
  }
  dirty_ = false;
  last_sync_ = std::chrono::steady_clock::now();
  return ok();
}

bool FileSink::interval_elapsed_locked() const {
  return std::chrono::steady_clock::now() - last_sync_ >= options_.fsync_interval;
}

bool FileSink::sleep_unless_stopping(std::chrono::milliseconds wait) {
  std::unique_lock lock(wake_mutex_);
  return wake_.wait_for(lock, wait, [this] { return stopping_.load(); });
}

void FileSink::sync_periodically() {
  while (!sleep_unless_stopping(options_.fsync_interval)) {
    std::lock_guard lock(mutex_);
    if (fd_ >= 0) (void)sync_locked();
  }
}

bool FileSink::tracks_transactions() const {
  return options_.format == Format::kDebezium && options_.debezium.transaction_metadata;
}

void FileSink::write(BatchPtr batch, AckFn ack) {
  PendingWrites::Guard pending(pending_);
  std::string lines;
  encode_batch_lines(options_.format, *batch, lines, &options_.debezium,
                     tracks_transactions() ? &transactions_.of(batch->consumer) : nullptr);
  std::lock_guard lock(mutex_);
  if (failure_) return ack(DeliveryReport{*failure_, {}});
  if (fd_ < 0 || stopping_) {
    return ack(DeliveryReport{Error{"file sink " + context_.name + " is not running", false}, {}});
  }
  std::size_t done = 0;
  Backoff backoff(std::chrono::milliseconds(50), std::chrono::seconds(5));
  while (true) {
    Status written = write_once(lines, done);
    if (written) break;
    context_.metrics.errors->Increment();
    retrying_ = true;
    auto wait = backoff.next();
    context_.log->warn("{}; retrying in {} ms", written.error().message, wait.count());
    if (sleep_unless_stopping(wait)) {
      retrying_ = false;
      return ack(DeliveryReport{written.error(), {}});
    }
    context_.metrics.retries->Increment();
  }
  retrying_ = false;
  if (!batch->changes.empty()) {
    if (!dirty_) first_unsynced_lsn_ = batch->changes.front().lsn;
    last_unsynced_lsn_ = batch->changes.back().lsn;
  }
  dirty_ = true;
  if (options_.fsync == FsyncPolicy::kAlways ||
      (options_.fsync == FsyncPolicy::kInterval && interval_elapsed_locked())) {
    if (auto synced = sync_locked(); !synced) return ack(DeliveryReport{synced.error(), {}});
  }
  ack(DeliveryReport{});
}

Status FileSink::flush(Deadline deadline) {
  if (!pending_.wait_idle(deadline)) {
    return fail_retryable("file sink " + context_.name + ": a write to " + options_.path +
                          " is still being retried");
  }
  std::unique_lock lock(mutex_, deadline);
  if (!lock.owns_lock()) {
    return fail_retryable("file sink " + context_.name + ": a write to " + options_.path +
                          " is still being retried");
  }
  if (failure_) return tl::unexpected(*failure_);
  if (fd_ < 0 || options_.fsync == FsyncPolicy::kNever) return ok();
  return sync_locked();
}

void FileSink::stop() {
  std::call_once(stop_once_, [this] { shutdown(); });
}

void FileSink::shutdown() {
  {
    std::lock_guard lock(wake_mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (syncer_.joinable()) syncer_.join();
  {
    std::lock_guard lock(mutex_);
    if (fd_ >= 0) {
      if (options_.fsync != FsyncPolicy::kNever) (void)sync_locked();
      ::close(fd_);
      fd_ = -1;
    }
  }
  // Writers that were waiting for the lock acknowledge with a failure now.
  pending_.wait_idle();
}

void register_sink_file(PluginRegistry& registry) {
  registry.add_sink("file", [](config::Node& options, const SinkContext& context) {
    auto errors = options.diagnostics().items().size();
    FileSinkOptions parsed;
    parsed.path = options.string("path", /*required=*/true).value_or("");
    if (auto format = parse_sink_format(options, Format::kNative)) {
      parsed.format = format->format;
      parsed.debezium = std::move(format->debezium);
    }
    auto fsync = options.one_of("fsync", {"always", "interval", "never"}).value_or("interval");
    parsed.fsync = fsync == "always"  ? FsyncPolicy::kAlways
                   : fsync == "never" ? FsyncPolicy::kNever
                                      : FsyncPolicy::kInterval;
    parsed.fsync_interval = options.duration("fsync_interval").value_or(parsed.fsync_interval);
    options.check_unknown_keys();
    if (options.diagnostics().items().size() != errors) return std::unique_ptr<Sink>();
    return std::unique_ptr<Sink>(std::make_unique<FileSink>(std::move(parsed), context));
  });
}

}  // namespace cdcd
