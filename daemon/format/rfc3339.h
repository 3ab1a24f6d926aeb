#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace cdcd {

// Parses an RFC 3339 date-time, "2025-11-21T10:00:00Z", "2025-11-21T12:00:00.123456+02:00", into
// microseconds since the Unix epoch. The separator may be 'T', 't' or a space, the zone 'Z', 'z' or
// a numeric offset; a fraction may have any number of digits (truncated to microseconds); a leap
// second (:60) counts as the first second of the next minute. Returns nullopt for anything else.
// Locale- and time-zone-independent (no timegm/strptime).
std::optional<std::int64_t> parse_rfc3339_us(std::string_view text);

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t year, unsigned month, unsigned day);

}  // namespace cdcd
