#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "daemon/plugin/registry.h"

namespace cdcd {

struct CheckpointCommand {
  std::string config_path;
  std::string consumer;
  std::optional<std::uint64_t> lsn;
  std::optional<std::string> timestamp;
  bool beginning = false;
  bool all_consumers = false;  // reset: every consumer of the consumer's source
};

// Each returns the process exit code (see cli.h).
int command_run(const std::string& config_path, const PluginRegistry& registry);
int command_validate(const std::string& config_path, const PluginRegistry& registry);
int command_status(const std::string& config_path, bool json, const PluginRegistry& registry);
int command_checkpoint_show(const CheckpointCommand& command, const PluginRegistry& registry);
int command_checkpoint_set(const CheckpointCommand& command, const PluginRegistry& registry);
int command_checkpoint_reset(const CheckpointCommand& command, const PluginRegistry& registry);

}  // namespace cdcd
