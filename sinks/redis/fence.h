#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cdcd::redis {

// The Lua script of a fenced invalidation. KEYS: each cache key followed by its fence key;
// ARGV: the change's position (fence_position), the fence TTL in milliseconds, and UNLINK or DEL.
// A key whose fence already holds this position or a later one is left alone (a replayed or
// reordered change must not void a newer fill); otherwise the key is deleted and its fence set to
// the position, in one atomic step. Returns how many keys were left alone.
extern const char* const kFenceScript;

// The key holding `key`'s fence: "cdcd:fence:{KEY}", or "cdcd:fence:KEY" when the key holds a
// brace (and so may carry its own hash tag), so that both live in the same cluster slot.
std::string fence_key(std::string_view key);

// (lsn, seq) as 30 decimal digits: Lua numbers are doubles and cannot hold every lsn, while
// fixed-width digit strings compare exactly as the positions do.
std::string fence_position(std::uint64_t lsn, std::uint32_t seq);

}  // namespace cdcd::redis
