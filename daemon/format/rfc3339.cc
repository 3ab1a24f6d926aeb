#include "daemon/format/rfc3339.h"

namespace cdcd {
namespace {

constexpr std::int64_t kMicrosPerSecond = 1'000'000;

// Reads exactly `count` decimal digits at `pos`, advancing it.
std::optional<int> read_digits(std::string_view text, std::size_t& pos, int count) {
  if (pos + count > text.size()) return std::nullopt;
  int value = 0;
  for (int i = 0; i < count; ++i) {
    char c = text[pos + i];
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  pos += count;
  return value;
}

bool expect(std::string_view text, std::size_t& pos, char wanted) {
  if (pos >= text.size() || text[pos] != wanted) return false;
  ++pos;
  return true;
}

bool is_leap_year(int year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

int days_in_month(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && is_leap_year(year) ? 29 : kDays[month - 1];
}

// Parses ".123456789" (any number of digits, at least one) as microseconds, truncating.
std::optional<std::int64_t> read_fraction(std::string_view text, std::size_t& pos) {
  if (pos >= text.size() || text[pos] != '.') return 0;
  ++pos;
  std::size_t start = pos;
  std::int64_t micros = 0;
  while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
    if (pos - start < 6) micros = micros * 10 + (text[pos] - '0');
    ++pos;
  }
  std::size_t digits = pos - start;
  if (digits == 0) return std::nullopt;
  for (std::size_t i = digits; i < 6; ++i) micros *= 10;
  return micros;
}

// Parses "Z" or "+hh:mm" / "-hh:mm" as the zone's offset east of UTC, in seconds.
std::optional<std::int64_t> read_zone(std::string_view text, std::size_t& pos) {
  if (pos >= text.size()) return std::nullopt;
  char sign = text[pos++];
  if (sign == 'Z' || sign == 'z') return 0;
  if (sign != '+' && sign != '-') return std::nullopt;
  auto hours = read_digits(text, pos, 2);
  if (!hours || !expect(text, pos, ':')) return std::nullopt;
  auto minutes = read_digits(text, pos, 2);
  if (!minutes || *hours > 23 || *minutes > 59) return std::nullopt;
  std::int64_t offset = *hours * 3600 + *minutes * 60;
  return sign == '-' ? -offset : offset;
}

}  // namespace

std::int64_t days_from_civil(std::int64_t year, unsigned month, unsigned day) {
  year -= month <= 2;
  const std::int64_t era = (year >= 0 ? year : year - 399) / 400;
  const unsigned year_of_era = static_cast<unsigned>(year - era * 400);
  const unsigned day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const unsigned day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + static_cast<std::int64_t>(day_of_era) - 719468;
}

std::optional<std::int64_t> parse_rfc3339_us(std::string_view text) {
  std::size_t pos = 0;
  auto year = read_digits(text, pos, 4);
  if (!year || !expect(text, pos, '-')) return std::nullopt;
  auto month = read_digits(text, pos, 2);
  if (!month || !expect(text, pos, '-')) return std::nullopt;
  auto day = read_digits(text, pos, 2);
  if (!day || pos >= text.size()) return std::nullopt;
  char separator = text[pos++];
  if (separator != 'T' && separator != 't' && separator != ' ') return std::nullopt;
  auto hour = read_digits(text, pos, 2);
  if (!hour || !expect(text, pos, ':')) return std::nullopt;
  auto minute = read_digits(text, pos, 2);
  if (!minute || !expect(text, pos, ':')) return std::nullopt;
  auto second = read_digits(text, pos, 2);
  if (!second) return std::nullopt;
  auto micros = read_fraction(text, pos);
  if (!micros) return std::nullopt;
  auto zone_offset = read_zone(text, pos);
  if (!zone_offset || pos != text.size()) return std::nullopt;

  if (*month < 1 || *month > 12 || *day < 1 || *day > days_in_month(*year, *month) || *hour > 23 ||
      *minute > 59 || *second > 60) {
    return std::nullopt;
  }
  std::int64_t days = days_from_civil(*year, *month, *day);
  std::int64_t seconds = days * 86400 + *hour * 3600 + *minute * 60 + *second - *zone_offset;
  return seconds * kMicrosPerSecond + *micros;
}

}  // namespace cdcd
