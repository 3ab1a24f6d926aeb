#include "daemon/cli/cli.h"

#include <cstdio>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "daemon/cli/commands.h"
#include "daemon/core/lsn.h"

namespace cdcd {

int run_cli(int argc, char** argv, const PluginRegistry& registry) {
  CLI::App app{
      "cdcd: change-data-capture daemon. Tails a change log from a checkpointed position "
      "and replicates every change, in order and without loss, to its sinks.",
      "cdcd"};
  app.set_version_flag("--version", std::string("cdcd ") + CDCD_VERSION);
  app.require_subcommand(1);

  std::string config_path;
  auto add_config = [&config_path](CLI::App* command) {
    command->add_option("-c,--config", config_path, "config file (YAML)")->required();
  };

  auto* run = app.add_subcommand("run",
                                 "run the daemon until SIGTERM/SIGINT, or until every "
                                 "consumer is done (a source without follow)");
  add_config(run);

  auto* validate = app.add_subcommand("validate",
                                      "check a config offline: prints ok, or every "
                                      "error as FILE:LINE:COLUMN and exits 2");
  add_config(validate);

  bool json = false;
  auto* status = app.add_subcommand("status", "per consumer: checkpoint lsn, its commit time, lag");
  add_config(status);
  status->add_flag("--json", json, "print JSON");

  CheckpointCommand checkpoint_command;
  auto* checkpoint = app.add_subcommand("checkpoint",
                                        "show, set or reset a consumer's checkpoint "
                                        "(run it while the daemon is stopped)");
  checkpoint->require_subcommand(1);
  auto* show = checkpoint->add_subcommand("show", "print the consumer's checkpoint");
  auto* set = checkpoint->add_subcommand(
      "set", "move the checkpoint: the consumer resumes after it (rewind or skip ahead)");
  auto* reset = checkpoint->add_subcommand(
      "reset", "forget the checkpoint: the consumer starts as its `start` setting says");
  for (auto* command : {show, set, reset}) {
    add_config(command);
    command->add_option("--consumer", checkpoint_command.consumer, "consumer name")->required();
  }
  std::string lsn_text;
  auto* lsn = set->add_option("--lsn", lsn_text,
                              "resume after the transaction with this lsn (decimal, or "
                              "PostgreSQL's X/Y form such as 0/16B3748)");
  auto* timestamp =
      set->add_option("--timestamp", checkpoint_command.timestamp,
                      "resume with the first transaction committed at or after this RFC 3339 time");
  auto* beginning = set->add_flag("--beginning", checkpoint_command.beginning,
                                  "resume from the beginning of the log");
  lsn->excludes(timestamp)->excludes(beginning);
  timestamp->excludes(beginning);
  reset->add_flag("--all-consumers", checkpoint_command.all_consumers,
                  "reset every consumer of the consumer's source together (the only reset a "
                  "source that cannot rewind, such as postgres, allows)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int code = app.exit(error);
    return code == 0 ? kExitOk : kExitUsage;
  }

  if (*run) return command_run(config_path, registry);
  if (*validate) return command_validate(config_path, registry);
  if (*status) return command_status(config_path, json, registry);
  checkpoint_command.config_path = config_path;
  if (*show) return command_checkpoint_show(checkpoint_command, registry);
  if (*reset) return command_checkpoint_reset(checkpoint_command, registry);
  if (*lsn) {
    checkpoint_command.lsn = parse_lsn(lsn_text);
    if (!checkpoint_command.lsn) {
      std::fprintf(stderr,
                   "--lsn: expected a decimal lsn or PostgreSQL's X/Y form such as 0/16B3748, "
                   "got \"%s\"\n",
                   lsn_text.c_str());
      return kExitUsage;
    }
  }
  if (!*lsn && !*timestamp && !*beginning) {
    std::fputs("cdcd checkpoint set: one of --lsn, --timestamp or --beginning is required\n",
               stderr);
    return kExitUsage;
  }
  return command_checkpoint_set(checkpoint_command, registry);
}

}  // namespace cdcd
