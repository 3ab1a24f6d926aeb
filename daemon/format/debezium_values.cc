#include "daemon/format/debezium_values.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include "daemon/format/encoders.h"
#include "daemon/format/json_writer.h"

namespace cdcd::format_internal {

namespace {

using Options = DebeziumOptions;

constexpr std::int64_t kMicrosPerSecond = 1'000'000;
constexpr std::int64_t kMicrosPerDay = 86'400 * kMicrosPerSecond;
// PostgreSQL's JDBC driver's PGStatement.DATE_POSITIVE_INFINITY / DATE_NEGATIVE_INFINITY, which
// Debezium documents as the value of an infinite timestamp.
constexpr std::int64_t kPositiveInfinityTimestamp = 9223372036825200000LL;
constexpr std::int64_t kNegativeInfinityTimestamp = -9223372036832400000LL;
// Debezium's MicroDuration.DAYS_PER_MONTH_AVG.
constexpr double kDaysPerMonthAverage = 365.25 / 12.0;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// A cursor over PostgreSQL's text output of a date/time value.
class TextCursor {
 public:
  explicit TextCursor(std::string_view text) : text_(text) {}

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }
  bool consume(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }
  bool consume(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }
  std::optional<std::int64_t> number() {
    constexpr std::int64_t kMaxDigitsValue = 1'000'000'000'000;  // far beyond any date field
    const std::size_t start = pos_;
    std::int64_t value = 0;
    while (!at_end() && is_digit(text_[pos_])) {
      value = value * 10 + (text_[pos_++] - '0');
      if (value > kMaxDigitsValue) return std::nullopt;
    }
    if (pos_ == start) return std::nullopt;
    return value;
  }
  // ".ffffff" as microseconds (missing: 0); digits beyond the sixth are ignored.
  std::int64_t fraction_micros() {
    if (!consume('.')) return 0;
    std::int64_t micros = 0;
    int digits = 0;
    while (!at_end() && is_digit(text_[pos_])) {
      if (digits < 6) micros = micros * 10 + (text_[pos_] - '0');
      ++digits;
      ++pos_;
    }
    for (; digits < 6; ++digits) micros *= 10;
    return micros;
  }

