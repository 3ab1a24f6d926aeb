#include "daemon/plugin/registry.h"

namespace cdcd {

namespace {

template <typename Map>
const typename Map::mapped_type* find(const Map& map, const std::string& type) {
  auto it = map.find(type);
  return it == map.end() ? nullptr : &it->second;
}

template <typename Map>
std::vector<std::string> keys(const Map& map) {
  std::vector<std::string> names;
  for (const auto& [name, factory] : map) names.push_back(name);
  return names;
}

}  // namespace

void PluginRegistry::add_source(const std::string& type, SourceFactory factory) {
  sources_[type] = std::move(factory);
}
void PluginRegistry::add_sink(const std::string& type, SinkFactory factory) {
  sinks_[type] = std::move(factory);
}
void PluginRegistry::add_checkpoint_store(const std::string& type, CheckpointStoreFactory factory) {
  checkpoint_stores_[type] = std::move(factory);
}

void PluginRegistry::add_checkpoint_store_scheme(const std::string& scheme, const std::string& type,
                                                 CheckpointStoreUrlOptions options) {
  checkpoint_store_schemes_[scheme] = CheckpointStoreScheme{type, std::move(options)};
}

const SourceFactory* PluginRegistry::source(const std::string& type) const {
  return find(sources_, type);
}
const SinkFactory* PluginRegistry::sink(const std::string& type) const {
  return find(sinks_, type);
}
const CheckpointStoreFactory* PluginRegistry::checkpoint_store(const std::string& type) const {
  return find(checkpoint_stores_, type);
}

const PluginRegistry::CheckpointStoreScheme* PluginRegistry::checkpoint_store_scheme(
    const std::string& scheme) const {
  return find(checkpoint_store_schemes_, scheme);
}

std::vector<std::string> PluginRegistry::source_types() const { return keys(sources_); }
std::vector<std::string> PluginRegistry::sink_types() const { return keys(sinks_); }
std::vector<std::string> PluginRegistry::checkpoint_store_types() const {
  return keys(checkpoint_stores_);
}

std::vector<std::string> PluginRegistry::checkpoint_store_schemes() const {
  return keys(checkpoint_store_schemes_);
}

}  // namespace cdcd
