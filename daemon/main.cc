#include "daemon/cli/cli.h"
#include "daemon/plugin/registry.h"

int main(int argc, char** argv) {
  cdcd::PluginRegistry registry;
  cdcd::register_builtin_plugins(registry);
  return cdcd::run_cli(argc, argv, registry);
}