 private:
  std::string_view text_;
  std::size_t pos_ = 0;
};

// "YYYY-MM-DD"; `text` ending in " BC" counts the year back from 1 BC (astronomical year 0).
std::optional<std::int64_t> parse_days(TextCursor& cursor, std::string_view text) {
  auto year = cursor.number();
  if (!year || !cursor.consume('-')) return std::nullopt;
  auto month = cursor.number();
  if (!month || !cursor.consume('-')) return std::nullopt;
  auto day = cursor.number();
  if (!day) return std::nullopt;
  const std::int64_t astronomical = text.ends_with(" BC") ? 1 - *year : *year;
  return days_from_civil(astronomical, static_cast<unsigned>(*month), static_cast<unsigned>(*day));
}

std::optional<std::int64_t> parse_time_micros(TextCursor& cursor) {
  auto hours = cursor.number();
  if (!hours || !cursor.consume(':')) return std::nullopt;
  auto minutes = cursor.number();
  if (!minutes || !cursor.consume(':')) return std::nullopt;
  auto seconds = cursor.number();
  if (!seconds) return std::nullopt;
  const std::int64_t whole = (*hours * 60 + *minutes) * 60 + *seconds;
  return whole * kMicrosPerSecond + cursor.fraction_micros();
}

// "+hh[:mm[:ss]]" or "-hh..." as seconds east of UTC.
std::optional<std::int64_t> parse_offset_seconds(TextCursor& cursor) {
  int sign = 0;
  if (cursor.consume('+')) sign = 1;
  if (sign == 0 && cursor.consume('-')) sign = -1;
  if (sign == 0) return cursor.consume('Z') ? std::optional<std::int64_t>(0) : std::nullopt;
  auto hours = cursor.number();
  if (!hours) return std::nullopt;
  std::int64_t seconds = *hours * 3600;
  if (cursor.consume(':')) seconds += cursor.number().value_or(0) * 60;
  if (cursor.consume(':')) seconds += cursor.number().value_or(0);
  return sign * seconds;
}

struct Civil {
  std::int64_t year;
  unsigned month;
  unsigned day;
};

// Howard Hinnant's civil_from_days (the inverse of days_from_civil).
Civil civil_from_days(std::int64_t days) {
  days += 719468;
  const std::int64_t era = floor_div(days, 146097);
  const auto day_of_era = static_cast<unsigned>(days - era * 146097);
  const unsigned year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  const unsigned day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const unsigned shifted_month = (5 * day_of_year + 2) / 153;
  const unsigned day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
  const unsigned month = shifted_month < 10 ? shifted_month + 3 : shifted_month - 9;
  const std::int64_t year = static_cast<std::int64_t>(year_of_era) + era * 400 + (month <= 2);
  return {year, month, day};
}

void append_padded(std::string& out, std::int64_t value, int width) {
  char buffer[24];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  for (int i = static_cast<int>(result.ptr - buffer); i < width; ++i) out += '0';
  out.append(buffer, result.ptr);
}

// Java's ISO year: four digits, a sign beyond 9999 or before year 0.
void append_iso_year(std::string& out, std::int64_t year) {
  if (year > 9999) out += '+';
  if (year < 0) out += '-';
  append_padded(out, year < 0 ? -year : year, 4);
}

// ".ffffff": `width` digits when 1..6, else as few as the value needs (none for whole seconds),
// as Java's DateTimeFormatter writes Debezium's ZonedTimestamp and ZonedTime.
void append_fraction(std::string& out, std::int64_t micros, std::optional<int> width) {
  int digits = 6;
  if (width && *width >= 1 && *width <= 6) {
    digits = *width;
    for (int i = digits; i < 6; ++i) micros /= 10;
  } else {
    if (micros == 0) return;
    while (micros % 10 == 0) {
      micros /= 10;
      --digits;
    }
  }
  out += '.';
  append_padded(out, micros, digits);
}

void append_clock(std::string& out, std::int64_t micros_of_day, std::optional<int> width) {
  const std::int64_t seconds = micros_of_day / kMicrosPerSecond;
  append_padded(out, seconds / 3600, 2);
  out += ':';
  append_padded(out, seconds / 60 % 60, 2);
  out += ':';
  append_padded(out, seconds % 60, 2);
  append_fraction(out, micros_of_day % kMicrosPerSecond, width);
}

bool millisecond_time(const ColumnType& type, const Options& options) {
  if (options.time_precision == Options::TimePrecisionMode::kConnect) return true;
  if (options.time_precision == Options::TimePrecisionMode::kAdaptiveTimeMicroseconds) {
    return false;
  }
  return type.precision && *type.precision <= 3;
}

bool millisecond_timestamp(const ColumnType& type, const Options& options) {
  if (options.time_precision == Options::TimePrecisionMode::kConnect) return true;
  return type.precision && *type.precision <= 3;
}

void append_date(std::string& out, std::string_view text) {
  if (text == "infinity" || text == "-infinity") {
    // Debezium's PostgreSQL connector stands for infinite dates with the JDBC driver's dates
    // -5877611-06-21 (infinity) and -5877611-06-22 (-infinity), and writes their day numbers.
    json::append_integer(out, days_from_civil(-5877611, 6, text[0] == '-' ? 22 : 21));
    return;
  }
  TextCursor cursor(text);
  auto days = parse_days(cursor, text);
  if (!days) {
    json::append_string(out, text);
    return;
  }
  json::append_integer(out, *days);
}

void append_time(std::string& out, const ColumnType& type, std::string_view text,
                 const Options& options) {
  TextCursor cursor(text);
  auto micros = parse_time_micros(cursor);
  if (!micros) {
    json::append_string(out, text);
    return;
  }
  json::append_integer(out, millisecond_time(type, options) ? *micros / 1000 : *micros);
}

// Debezium's ZonedTime: the time moved to UTC, ISO_OFFSET_TIME ("11:14:15.5Z").
void append_time_tz(std::string& out, std::string_view text) {
  TextCursor cursor(text);
  auto micros = parse_time_micros(cursor);
  auto offset = micros ? parse_offset_seconds(cursor) : std::nullopt;
  if (!offset) {
    json::append_string(out, text);
    return;
  }
  std::int64_t utc = *micros - *offset * kMicrosPerSecond;
  utc = utc - floor_div(utc, kMicrosPerDay) * kMicrosPerDay;
  out += '"';
  append_clock(out, utc, std::nullopt);
  out += "Z\"";
}

// Microseconds since the epoch of "YYYY-MM-DD[T ]HH:MM:SS[.f][offset][ BC]"; `offset` receives the
// zone offset in seconds when the text has one.
std::optional<std::int64_t> parse_timestamp(std::string_view text, bool with_zone) {
  TextCursor cursor(text);
  auto days = parse_days(cursor, text);
  if (!days || !(cursor.consume('T') || cursor.consume(' '))) return std::nullopt;
  auto micros = parse_time_micros(cursor);
  if (!micros) return std::nullopt;
  std::int64_t offset = 0;
  if (with_zone) {
    auto parsed = parse_offset_seconds(cursor);
    if (!parsed) return std::nullopt;
    offset = *parsed;
  }
  // Beyond the microseconds an int64 holds (PostgreSQL's own range reaches past it from 1970):
  // the text form rather than a wrapped number.
  std::int64_t micros_of_days = 0;
  std::int64_t result = 0;
  if (__builtin_mul_overflow(*days, kMicrosPerDay, &micros_of_days) ||
      __builtin_add_overflow(micros_of_days, *micros - offset * kMicrosPerSecond, &result)) {
    return std::nullopt;
  }
  return result;
}

void append_timestamp(std::string& out, const ColumnType& type, std::string_view text,
                      const Options& options) {
  const bool millis = millisecond_timestamp(type, options);
  if (text == "infinity" || text == "-infinity") {
    const std::int64_t value =
        text[0] == '-' ? kNegativeInfinityTimestamp : kPositiveInfinityTimestamp;
    json::append_integer(out, millis ? floor_div(value, 1000) : value);
    return;
  }
  auto micros = parse_timestamp(text, false);
  if (!micros) {
    json::append_string(out, text);
    return;
  }
  json::append_integer(out, millis ? floor_div(*micros, 1000) : *micros);
}

// Debezium's ZonedTimestamp: UTC, ISO_OFFSET_DATE_TIME with 'Z', as many fraction digits as the
// column's precision; infinite values stay "infinity" / "-infinity".
void append_timestamp_tz(std::string& out, const ColumnType& type, std::string_view text) {
  if (text == "infinity" || text == "-infinity") {
    json::append_string(out, text);
    return;
  }
  auto micros = parse_timestamp(text, true);
  if (!micros) {
    json::append_string(out, text);
    return;
  }
  const std::int64_t days = floor_div(*micros, kMicrosPerDay);
  const Civil civil = civil_from_days(days);
  out += '"';
  append_iso_year(out, civil.year);
  out += '-';
  append_padded(out, civil.month, 2);
  out += '-';
  append_padded(out, civil.day, 2);
  out += 'T';
  append_clock(out, *micros - days * kMicrosPerDay, type.precision);
  out += "Z\"";
}

// PostgreSQL's iso_8601 interval output, e.g. "P1Y2M3DT4H5M6.78S" or "P-1Y-2M3DT-4H".
struct Interval {
  std::int64_t years = 0, months = 0, days = 0, hours = 0, minutes = 0;
  std::string_view seconds;  // as written, possibly signed and fractional; empty: 0
};

std::optional<Interval> parse_interval(std::string_view text) {
  if (text.empty() || text[0] != 'P') return std::nullopt;
  Interval interval;
  bool time_part = false;
  std::size_t pos = 1;
  while (pos < text.size()) {
    if (text[pos] == 'T') {
      time_part = true;
      ++pos;
      continue;
    }
    const std::size_t start = pos;
    if (text[pos] == '-' || text[pos] == '+') ++pos;
    while (pos < text.size() && (is_digit(text[pos]) || text[pos] == '.')) ++pos;
    if (pos == start || pos >= text.size()) return std::nullopt;
    const std::string_view number = text.substr(start, pos - start);
    const char unit = text[pos++];
    if (time_part && unit == 'S') {
      interval.seconds = number;
      continue;
    }
    std::int64_t value = 0;
    const char* first = number.data() + (number[0] == '+' ? 1 : 0);
    auto [end, error] = std::from_chars(first, number.data() + number.size(), value);
    if (error != std::errc() || end != number.data() + number.size()) return std::nullopt;
    if (!time_part && unit == 'Y') {
      interval.years = value;
    } else if (!time_part && unit == 'M') {
      interval.months = value;
    } else if (!time_part && unit == 'D') {
      interval.days = value;
    } else if (time_part && unit == 'H') {
      interval.hours = value;
    } else if (time_part && unit == 'M') {
      interval.minutes = value;
    } else {
      return std::nullopt;
    }
  }
  return interval;
}

void append_interval(std::string& out, std::string_view text, const Options& options) {
  auto interval = parse_interval(text);
  if (!interval) {
    json::append_string(out, text);
    return;
  }
  if (options.interval == Options::IntervalMode::kNumeric) {
    // MicroDuration.durationMicros, in the same double arithmetic.
    const double seconds = interval->seconds.empty()
                               ? 0.0
                               : std::strtod(std::string(interval->seconds).c_str(), nullptr);
    const double days =
        static_cast<double>(interval->years * 12 + interval->months) * kDaysPerMonthAverage +
        static_cast<double>(interval->days);
    const double total_seconds = ((days * 24 + static_cast<double>(interval->hours)) * 60 +
                                  static_cast<double>(interval->minutes)) *
                                     60 +
                                 seconds;
    // Java's (long) cast, which saturates where a C++ cast would be undefined.
    const double micros = total_seconds * 1e6;
    constexpr double kLimit = 9223372036854775807.0;
    std::int64_t value = 0;
    if (std::isnan(micros)) {
      value = 0;
    } else if (micros >= kLimit) {
      value = INT64_MAX;
    } else if (micros <= -kLimit) {
      value = INT64_MIN;
    } else {
      value = static_cast<std::int64_t>(micros);
    }
    json::append_integer(out, value);
    return;
  }
  // io.debezium.time.Interval: every component, seconds without trailing zeros.
  std::string_view seconds = interval->seconds;
  if (seconds.find('.') != std::string_view::npos) {
    while (seconds.ends_with('0')) seconds.remove_suffix(1);
    if (seconds.ends_with('.')) seconds.remove_suffix(1);
  }
  if (seconds.empty() || seconds == "-") seconds = "0";
  out += "\"P";
  json::append_integer(out, interval->years);
  out += 'Y';
  json::append_integer(out, interval->months);
  out += 'M';
  json::append_integer(out, interval->days);
  out += "DT";
  json::append_integer(out, interval->hours);
  out += 'H';
  json::append_integer(out, interval->minutes);
  out += 'M';
  out += seconds;
  out += "S\"";
}

// A decimal's sign and digits without the point, and how many of them follow the point.
struct DecimalDigits {
  std::string unscaled;  // "-123450"
  int scale = 0;
};

std::optional<DecimalDigits> parse_decimal(std::string_view text) {
  DecimalDigits decimal;
  bool point = false;
  bool digits = false;
  for (char c : text) {
    if (c == '-' && decimal.unscaled.empty()) {
      decimal.unscaled += '-';
    } else if (c == '.' && !point) {
      point = true;
    } else if (is_digit(c)) {
      decimal.unscaled += c;
      digits = true;
      if (point) ++decimal.scale;
    } else {
      return std::nullopt;
    }
  }
  if (!digits) return std::nullopt;
  return decimal;
}

// Moves the decimal point so that `decimal` has exactly `scale` fraction digits (PostgreSQL
// already writes a numeric(p, s) with s digits; a negative scale drops trailing zeros).
void rescale(DecimalDigits& decimal, int scale) {
  while (decimal.scale < scale) {
    decimal.unscaled += '0';
    ++decimal.scale;
  }
  while (decimal.scale > scale && decimal.unscaled.size() > 1 &&
         is_digit(decimal.unscaled[decimal.unscaled.size() - 2])) {
    decimal.unscaled.pop_back();
    --decimal.scale;
  }
}

void append_decimal_bytes(std::string& out, const DecimalDigits& decimal) {
  out += '"';
  json::append_base64(out, unscaled_bytes(decimal.unscaled));
  out += '"';
}

void append_double(std::string& out, double value) {
  if (std::isnan(value) || std::isinf(value)) {
    json::append_string(out, std::isnan(value) ? "NaN" : (value > 0 ? "Infinity" : "-Infinity"));
    return;
  }
  char buffer[32];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, result.ptr);
}

