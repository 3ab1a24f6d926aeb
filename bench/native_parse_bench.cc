// The native line parser alone: reads a JSONL change log into memory (with the padding
// parse_native_line_padded needs, as the jsonl source's read buffer has), then parses every line
// several times over and prints the median rate. Tells the parser's cost from the source's I/O.
//
//   native_parse_bench CHANGES.jsonl [REPETITIONS]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/format/native_parse.h"

namespace {

std::string read_padded(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot open %s\n", path);
    std::exit(1);
  }
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::size_t>(in.tellg());
  in.seekg(0);
  std::string text(size + cdcd::kNativeLinePadding, ' ');
  if (!in.read(text.data(), static_cast<std::streamsize>(size))) {
    std::fprintf(stderr, "cannot read %s\n", path);
    std::exit(1);
  }
  return text;
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    std::size_t end = text.find('\n');
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(0, end);
    if (!line.empty()) lines.push_back(line);
    text.remove_prefix(std::min(end + 1, text.size()));
  }
  return lines;
}

// Parses every line once; the checksum keeps the work from being optimized away.
std::uint64_t parse_all(const std::vector<std::string_view>& lines) {
  std::uint64_t checksum = 0;
  for (std::string_view line : lines) {
    auto change = cdcd::parse_native_line_padded(line);
    if (!change) {
      std::fprintf(stderr, "bad line: %s\n", change.error().message.c_str());
      std::exit(1);
    }
    checksum += change->lsn + change->key.size() + change->new_row.size() + change->old_row.size();
  }
  return checksum;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CHANGES.jsonl [REPETITIONS]\n", argv[0]);
    return 2;
  }
  const int repetitions = argc > 2 ? std::max(1, std::atoi(argv[2])) : 5;
  const std::string text = read_padded(argv[1]);
  // The padding is not part of the last line.
  const auto lines =
      split_lines(std::string_view(text).substr(0, text.size() - cdcd::kNativeLinePadding));
  if (lines.empty()) {
    std::fprintf(stderr, "no lines in %s\n", argv[1]);
    return 1;
  }

  std::vector<double> seconds;
  std::uint64_t checksum = 0;
  for (int i = 0; i < repetitions; ++i) {
    const auto start = std::chrono::steady_clock::now();
    checksum = parse_all(lines);
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    seconds.push_back(elapsed.count());
    std::printf("run %d: %.1f ns/line\n", i + 1, elapsed.count() * 1e9 / lines.size());
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  std::printf("%zu lines, median of %d: %.0f lines/s, %.1f ns/line (checksum %llu)\n", lines.size(),
              repetitions, lines.size() / median, median * 1e9 / lines.size(),
              static_cast<unsigned long long>(checksum));
  return 0;
}
