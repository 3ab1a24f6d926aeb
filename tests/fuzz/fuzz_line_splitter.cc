// libFuzzer target: the jsonl source's line splitter, fed a file that grows in pieces (a followed
// log being appended to). The lines it returns must be exactly the file's lines, whatever the
// pieces: same text (without the '\n'), same end offsets, oversized exactly when longer than the
// limit (a "\r\n" ending not counted), and an unterminated last line only when it holds more
// than whitespace.
//
// Input: byte 0 sets max_line_bytes, byte 1 the size of the appended pieces, the rest is the file.

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sources/jsonl/line_splitter.h"

namespace {

struct ExpectedLine {
  std::string text;
  std::uint64_t end_offset;
  bool oversized;
};

constexpr std::size_t kReportedPrefix = 1024;  // what the splitter keeps of an oversized line

[[noreturn]] void die(const char* what, std::size_t index) {
  std::fprintf(stderr, "line %zu: %s\n", index, what);
  std::abort();
}

std::vector<ExpectedLine> expected_lines(std::string_view file, std::uint64_t max_line_bytes) {
  std::vector<ExpectedLine> lines;
  std::size_t start = 0;
  while (true) {
    std::size_t newline = file.find('\n', start);
    if (newline == std::string_view::npos) break;
    std::string_view text = file.substr(start, newline - start);
    std::size_t length = text.size() - (!text.empty() && text.back() == '\r' ? 1 : 0);
    bool oversized = length > max_line_bytes;
    if (oversized) text = text.substr(0, kReportedPrefix);
    lines.push_back({std::string(text), newline + 1, oversized});
    start = newline + 1;
  }
  std::string_view rest = file.substr(start);
  if (rest.find_first_not_of(" \t\r") != std::string_view::npos) {
    bool oversized = rest.size() - (rest.back() == '\r' ? 1 : 0) > max_line_bytes;
    lines.push_back(
        {std::string(oversized ? rest.substr(0, kReportedPrefix) : rest), file.size(), oversized});
  }
  return lines;
}

void check(const cdcd::RawLine& line, const std::vector<ExpectedLine>& expected,
           std::size_t index) {
  if (index >= expected.size()) die("more lines than the file holds", index);
  const ExpectedLine& want = expected[index];
  if (line.text != want.text) die("wrong text", index);
  if (line.end_offset != want.end_offset) die("wrong end offset", index);
  if (line.oversized != want.oversized) die("wrong oversized flag", index);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint64_t max_line_bytes = data[0] % 64;
  const std::size_t piece = data[1] % 32 + 1;
  std::string_view file(reinterpret_cast<const char*>(data) + 2, size - 2);
  const auto expected = expected_lines(file, max_line_bytes);

  int fd = memfd_create("fuzz_line_splitter", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  // One splitter per limit, reused as the jsonl source reuses its own (reset() keeps the buffer):
  // allocating a fresh one-block buffer per input would make most of the run's time.
  static std::unique_ptr<cdcd::LineSplitter> splitters[64];
  auto& slot = splitters[max_line_bytes];
  if (!slot) slot = std::make_unique<cdcd::LineSplitter>(max_line_bytes);
  cdcd::LineSplitter& splitter = *slot;
  splitter.reset(fd, 0);
  std::size_t written = 0;
  std::size_t index = 0;
  while (true) {
    auto line = splitter.next();
    if (!line) die("read failed", index);
    if (*line) {
      check(**line, expected, index++);
      continue;
    }
    if (written == file.size()) break;
    std::size_t count = std::min(piece, file.size() - written);
    if (::pwrite(fd, file.data() + written, count, static_cast<off_t>(written)) !=
        static_cast<ssize_t>(count)) {
      std::abort();
    }
    written += count;
  }
  if (auto last = splitter.take_unterminated()) check(*last, expected, index++);
  if (index != expected.size()) die("fewer lines than the file holds", index);
  if (splitter.read_offset() != file.size()) die("read offset is not the file size", index);
  ::close(fd);
  return 0;
}