void append_double_text(std::string& out, std::string_view text) {
  append_double(out, std::strtod(std::string(text).c_str(), nullptr));
}

// NaN and ±Infinity: no Decimal holds them; Debezium's string mode names them.
std::string_view special_numeric_name(std::string_view text) {
  if (text == "NaN") return "NAN";
  if (text == "Infinity") return "POSITIVE_INFINITY";
  if (text == "-Infinity") return "NEGATIVE_INFINITY";
  return {};
}

void append_numeric(std::string& out, const ColumnType& type, std::string_view text,
                    const Options& options) {
  if (options.decimal == Options::DecimalMode::kDouble) {
    append_double_text(out, text);
    return;
  }
  if (auto special = special_numeric_name(text); !special.empty()) {
    if (options.decimal == Options::DecimalMode::kString) {
      json::append_string(out, special);
    } else {
      out += "null";  // a Decimal cannot hold it
    }
    return;
  }
  if (options.decimal == Options::DecimalMode::kString) {
    json::append_string(out, text);
    return;
  }
  auto decimal = parse_decimal(text);
  if (!decimal) {
    json::append_string(out, text);
    return;
  }
  if (type.scale) {
    rescale(*decimal, *type.scale);
    append_decimal_bytes(out, *decimal);
    return;
  }
  // io.debezium.data.VariableScaleDecimal
  out += "{\"scale\":";
  json::append_integer(out, decimal->scale);
  out += ",\"value\":";
  append_decimal_bytes(out, *decimal);
  out += '}';
}

