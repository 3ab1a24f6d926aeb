#include "daemon/cli/cli.h"

int main(int argc, char** argv) { return cdcd::run_cli(argc, argv); }
