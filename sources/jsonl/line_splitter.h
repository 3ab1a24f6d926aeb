#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/core/result.h"

namespace cdcd {

// One line of the file, without its '\n'.
struct RawLine {
  // Points into the splitter's buffer, valid until the next call; kNativeLinePadding readable bytes
  // follow it. For an oversized line, only its first bytes (the rest was never buffered).
  std::string_view text;
  std::uint64_t end_offset = 0;  // file offset just after the line's '\n' (or the end of file)
  bool oversized = false;        // longer than max_line_bytes
};

// Splits a file descriptor's bytes into lines, reading large blocks and never holding more than one
// line of at most max_line_bytes (plus a block) in memory: a longer line is skipped to its end and
// reported as oversized. Does not own the descriptor.
class LineSplitter {
 public:
  explicit LineSplitter(std::uint64_t max_line_bytes);

  // Starts reading `fd` at `offset` (the descriptor's own position is not used).
  void reset(int fd, std::uint64_t offset);

  // The next '\n'-terminated line, reading more of the file as needed; nullopt at the end of the
  // data written so far (an unterminated last line stays pending). A read error is retryable.
  Result<std::optional<RawLine>> next();

  // At the end of the file: the pending unterminated line as a final line, if it holds anything but
  // whitespace.
  std::optional<RawLine> take_unterminated();

  // Whether bytes other than whitespace wait for their '\n'.
  bool has_partial() const;
  // File offset up to which the file has been read.
  std::uint64_t read_offset() const { return base_offset_ + end_; }
  // File offset just after the last line returned: what follows was read but not consumed.
  std::uint64_t consumed_offset() const { return consumed_offset_; }
  // Bytes of buffer held: one block normally, more only while a long line is being read.
  std::size_t buffer_capacity() const { return capacity_; }

 private:
  void make_room();
  std::optional<RawLine> scan();
  // Consumes the line ending at buffer_[text_end] (its '\n', or the end of the data).
  RawLine take_line(std::size_t text_end, std::uint64_t end_offset);
  void reallocate(std::size_t capacity);

  std::uint64_t max_line_bytes_;
  std::size_t max_capacity_;
  int fd_ = -1;
  std::unique_ptr<char[]> buffer_;
  std::size_t capacity_ = 0;
  std::uint64_t base_offset_ = 0;  // file offset of buffer_[0]
  std::size_t begin_ = 0;          // start of the first unconsumed line
  std::size_t scanned_ = 0;        // [begin_, scanned_) holds no '\n'
  std::size_t end_ = 0;            // end of the bytes read
  std::uint64_t consumed_offset_ = 0;
  // Skipping an oversized line: its first bytes, kept for the report.
  bool discarding_ = false;
  std::string discarded_prefix_;
};

}  // namespace cdcd