// money's text ("$1,234.56", "-$1,234.56") as a plain decimal ("-1234.56").
std::optional<DecimalDigits> parse_money(std::string_view text) {
  std::string plain;
  for (char c : text) {
    if (is_digit(c) || c == '.') plain += c;
    if ((c == '-' || c == '(') && plain.empty()) plain = "-";
  }
  return parse_decimal(plain);
}

void append_money(std::string& out, std::string_view text, const Options& options) {
  auto money = parse_money(text);
  if (!money) {
    json::append_string(out, text);
    return;
  }
  rescale(*money, options.money_fraction_digits);
  if (options.decimal == Options::DecimalMode::kPrecise) {
    append_decimal_bytes(out, *money);
    return;
  }
  std::string plain = money->unscaled;
  if (money->scale > 0) {
    const bool negative = plain[0] == '-';
    std::string digits = plain.substr(negative ? 1 : 0);
    while (static_cast<int>(digits.size()) <= money->scale) digits.insert(0, "0");
    digits.insert(digits.size() - static_cast<std::size_t>(money->scale), ".");
    plain = (negative ? "-" : "") + digits;
  }
  if (options.decimal == Options::DecimalMode::kDouble) {
    append_double_text(out, plain);
  } else {
    json::append_string(out, plain);
  }
}

// Base64 back to bytes, for binary.handling.mode=hex (the JSON text holds bytea as base64; no
// maintained library among ours decodes base64: simdjson 3.0 has no base64 API).
std::string base64_decode(std::string_view text) {
  std::string bytes;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    int value = -1;
    if (c >= 'A' && c <= 'Z') value = c - 'A';
    if (c >= 'a' && c <= 'z') value = c - 'a' + 26;
    if (c >= '0' && c <= '9') value = c - '0' + 52;
    if (c == '+') value = 62;
    if (c == '/') value = 63;
    if (value < 0) continue;  // '=' padding
    buffer = (buffer << 6) | static_cast<std::uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes += static_cast<char>((buffer >> bits) & 0xFF);
    }
  }
  return bytes;
}

