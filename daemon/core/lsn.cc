#include "daemon/core/lsn.h"

#include <charconv>
#include <cstdio>

namespace cdcd {

namespace {

template <typename Number>
bool parse_whole(std::string_view text, Number& value, int base) {
  if (text.empty()) return false;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  return error == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::optional<std::uint64_t> parse_lsn(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos) {
    std::uint64_t value = 0;
    if (!parse_whole(text, value, 10)) return std::nullopt;
    return value;
  }
  std::uint32_t high = 0;
  std::uint32_t low = 0;
  if (!parse_whole(text.substr(0, slash), high, 16) ||
      !parse_whole(text.substr(slash + 1), low, 16)) {
    return std::nullopt;
  }
  return (static_cast<std::uint64_t>(high) << 32) | low;
}

std::string format_pg_lsn(std::uint64_t lsn) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%X/%X", static_cast<unsigned>(lsn >> 32),
                static_cast<unsigned>(lsn & 0xffffffffu));
  return buffer;
}

std::string describe_pg_lsn(std::uint64_t lsn) {
  return std::to_string(lsn) + " (" + format_pg_lsn(lsn) + ")";
}

}  // namespace cdcd
