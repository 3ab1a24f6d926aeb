#include "daemon/redis/cluster_slots.h"

#include <strings.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>

namespace cdcd::redis {

namespace {

// The CRC16 variant the Redis Cluster specification names (CCITT/XMODEM: polynomial 0x1021, no
// reflection, initial value 0). Written here because neither hiredis 0.14 nor any other packaged
// library exposes it; its check value is tested against Redis' CLUSTER KEYSLOT.
constexpr std::array<std::uint16_t, 256> make_crc16_table() {
  std::array<std::uint16_t, 256> table{};
  for (unsigned byte = 0; byte < 256; ++byte) {
    std::uint16_t crc = static_cast<std::uint16_t>(byte << 8);
    for (int bit = 0; bit < 8; ++bit) {
      crc = static_cast<std::uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    table[byte] = crc;
  }
  return table;
}

constexpr auto kCrc16Table = make_crc16_table();

std::uint16_t crc16(std::string_view data) {
  std::uint16_t crc = 0;
  for (unsigned char byte : data) {
    crc = static_cast<std::uint16_t>((crc << 8) ^ kCrc16Table[((crc >> 8) ^ byte) & 0xff]);
  }
  return crc;
}

bool named(const std::string& verb, const char* name) {
  return ::strcasecmp(verb.c_str(), name) == 0;
}

}  // namespace

int key_slot(std::string_view key) {
  if (auto open = key.find('{'); open != std::string_view::npos) {
    auto close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return crc16(key) % kClusterSlots;
}

std::optional<std::string_view> routing_key(const Command& command) {
  if (command.size() < 2) return std::nullopt;
  const std::string& verb = command[0];
  for (const char* keyless : {"SCRIPT", "CLUSTER", "PING", "ECHO", "INFO", "PUBLISH", "FUNCTION",
                              "CONFIG", "CLIENT", "COMMAND", "WAIT", "ASKING"}) {
    if (named(verb, keyless)) return std::nullopt;
  }
  for (const char* scripted : {"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"}) {
    if (!named(verb, scripted)) continue;
    if (command.size() < 4) return std::nullopt;
    int keys = 0;
    const std::string& count = command[2];
    auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), keys);
    if (ec != std::errc() || end != count.data() + count.size() || keys < 1) return std::nullopt;
    return std::string_view(command[3]);
  }
  return std::string_view(command[1]);
}

std::vector<std::vector<std::string>> group_by_slot(std::vector<std::string> keys) {
  std::vector<std::vector<std::string>> groups;
  std::vector<int> slots;
  for (auto& key : keys) {
    const int slot = key_slot(key);
    auto found = std::find(slots.begin(), slots.end(), slot);
    if (found == slots.end()) {
      slots.push_back(slot);
      groups.emplace_back();
      found = slots.end() - 1;
    }
    groups[static_cast<std::size_t>(found - slots.begin())].push_back(std::move(key));
  }
  return groups;
}

}  // namespace cdcd::redis