// PostgreSQL's hex text of bytea ("\x0001ff") as base64: a domain over bytea keeps its text form
// in the change (base64 never starts with a backslash). nullopt for any other text.
std::optional<std::string> hex_bytea_as_base64(std::string_view text) {
  if (!text.starts_with("\\x") || text.size() % 2 != 0) return std::nullopt;
  std::string bytes;
  for (std::size_t pos = 2; pos < text.size(); pos += 2) {
    unsigned byte = 0;
    auto [end, error] = std::from_chars(text.data() + pos, text.data() + pos + 2, byte, 16);
    if (error != std::errc() || end != text.data() + pos + 2) return std::nullopt;
    bytes += static_cast<char>(byte);
  }
  std::string base64;
  json::append_base64(base64, bytes);
  return base64;
}

void append_bytes(std::string& out, std::string_view base64, const Options& options) {
  if (auto converted = hex_bytea_as_base64(base64)) {
    append_bytes(out, *converted, options);
    return;
  }
  switch (options.binary) {
    case Options::BinaryMode::kBytes:  // JsonConverter writes bytes as base64
    case Options::BinaryMode::kBase64:
      json::append_string(out, base64);
      return;
    case Options::BinaryMode::kBase64UrlSafe: {
      out += '"';
      for (char c : base64) out += c == '+' ? '-' : (c == '/' ? '_' : c);
      out += '"';
      return;
    }
    case Options::BinaryMode::kHex: {
      out += '"';
      const std::string bytes = base64_decode(base64);
      for (unsigned char byte : bytes) json::append_hex(out, byte, 2);
      // Debezium's HexConverter writes lower case.
      for (std::size_t i = out.size() - bytes.size() * 2; i < out.size(); ++i) {
        if (out[i] >= 'A' && out[i] <= 'F') out[i] = static_cast<char>(out[i] - 'A' + 'a');
      }
      out += '"';
      return;
    }
  }
}

// hstore's text ("\"a\"=>\"1\", \"b\"=>NULL") as a JSON object; nullopt when malformed.
std::optional<std::string> hstore_to_json(std::string_view text) {
  std::string json = "{";
  std::size_t pos = 0;
  auto skip_space = [&] {
    while (pos < text.size() && text[pos] == ' ') ++pos;
  };
  auto quoted = [&]() -> std::optional<std::string> {
    if (pos >= text.size() || text[pos] != '"') return std::nullopt;
    std::string value;
    for (++pos; pos < text.size() && text[pos] != '"'; ++pos) {
      if (text[pos] == '\\' && pos + 1 < text.size()) ++pos;
      value += text[pos];
    }
    if (pos >= text.size()) return std::nullopt;
    ++pos;
    return value;
  };
  skip_space();
  bool first = true;
  while (pos < text.size()) {
    auto key = quoted();
    skip_space();
    if (!key || text.substr(pos, 2) != "=>") return std::nullopt;
    pos += 2;
    skip_space();
    if (!first) json += ',';
    first = false;
    json::append_string(json, *key);
    json += ':';
    if (text.substr(pos, 4) == "NULL") {
      pos += 4;
      json += "null";
    } else if (auto value = quoted()) {
      json::append_string(json, *value);
    } else {
      return std::nullopt;
    }
    skip_space();
    if (pos < text.size() && text[pos] == ',') ++pos;
    skip_space();
  }
  json += '}';
  return json;
}

void append_hstore(std::string& out, std::string_view text, const Options& options) {
  auto json = hstore_to_json(text);
  if (!json) {
    json::append_string(out, text);
  } else if (options.hstore == Options::HstoreMode::kMap) {
    out += *json;
  } else {
    json::append_string(out, *json);
  }
}

void put_double_le(std::string& out, double value) {
  auto bits = std::bit_cast<std::uint64_t>(value);
  for (int i = 0; i < 8; ++i) out += static_cast<char>((bits >> (8 * i)) & 0xFF);
}

// io.debezium.data.geometry.Point: x, y and the point as OGC WKB (little endian), no SRID.
void append_point(std::string& out, std::string_view text) {
  double x = 0;
  double y = 0;
  char tail = 0;
  if (std::sscanf(std::string(text).c_str(), "(%lf,%lf%c", &x, &y, &tail) != 3 || tail != ')') {
    json::append_string(out, text);
    return;
  }
  std::string wkb = {1, 1, 0, 0, 0};  // little endian, type 1 (Point)
  put_double_le(wkb, x);
  put_double_le(wkb, y);
  out += "{\"x\":";
  append_double(out, x);
  out += ",\"y\":";
  append_double(out, y);
  out += ",\"wkb\":\"";
  json::append_base64(out, wkb);
  out += "\",\"srid\":null}";
}

void append_verbatim(std::string& out, simdjson::dom::element value) {
  out += simdjson::minify(value);
}

