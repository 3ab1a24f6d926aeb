#include "sinks/redis/fence.h"

#include <fmt/format.h>

namespace cdcd::redis {

const char* const kFenceScript = R"lua(
local fenced = 0
for i = 1, #KEYS, 2 do
  local seen = redis.call('GET', KEYS[i + 1])
  if seen and #seen == #ARGV[1] and seen >= ARGV[1] then
    fenced = fenced + 1
  else
    redis.call(ARGV[3], KEYS[i])
    redis.call('SET', KEYS[i + 1], ARGV[1], 'PX', ARGV[2])
  end
end
return fenced
)lua";

std::string fence_key(std::string_view key) {
  if (key.find_first_of("{}") == std::string_view::npos) {
    return fmt::format("cdcd:fence:{{{}}}", key);
  }
  return fmt::format("cdcd:fence:{}", key);
}

std::string fence_position(std::uint64_t lsn, std::uint32_t seq) {
  return fmt::format("{:020}{:010}", lsn, seq);
}

}  // namespace cdcd::redis
