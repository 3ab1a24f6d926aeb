#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "daemon/config/node.h"
#include "daemon/format/change_template.h"
#include "daemon/format/format.h"
#include "daemon/redis/redis_connection.h"
#include "daemon/redis/redis_options.h"

namespace cdcd::redis {

// The cache keys of the changes of the entities matching `pattern` (a shell glob, fnmatch(3)).
struct KeyRule {
  std::string pattern;
  std::vector<ChangeTemplate> templates;
};

enum class DeleteCommand { kUnlink, kDel };

enum class SinkMode {
  kInvalidate,  // delete each change's cache keys (optionally fenced, twice, with a notice)
  kStream,      // XADD each change to a stream
  kPublish,     // PUBLISH a notice of each change, nothing else
};

struct StreamSettings {
  ChangeTemplate key;                   // the stream's key, e.g. "cdc:{entity}"
  std::optional<std::uint64_t> maxlen;  // MAXLEN ~ trimming; none: the stream grows
  Format format = Format::kNative;      // how the change is written into the entry's field
};

struct RedisSinkConfig {
  ConnectionSettings connection;
  bool cluster = false;  // url names one node of a Redis Cluster
  SinkMode mode = SinkMode::kInvalidate;
  std::vector<KeyRule> keys;  // first match wins
  DeleteCommand command = DeleteCommand::kUnlink;
  // With a fence, each invalidation records the change's position for the key, so that a
  // read-through fill started before it is refused (see docs/sinks/redis.md).
  std::optional<std::chrono::milliseconds> fence_ttl;
  // Deletes the keys once more this long after the first invalidation was confirmed.
  std::optional<std::chrono::milliseconds> double_delete;
  // The channel a JSON notice of each change is published to, e.g. "cdc:{entity}".
  std::optional<ChangeTemplate> publish;
  std::optional<StreamSettings> stream;  // with mode: stream
  // Commands sent and not yet confirmed, at most (a batch larger than that goes alone), and
  // their bytes (with the second deletes still waiting for their time): write() blocks beyond.
  std::size_t window_commands = 32768;
  std::uint64_t window_bytes = 32ull << 20;
};

// Reads a `type: redis` sink's options, reporting every problem to the node's diagnostics.
// Returns nullopt when something was reported. No I/O.
std::optional<RedisSinkConfig> parse_redis_sink_config(config::Node& options);

}  // namespace cdcd::redis