// A bit string ("0110...") as Debezium's PostgreSQL connector sends io.debezium.data.Bits: the
// bits as one binary number (the last character its lowest bit), in little-endian bytes, as
// few as hold its highest set bit (none for zero); JsonConverter writes bytes as base64. Debezium
// builds these bytes itself, so binary.handling.mode does not apply to them.
void append_bits(std::string& out, std::string_view text) {
  std::string bytes;
  for (std::size_t bit = 0; bit < text.size(); ++bit) {
    if (text[text.size() - 1 - bit] != '1') continue;
    bytes.resize(std::max(bytes.size(), bit / 8 + 1), '\0');
    bytes[bit / 8] = static_cast<char>(bytes[bit / 8] | (1 << (bit % 8)));
  }
  out += '"';
  json::append_base64(out, bytes);
  out += '"';
}

// A value the source kept as text (a domain's value: the source maps values by their declared
// type) for a kind whose JSON is a number or boolean; text that is no such value stays a string.
void append_text_as_json(std::string& out, DebeziumKind kind, std::string_view text) {
  if (kind == DebeziumKind::kBoolean) {
    if (text == "t" || text == "1") {
      out += "true";
      return;
    }
    if (text == "f" || text == "0") {
      out += "false";
      return;
    }
  } else if (kind == DebeziumKind::kFloat32 || kind == DebeziumKind::kFloat64) {
    double number = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (error == std::errc() && end == text.data() + text.size()) {
      append_double(out, number);
      return;
    }
    if (text == "NaN" || text == "Infinity" || text == "-Infinity") {
      json::append_string(out, text);
      return;
    }
  } else {
    std::int64_t number = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (error == std::errc() && end == text.data() + text.size()) {
      json::append_integer(out, number);
      return;
    }
  }
  json::append_string(out, text);
}

void append_scalar(std::string& out, DebeziumKind kind, const ColumnType& type,
                   simdjson::dom::element value, const Options& options) {
  std::string_view text;
  if (value.get_string().get(text) != simdjson::SUCCESS) {
    // Values the source already writes as Debezium does (numbers, booleans), or text forms.
    if (kind == DebeziumKind::kJson) {
      json::append_string(out, simdjson::minify(value));
    } else {
      append_verbatim(out, value);
    }
    return;
  }
  switch (kind) {
    case DebeziumKind::kNumeric:
      return append_numeric(out, type, text, options);
    case DebeziumKind::kMoney:
      return append_money(out, text, options);
    case DebeziumKind::kDate:
      return append_date(out, text);
    case DebeziumKind::kTime:
      return append_time(out, type, text, options);
    case DebeziumKind::kTimeTz:
      return append_time_tz(out, text);
    case DebeziumKind::kTimestamp:
      return append_timestamp(out, type, text, options);
    case DebeziumKind::kTimestampTz:
      return append_timestamp_tz(out, type, text);
    case DebeziumKind::kInterval:
      return append_interval(out, text, options);
    case DebeziumKind::kBytes:
      return append_bytes(out, text, options);
    case DebeziumKind::kHstore:
      return append_hstore(out, text, options);
    case DebeziumKind::kPoint:
      return append_point(out, text);
    case DebeziumKind::kBits:
      return append_bits(out, text);
    case DebeziumKind::kBoolean:
    case DebeziumKind::kInt16:
    case DebeziumKind::kInt32:
    case DebeziumKind::kInt64:
    case DebeziumKind::kFloat32:
    case DebeziumKind::kFloat64:
      return append_text_as_json(out, kind, text);
    case DebeziumKind::kJson:  // a JSON string scalar: its JSON text, as a string
      json::append_string(out, simdjson::minify(value));
      return;
    default:
      append_verbatim(out, value);
  }
}

DebeziumKind kind_of_name(std::string_view name) {
  struct Entry {
    std::string_view name;
    DebeziumKind kind;
  };
  static constexpr Entry kKinds[] = {
      {"bool", DebeziumKind::kBoolean},
      {"int2", DebeziumKind::kInt16},
      {"int4", DebeziumKind::kInt32},
      {"int8", DebeziumKind::kInt64},
      {"oid", DebeziumKind::kInt64},
      {"float4", DebeziumKind::kFloat32},
      {"float8", DebeziumKind::kFloat64},
      {"numeric", DebeziumKind::kNumeric},
      {"money", DebeziumKind::kMoney},
      {"date", DebeziumKind::kDate},
      {"time", DebeziumKind::kTime},
      {"timetz", DebeziumKind::kTimeTz},
      {"timestamp", DebeziumKind::kTimestamp},
      {"timestamptz", DebeziumKind::kTimestampTz},
      {"interval", DebeziumKind::kInterval},
      {"bytea", DebeziumKind::kBytes},
      {"json", DebeziumKind::kJson},
      {"jsonb", DebeziumKind::kJson},
      {"xml", DebeziumKind::kXml},
      {"uuid", DebeziumKind::kUuid},
      {"hstore", DebeziumKind::kHstore},
      {"point", DebeziumKind::kPoint},
  };
  for (const auto& entry : kKinds) {
    if (entry.name == name) return entry.kind;
  }
  return DebeziumKind::kVerbatim;
}

// The `length` of io.debezium.data.Bits: the declared bit count, or for a varbit without one
// what the JDBC driver reports as its precision (Integer.MAX_VALUE).
std::int64_t bits_length(const ColumnType& type) {
  constexpr std::int64_t kUnboundedLength = 2147483647;
  return type.length.value_or(kUnboundedLength);
}

