#pragma once

#include <cstddef>
#include <string_view>

#include "daemon/core/change.h"
#include "daemon/core/result.h"

namespace cdcd {

// Readable bytes parse_native_line_padded() needs past the end of its line (simdjson's
// SIMDJSON_PADDING). Their contents never change whether a line is accepted or the Change it gives;
// for some malformed lines (unbalanced brackets) simdjson's first stage words its error
// differently depending on them.
inline constexpr std::size_t kNativeLinePadding = 64;

// parse_native_line() (daemon/format/format.h) without its copy into a padded buffer: for a caller,
// such as the jsonl source, whose read buffer already has kNativeLinePadding readable bytes after
// `line`. Same result and errors.
Result<Change> parse_native_line_padded(std::string_view line);
// The same, parsed into `out` (a fresh Change), so that a caller can parse straight into the
// event it emits. On failure `out` holds an unspecified part of the line.
Status parse_native_line_padded(std::string_view line, Change& out);

}  // namespace cdcd
