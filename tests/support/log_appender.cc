#include "tests/support/log_appender.h"

#include <fcntl.h>
#include <unistd.h>

namespace cdcd::test {

LogAppender::LogAppender(std::string path, const NativeFile& log, const std::string& text,
                         std::size_t chunk_changes, std::chrono::milliseconds period)
    : path_(std::move(path)), period_(period) {
  std::size_t begin = 0;
  std::size_t changes = 0;
  for (std::size_t i = 0; i < log.changes.size(); ++i) {
    ++changes;
    const bool last = i + 1 == log.changes.size();
    const bool transaction_ends = last || log.changes[i + 1].lsn != log.changes[i].lsn;
    if (transaction_ends && (changes >= chunk_changes || last)) {
      chunks_.push_back(text.substr(begin, log.changes[i].end - begin) +
                        commit_marker_line(log.changes[i].lsn));
      begin = log.changes[i].end;
      changes = 0;
    }
  }
}

void LogAppender::start() {
  thread_ = std::thread([this] { run(); });
}

void LogAppender::join() {
  if (thread_.joinable()) thread_.join();
}

void LogAppender::run() {
  for (const auto& chunk : chunks_) {
    int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : ::write(fd, chunk.data(), chunk.size());
    if (fd >= 0) ::close(fd);
    if (n != static_cast<ssize_t>(chunk.size())) {
      failed_ = true;
      break;
    }
    ++written_;
    std::this_thread::sleep_for(period_);  // pacing, not synchronisation
  }
  done_ = true;
}

}  // namespace cdcd::test