struct LogicalType {
  std::string_view type;
  std::string_view name;  // empty: none
};

LogicalType logical_type(DebeziumKind kind, const ColumnType& type, const Options& options) {
  const bool connect = options.time_precision == Options::TimePrecisionMode::kConnect;
  switch (kind) {
    case DebeziumKind::kEnum:
      return {"string", "io.debezium.data.Enum"};
    case DebeziumKind::kBits:
      return {"bytes", "io.debezium.data.Bits"};
    case DebeziumKind::kBoolean:
      return {"boolean", {}};
    case DebeziumKind::kInt16:
      return {"int16", {}};
    case DebeziumKind::kInt32:
      return {"int32", {}};
    case DebeziumKind::kInt64:
      return {"int64", {}};
    case DebeziumKind::kFloat32:
      return {"float", {}};
    case DebeziumKind::kFloat64:
      return {"double", {}};
    case DebeziumKind::kNumeric:
    case DebeziumKind::kMoney:
      if (options.decimal == Options::DecimalMode::kDouble) return {"double", {}};
      if (options.decimal == Options::DecimalMode::kString) return {"string", {}};
      if (kind == DebeziumKind::kNumeric && !type.scale) {
        return {"struct", "io.debezium.data.VariableScaleDecimal"};
      }
      return {"bytes", "org.apache.kafka.connect.data.Decimal"};
    case DebeziumKind::kDate:
      return {"int32", connect ? "org.apache.kafka.connect.data.Date" : "io.debezium.time.Date"};
    case DebeziumKind::kTime:
      if (connect) return {"int32", "org.apache.kafka.connect.data.Time"};
      if (millisecond_time(type, options)) return {"int32", "io.debezium.time.Time"};
      return {"int64", "io.debezium.time.MicroTime"};
    case DebeziumKind::kTimestamp:
      if (connect) return {"int64", "org.apache.kafka.connect.data.Timestamp"};
      if (millisecond_timestamp(type, options)) return {"int64", "io.debezium.time.Timestamp"};
      return {"int64", "io.debezium.time.MicroTimestamp"};
    case DebeziumKind::kTimeTz:
      return {"string", "io.debezium.time.ZonedTime"};
    case DebeziumKind::kTimestampTz:
      return {"string", "io.debezium.time.ZonedTimestamp"};
    case DebeziumKind::kInterval:
      if (options.interval == Options::IntervalMode::kString) {
        return {"string", "io.debezium.time.Interval"};
      }
      return {"int64", "io.debezium.time.MicroDuration"};
    case DebeziumKind::kBytes:
      return {options.binary == Options::BinaryMode::kBytes ? "bytes" : "string", {}};
    case DebeziumKind::kJson:
      return {"string", "io.debezium.data.Json"};
    case DebeziumKind::kXml:
      return {"string", "io.debezium.data.Xml"};
    case DebeziumKind::kUuid:
      return {"string", "io.debezium.data.Uuid"};
    case DebeziumKind::kHstore:
      if (options.hstore == Options::HstoreMode::kMap) return {"map", {}};
      return {"string", "io.debezium.data.Json"};
    case DebeziumKind::kPoint:
      return {"struct", "io.debezium.data.geometry.Point"};
    case DebeziumKind::kArray:
      return {"array", {}};
    case DebeziumKind::kVerbatim:
      break;
  }
  return {"string", {}};
}

// The schema of a value (without "field"), as Kafka's JsonConverter writes it.
void append_value_schema(std::string& out, DebeziumKind kind, DebeziumKind element,
                         const ColumnType& type, bool optional, const Options& options) {
  const LogicalType logical = logical_type(kind, type, options);
  out += "{\"type\":\"";
  out += logical.type;
  out += '"';
  if (kind == DebeziumKind::kArray) {
    out += ",\"items\":";
    append_value_schema(out, element, DebeziumKind::kVerbatim, type, true, options);
  } else if (logical.type == "map") {
    out += ",\"keys\":{\"type\":\"string\",\"optional\":false}";
    out += ",\"values\":{\"type\":\"string\",\"optional\":true}";
  } else if (kind == DebeziumKind::kPoint) {
    out +=
        ",\"fields\":[{\"type\":\"double\",\"optional\":false,\"field\":\"x\"},"
        "{\"type\":\"double\",\"optional\":false,\"field\":\"y\"},"
        "{\"type\":\"bytes\",\"optional\":true,\"field\":\"wkb\"},"
        "{\"type\":\"int32\",\"optional\":true,\"field\":\"srid\"}]";
  } else if (logical.type == "struct") {  // VariableScaleDecimal
    out +=
        ",\"fields\":[{\"type\":\"int32\",\"optional\":false,\"field\":\"scale\"},"
        "{\"type\":\"bytes\",\"optional\":false,\"field\":\"value\"}]";
  }
  out += ",\"optional\":";
  out += optional ? "true" : "false";
  if (!logical.name.empty()) {
    out += ",\"name\":\"";
    out += logical.name;
    out += "\",\"version\":1";
  }
  if (kind == DebeziumKind::kEnum) {
    std::string allowed;
    for (const auto& label : *type.enum_labels) {
      if (!allowed.empty()) allowed += ',';
      allowed += label;
    }
    out += ",\"parameters\":{\"allowed\":";
    json::append_string(out, allowed);
    out += '}';
  } else if (kind == DebeziumKind::kBits) {
    out += ",\"parameters\":{\"length\":\"";
    json::append_integer(out, bits_length(type));
    out += "\"}";
  } else if (logical.name == "org.apache.kafka.connect.data.Decimal") {
    out += ",\"parameters\":{\"scale\":\"";
    json::append_integer(
        out, kind == DebeziumKind::kMoney ? options.money_fraction_digits : type.scale.value_or(0));
    out += '"';
    if (kind == DebeziumKind::kNumeric && type.precision) {
      out += ",\"connect.decimal.precision\":\"";
      json::append_integer(out, *type.precision);
      out += '"';
    }
    out += '}';
  }
  out += '}';
}

}  // namespace

