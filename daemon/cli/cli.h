#pragma once

#include "daemon/plugin/registry.h"

namespace cdcd {

// Exit codes of the cdcd command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntimeFailure = 1;
inline constexpr int kExitUsage = 2;

// Parses the command line and runs the subcommand with the plugins of `registry`; returns the
// process exit code.
int run_cli(int argc, char** argv, const PluginRegistry& registry);

}  // namespace cdcd
