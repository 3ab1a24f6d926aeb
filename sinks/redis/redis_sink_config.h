#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "daemon/config/node.h"
#include "daemon/format/change_template.h"
#include "daemon/redis/redis_connection.h"
#include "daemon/redis/redis_options.h"

namespace cdcd::redis {

// The cache keys of the changes of the entities matching `pattern` (a shell glob, fnmatch(3)).
struct KeyRule {
  std::string pattern;
  std::vector<ChangeTemplate> templates;
};

enum class DeleteCommand { kUnlink, kDel };

struct RedisSinkConfig {
  ConnectionSettings connection;
  bool cluster = false;       // url names one node of a Redis Cluster
  std::vector<KeyRule> keys;  // first match wins
  DeleteCommand command = DeleteCommand::kUnlink;
  // With a fence, each invalidation records the change's position for the key, so that a
  // read-through fill started before it is refused (see docs/sinks/redis.md).
  std::optional<std::chrono::milliseconds> fence_ttl;
};

// Reads a `type: redis` sink's options, reporting every problem to the node's diagnostics.
// Returns nullopt when something was reported. No I/O.
std::optional<RedisSinkConfig> parse_redis_sink_config(config::Node& options);

}  // namespace cdcd::redis
