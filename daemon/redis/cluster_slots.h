#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/redis/redis_connection.h"

namespace cdcd::redis {

inline constexpr int kClusterSlots = 16384;

// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) modulo 16384 of the key, or of its hash
// tag, the text between the first '{' and the first '}' after it when that text is not empty.
int key_slot(std::string_view key);

// The key a command is routed by in a cluster: the first key of EVAL, EVALSHA and FCALL (after
// numkeys), nothing for the server and script commands that name no key (PING, SCRIPT, CLUSTER,
// ...), and the first argument of every other command (GET, SET, DEL, UNLINK, HSET, XADD, ...).
// A command whose keys span several slots is refused by Redis itself (CROSSSLOT).
std::optional<std::string_view> routing_key(const Command& command);

// `keys` grouped by hash slot, for multi-key commands that must not cross slots: slots in the
// order their first key appears, keys in their order within a slot.
std::vector<std::vector<std::string>> group_by_slot(std::vector<std::string> keys);

}  // namespace cdcd::redis
