#include "sources/jsonl/line_splitter.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <unistd.h>

#include "daemon/format/native_parse.h"

namespace cdcd {
namespace {

// Large reads keep the syscall count far below one per line.
constexpr std::size_t kBlockSize = 1 << 20;
// How much of an oversized line a report keeps.
constexpr std::size_t kReportedPrefix = 1024;

bool is_blank(std::string_view text) {
  return text.find_first_not_of(" \t\r") == std::string_view::npos;
}

}  // namespace

LineSplitter::LineSplitter(std::uint64_t max_line_bytes)
    : max_line_bytes_(max_line_bytes),
      // Room for a line of max_line_bytes with its "\r\n".
      max_capacity_(std::max<std::size_t>(kBlockSize, max_line_bytes + 2)) {}

void LineSplitter::reset(int fd, std::uint64_t offset) {
  fd_ = fd;
  base_offset_ = offset;
  consumed_offset_ = offset;
  begin_ = scanned_ = end_ = 0;
  discarding_ = false;
  discarded_prefix_.clear();
  if (!buffer_ || capacity_ != kBlockSize) reallocate(kBlockSize);
}

void LineSplitter::reallocate(std::size_t capacity) {
  // The padding lets the parser read a line in place, even the last one of the buffer.
  auto grown = std::make_unique<char[]>(capacity + kNativeLinePadding);
  if (end_ > begin_) std::memcpy(grown.get(), buffer_.get() + begin_, end_ - begin_);
  base_offset_ += begin_;
  end_ -= begin_;
  scanned_ -= begin_;
  begin_ = 0;
  buffer_ = std::move(grown);
  capacity_ = capacity;
}

std::optional<RawLine> LineSplitter::scan() {
  const char* data = buffer_.get();
  const void* newline = std::memchr(data + scanned_, '\n', end_ - scanned_);
  if (newline == nullptr) {
    scanned_ = end_;
    return std::nullopt;
  }
  std::size_t position = static_cast<const char*>(newline) - data;
  return take_line(position, base_offset_ + position + 1);
}

RawLine LineSplitter::take_line(std::size_t text_end, std::uint64_t end_offset) {
  RawLine line;
  line.end_offset = end_offset;
  consumed_offset_ = end_offset;
  if (discarding_) {
    discarding_ = false;
    line.text = discarded_prefix_;
    line.oversized = true;
  } else {
    line.text = std::string_view(buffer_.get() + begin_, text_end - begin_);
    std::size_t length = line.text.size();
    if (length > 0 && line.text.back() == '\r') --length;
    if (length > max_line_bytes_) {
      line.text = line.text.substr(0, kReportedPrefix);
      line.oversized = true;
    }
  }
  begin_ = scanned_ = std::min(text_end + 1, end_);
  return line;
}

// Frees space at the end of the buffer for the next read.
void LineSplitter::make_room() {
  if (discarding_) {
    // Everything buffered belongs to the oversized line: drop it.
    base_offset_ += end_;
    begin_ = scanned_ = end_ = 0;
    return;
  }
  if (capacity_ > kBlockSize && end_ - begin_ <= kBlockSize / 2) {
    // Back to the normal size once a long line is consumed, so memory does not stay at its peak.
    reallocate(kBlockSize);
  } else if (capacity_ - end_ >= capacity_ / 2) {
    return;
  } else if (begin_ > 0) {
    std::memmove(buffer_.get(), buffer_.get() + begin_, end_ - begin_);
    base_offset_ += begin_;
    end_ -= begin_;
    scanned_ -= begin_;
    begin_ = 0;
  }
  if (end_ < capacity_) return;
  if (capacity_ < max_capacity_) {
    reallocate(std::min(capacity_ * 2, max_capacity_));
    return;
  }
  // One line fills the largest buffer: keep its beginning for the report, skip the rest.
  discarded_prefix_.assign(buffer_.get(), std::min(kReportedPrefix, end_));
  discarding_ = true;
  base_offset_ += end_;
  begin_ = scanned_ = end_ = 0;
  reallocate(kBlockSize);
}

Result<std::optional<RawLine>> LineSplitter::next() {
  while (true) {
    if (auto line = scan()) return line;
    make_room();
    ssize_t count =
        ::pread(fd_, buffer_.get() + end_, capacity_ - end_, static_cast<off_t>(read_offset()));
    if (count < 0) {
      if (errno == EINTR) continue;
      return fail_retryable(std::string("read failed: ") + std::strerror(errno));
    }
    if (count == 0) return std::optional<RawLine>();
    end_ += static_cast<std::size_t>(count);
  }
}

std::optional<RawLine> LineSplitter::take_unterminated() {
  if (!has_partial()) return std::nullopt;
  return take_line(end_, read_offset());
}

bool LineSplitter::has_partial() const {
  return discarding_ || !is_blank(std::string_view(buffer_.get() + begin_, end_ - begin_));
}

}  // namespace cdcd
