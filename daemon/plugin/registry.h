#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "daemon/config/node.h"
#include "daemon/core/result.h"
#include "daemon/plugin/checkpoint_store.h"
#include "daemon/plugin/sink.h"
#include "daemon/plugin/source.h"

namespace cdcd {

// Factories read their options from `options` (the plugin's config map; "type" is already read),
// report every problem there, and return nullptr if there was one. They must not do I/O: `cdcd
// validate` runs them offline.
using SourceFactory =
    std::function<std::unique_ptr<Source>(config::Node& options, const SourceContext& context)>;
using SinkFactory =
    std::function<std::unique_ptr<Sink>(config::Node& options, const SinkContext& context)>;
using CheckpointStoreFactory = std::function<std::unique_ptr<CheckpointStore>(
    config::Node& options, const CheckpointStoreContext& context)>;

// The options a checkpoint store URL stands for (a consumer's `checkpoints: URL`), built from the
// URL's raw text (before ${VAR} interpolation, which the store's options do when read), or the
// reason the URL is not one of the store's.
using CheckpointStoreUrlOptions = std::function<Result<YAML::Node>(const std::string& url)>;

// The plugins known by `type:` name. Filled once, before any thread starts, by
// register_builtin_plugins(); read-only afterwards.
class PluginRegistry {
 public:
  void add_source(const std::string& type, SourceFactory factory);
  void add_sink(const std::string& type, SinkFactory factory);
  void add_checkpoint_store(const std::string& type, CheckpointStoreFactory factory);
  // URLs with `scheme` ("redis" for redis://...) name a store of `type`.
  void add_checkpoint_store_scheme(const std::string& scheme, const std::string& type,
                                   CheckpointStoreUrlOptions options);

  const SourceFactory* source(const std::string& type) const;
  const SinkFactory* sink(const std::string& type) const;
  const CheckpointStoreFactory* checkpoint_store(const std::string& type) const;
  struct CheckpointStoreScheme {
    std::string type;
    CheckpointStoreUrlOptions options;
  };
  const CheckpointStoreScheme* checkpoint_store_scheme(const std::string& scheme) const;

  std::vector<std::string> source_types() const;
  std::vector<std::string> sink_types() const;
  std::vector<std::string> checkpoint_store_types() const;
  std::vector<std::string> checkpoint_store_schemes() const;

 private:
  std::map<std::string, SourceFactory> sources_;
  std::map<std::string, SinkFactory> sinks_;
  std::map<std::string, CheckpointStoreFactory> checkpoint_stores_;
  std::map<std::string, CheckpointStoreScheme> checkpoint_store_schemes_;
};

// Registers every plugin of this build: the one explicit list lives in CMakeLists.txt
// (CDCD_PLUGINS), from which this function is generated.
void register_builtin_plugins(PluginRegistry& registry);

}  // namespace cdcd
