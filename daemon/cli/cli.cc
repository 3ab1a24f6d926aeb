#include "daemon/cli/cli.h"

namespace cdcd {

int run_cli(int, char**) { return kExitUsage; }

}  // namespace cdcd
