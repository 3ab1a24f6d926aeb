#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cdcd {

// An lsn is a 64-bit log position. cdcd shows it in decimal everywhere (status, checkpoints, the
// runtime's logs); PostgreSQL writes the same number as two hexadecimal halves, "X/Y" (0/16B3748),
// so the postgres source's messages add that form: "23803720 (0/16B3748)". Wherever cdcd takes an
// lsn it accepts either form.

// Decimal ("23803720") or PostgreSQL's X/Y form ("0/16B3748"); nullopt for anything else.
std::optional<std::uint64_t> parse_lsn(std::string_view text);

// PostgreSQL's form: "0/16B3748".
std::string format_pg_lsn(std::uint64_t lsn);

// Both forms, for messages about PostgreSQL positions: "23803720 (0/16B3748)".
std::string describe_pg_lsn(std::uint64_t lsn);

}  // namespace cdcd
