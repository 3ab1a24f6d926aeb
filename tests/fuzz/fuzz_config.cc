// libFuzzer target: the config loader — YAML text through parse_config() with the real plugin
// registry, so that every plugin's option validation runs on the fuzzed text too.
//
// Besides memory errors, undefined behaviour and escaping exceptions, it checks the loader's
// contract: a config is either accepted without an error (warnings allowed) or rejected with at
// least one, and every diagnostic points at a real position (line and column from 1).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "daemon/config/daemon_config.h"
#include "daemon/plugin/registry.h"

namespace {

[[noreturn]] void die(const std::string& what, const cdcd::config::Diagnostics& diagnostics) {
  std::fprintf(stderr, "%s\n%s", what.c_str(), diagnostics.to_string().c_str());
  std::abort();
}

const cdcd::PluginRegistry& registry() {
  static const cdcd::PluginRegistry instance = [] {
    cdcd::PluginRegistry registry;
    cdcd::register_builtin_plugins(registry);
    return registry;
  }();
  return instance;
}

std::shared_ptr<spdlog::logger> quiet_logger(const std::string& name) {
  return std::make_shared<spdlog::logger>(name, std::make_shared<spdlog::sinks::null_sink_mt>());
}

// ${HOME} and ${DATA_DIR} are set, anything else is not.
std::optional<std::string> fake_env(const std::string& name) {
  if (name == "HOME") return "/home/fuzz";
  if (name == "DATA_DIR") return "/srv/data";
  return std::nullopt;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  cdcd::PluginEnvironment plugins{nullptr, quiet_logger};
  cdcd::config::Diagnostics diagnostics;
  auto config = cdcd::parse_config(text, "fuzz.yaml", registry(), plugins, diagnostics, fake_env);
  if (config && diagnostics.errors() != 0) die("accepted with errors", diagnostics);
  if (!config && diagnostics.errors() == 0) die("rejected without an error", diagnostics);
  for (const auto& item : diagnostics.items()) {
    if (item.where.line < 1 || item.where.column < 1)
      die("diagnostic without a position", diagnostics);
  }
  return 0;
}