std::int64_t days_from_civil(std::int64_t year, unsigned month, unsigned day) {
  year -= month <= 2;
  const std::int64_t era = floor_div(year, 400);
  const auto year_of_era = static_cast<unsigned>(year - era * 400);
  const unsigned day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const unsigned day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + static_cast<std::int64_t>(day_of_era) - 719468;
}

// Hand-written because none of our libraries converts arbitrary-precision decimal digits to
// Java's BigInteger byte layout (numeric has up to 131072 digits before the point).
std::string unscaled_bytes(std::string_view digits) {
  const bool negative = !digits.empty() && digits[0] == '-';
  if (negative) digits.remove_prefix(1);
  std::vector<std::uint8_t> magnitude;  // little endian
  for (char c : digits) {
    unsigned carry = static_cast<unsigned>(c - '0');
    for (auto& byte : magnitude) {
      const unsigned value = byte * 10u + carry;
      byte = static_cast<std::uint8_t>(value & 0xFF);
      carry = value >> 8;
    }
    while (carry != 0) {
      magnitude.push_back(static_cast<std::uint8_t>(carry & 0xFF));
      carry >>= 8;
    }
  }
  while (!magnitude.empty() && magnitude.back() == 0) magnitude.pop_back();
  if (magnitude.empty()) return std::string(1, '\0');
  magnitude.push_back(0);  // room for the sign bit
  if (negative) {
    unsigned carry = 1;
    for (auto& byte : magnitude) {
      const unsigned value = static_cast<std::uint8_t>(~byte) + carry;
      byte = static_cast<std::uint8_t>(value & 0xFF);
      carry = value >> 8;
    }
  }
  // Minimal: drop a leading sign byte the next byte's top bit already implies.
  const std::uint8_t sign_byte = negative ? 0xFF : 0x00;
  while (magnitude.size() > 1 && magnitude.back() == sign_byte &&
         ((magnitude[magnitude.size() - 2] & 0x80) != 0) == negative) {
    magnitude.pop_back();
  }
  return std::string(magnitude.rbegin(), magnitude.rend());
}

ColumnMapping map_column(const ColumnType& type) {
  if (!type.element_name.empty()) {
    return {DebeziumKind::kArray, kind_of_name(type.element_name)};
  }
  if (type.enum_labels) return {DebeziumKind::kEnum, DebeziumKind::kVerbatim};
  if (type.name == "bit" || type.name == "varbit") {
    // bit is bit(1) unless declared longer; Debezium takes a one-bit column for a boolean.
    const bool one_bit = type.name == "bit" ? type.length.value_or(1) <= 1 : type.length == 1;
    return {one_bit ? DebeziumKind::kBoolean : DebeziumKind::kBits, DebeziumKind::kVerbatim};
  }
  return {kind_of_name(type.name), DebeziumKind::kVerbatim};
}

void append_debezium_value(std::string& out, const ColumnMapping& mapping, const ColumnType& type,
                           simdjson::dom::element value, const DebeziumOptions& options) {
  if (value.is_null()) {
    out += "null";
    return;
  }
  if (mapping.kind != DebeziumKind::kArray) {
    append_scalar(out, mapping.kind, type, value, options);
    return;
  }
  simdjson::dom::array array;
  if (value.get_array().get(array) != simdjson::SUCCESS) {
    append_verbatim(out, value);  // an array the source kept as text (bounds other than 1)
    return;
  }
  out += '[';
  bool first = true;
  for (simdjson::dom::element item : array) {
    if (!first) out += ',';
    first = false;
    if (item.is_array()) {  // a dimension of a multi-dimensional array
      append_debezium_value(out, mapping, type, item, options);
    } else if (item.is_null()) {
      out += "null";
    } else {
      append_scalar(out, mapping.element, type, item, options);
    }
  }
  out += ']';
}

void append_field_schema(std::string& out, const ColumnMapping& mapping, const ColumnSchema& column,
                         const DebeziumOptions& options) {
  append_value_schema(out, mapping.kind, mapping.element, column.type, column.optional, options);
  out.pop_back();  // the closing brace
  out += ",\"field\":";
  json::append_string(out, column.name);
  out += '}';
}

}  // namespace cdcd::format_internal
