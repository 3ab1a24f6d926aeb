#include "sinks/redis/redis_sink_config.h"

namespace cdcd::redis {

namespace {

void read_key_rules(config::Node& options, RedisSinkConfig& config) {
  config::Node keys = options.child("keys", /*required=*/true);
  if (!keys.defined() || !keys.expect_map()) return;
  bool reads_old = false;
  for (auto& [pattern, node] : keys.entries()) {
    KeyRule rule{pattern, {}};
    // A single template may be written without the list brackets.
    std::vector<config::Node> elements;
    if (node.is_sequence()) {
      elements = node.elements();
    } else {
      elements.push_back(node);
    }
    if (elements.empty()) node.error("expected a list of key templates such as \"user:{key.id}\"");
    for (auto& element : elements) {
      auto text = element.scalar();
      if (!text) continue;
      auto parsed = ChangeTemplate::parse(
          *text, TemplateImages{.key = true, .new_row = true, .old_row = true});
      if (!parsed) {
        element.error(parsed.error().message);
        continue;
      }
      if (parsed->reads(RowImage::kOld)) reads_old = true;
      rule.templates.push_back(std::move(*parsed));
    }
    config.keys.push_back(std::move(rule));
  }
  if (reads_old) {
    options.diagnostics().warn(
        keys.location(), keys.path(),
        "a key template reads {old.FIELD}: PostgreSQL sends the old values of non-key columns "
        "only for tables with REPLICA IDENTITY FULL, and no source sends old values on inserts; "
        "such a key is skipped for a change that lacks the field (counted in "
        "cdcd_redis_templates_skipped_total)");
  }
}

// Options of the contract that this build does not implement yet: refused by name, so a
// configuration never silently runs without them.
void refuse_unimplemented(config::Node& options) {
  for (const char* name : {"double_delete", "publish", "stream"}) {
    if (options.has(name)) {
      options.child(name).error(std::string(name) + " is not supported yet");
    }
  }
}

}  // namespace

std::optional<RedisSinkConfig> parse_redis_sink_config(config::Node& options) {
  const auto errors_before = options.diagnostics().errors();
  RedisSinkConfig config;
  if (auto connection = parse_connection_options(options)) config.connection = *connection;
  config.cluster = options.boolean("cluster").value_or(false);
  if (config.cluster && config.connection.database != 0) {
    options.error_at("url", "a Redis Cluster has only database 0; drop the URL's /db");
  }
  options.one_of("mode", {"invalidate"});
  read_key_rules(options, config);
  auto command = options.one_of("command", {"unlink", "del"}).value_or("unlink");
  config.command = command == "del" ? DeleteCommand::kDel : DeleteCommand::kUnlink;
  config::Node fence = options.child("fence");
  if (fence.defined() && fence.expect_map()) {
    config.fence_ttl = fence.duration("ttl", /*required=*/true);
    if (config.fence_ttl && config.fence_ttl->count() < 1000) {
      fence.error_at("ttl", "must be at least 1s: it must outlast the slowest read-through fill");
    }
    fence.check_unknown_keys();
  }
  refuse_unimplemented(options);
  options.check_unknown_keys();
  if (options.diagnostics().errors() != errors_before) return std::nullopt;
  return config;
}

}  // namespace cdcd::redis
