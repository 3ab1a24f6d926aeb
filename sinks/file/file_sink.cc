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
  fd_ = ::open(options_.path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) return fail(errno_text("opening", options_.path));
  last_sync_ = std::chrono::steady_clock::now();
  return drop_partial_last_line();
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
  dirty_ = true;
  return ok();
}

Status FileSink::sync_locked() {
  if (!dirty_) return ok();
  if (::fdatasync(fd_) != 0) return fail_retryable(errno_text("fsync of", options_.path));
  dirty_ = false;
  last_sync_ = std::chrono::steady_clock::now();
  return ok();
}

void FileSink::write(BatchPtr batch, AckFn ack) {
  std::string lines;
  encode_batch_lines(options_.format, *batch, lines);
  std::lock_guard lock(mutex_);
  if (fd_ < 0) {
    ack(DeliveryReport{Error{"file sink " + context_.name + " is not open", false}, {}});
    return;
  }
  std::size_t done = 0;
  Backoff backoff(std::chrono::milliseconds(50), std::chrono::seconds(5));
  while (true) {
    Status written = write_once(lines, done);
    if (written && (options_.fsync == FsyncPolicy::kAlways ||
                    (options_.fsync == FsyncPolicy::kInterval &&
                     std::chrono::steady_clock::now() - last_sync_ >= options_.fsync_interval))) {
      written = sync_locked();
    }
    if (written) break;
    context_.metrics.errors->Increment();
    if (stopping_) {
      ack(DeliveryReport{written.error(), {}});
      return;
    }
    retrying_ = true;
    auto wait = backoff.next();
    context_.log->warn("{}; retrying in {} ms", written.error().message, wait.count());
    context_.metrics.retries->Increment();
    std::this_thread::sleep_for(wait);
  }
  retrying_ = false;
  ack(DeliveryReport{});
}

Status FileSink::flush(Deadline) {
  std::lock_guard lock(mutex_);
  if (fd_ < 0 || options_.fsync == FsyncPolicy::kNever) return ok();
  return sync_locked();
}

void FileSink::stop() {
  stopping_ = true;
  std::lock_guard lock(mutex_);
  if (fd_ < 0) return;
  if (options_.fsync != FsyncPolicy::kNever) {
    if (auto synced = sync_locked(); !synced) context_.log->error("{}", synced.error().message);
  }
  ::close(fd_);
  fd_ = -1;
}

void register_sink_file(PluginRegistry& registry) {
  registry.add_sink("file", [](config::Node& options, const SinkContext& context) {
    auto errors = options.diagnostics().items().size();
    FileSinkOptions parsed;
    parsed.path = options.string("path", /*required=*/true).value_or("");
    parsed.format =
        parse_format(options.one_of("format", {"native", "debezium", "mongodb"}).value_or("native"))
            .value_or(Format::kNative);
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
