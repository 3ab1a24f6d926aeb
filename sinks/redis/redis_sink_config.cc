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

// A channel or stream key: one name per entity (row fields would make one per row).
std::optional<ChangeTemplate> read_name_template(config::Node& node, const std::string& key,
                                                 bool required) {
  auto text = node.string(key, required);
  if (!text) return std::nullopt;
  auto parsed = ChangeTemplate::parse(*text, TemplateImages{});
  if (!parsed) {
    node.error_at(key, parsed.error().message);
    return std::nullopt;
  }
  return std::move(*parsed);
}

void read_stream(config::Node& options, RedisSinkConfig& config) {
  config::Node stream = options.child("stream", config.mode == SinkMode::kStream);
  if (!stream.defined()) return;
  if (config.mode != SinkMode::kStream) {
    stream.error("stream settings need mode: stream");
    return;
  }
  if (!stream.expect_map()) return;
  auto key = read_name_template(stream, "key", /*required=*/true);
  StreamSettings settings{key ? std::move(*key) : ChangeTemplate(), std::nullopt, Format::kNative};
  if (stream.has("maxlen")) {
    settings.maxlen = stream.integer("maxlen", 1, std::int64_t{1} << 62);
  }
  if (auto format = stream.one_of("format", {"native", "debezium", "mongodb"})) {
    settings.format = *parse_format(*format);
  }
  stream.check_unknown_keys();
  if (key) config.stream = std::move(settings);
}

// Options that only make sense when invalidating keys.
void refuse_outside_invalidate(config::Node& options, const RedisSinkConfig& config) {
  if (config.mode == SinkMode::kInvalidate) return;
  for (const char* name : {"fence", "double_delete", "command"}) {
    if (options.has(name)) {
      options.child(name).error(std::string(name) + " applies to mode: invalidate only");
    }
  }
  if (config.mode == SinkMode::kStream && options.has("keys")) {
    options.child("keys").error("keys applies to mode: invalidate or publish");
    options.mark_known({"keys"});
  }
}

void read_window(config::Node& options, RedisSinkConfig& config) {
  config::Node window = options.child("window");
  if (!window.defined() || !window.expect_map()) return;
  if (auto commands = window.integer("commands", 1, 1 << 24)) {
    config.window_commands = static_cast<std::size_t>(*commands);
  }
  if (auto bytes = window.size("bytes")) {
    if (*bytes < 4096) {
      window.error_at("bytes", "must be at least 4KiB");
    } else {
      config.window_bytes = *bytes;
    }
  }
  window.check_unknown_keys();
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
  auto mode = options.one_of("mode", {"invalidate", "stream", "publish"}).value_or("invalidate");
  config.mode = mode == "stream"    ? SinkMode::kStream
                : mode == "publish" ? SinkMode::kPublish
                                    : SinkMode::kInvalidate;
  refuse_outside_invalidate(options, config);
  if (config.mode == SinkMode::kInvalidate || options.has("keys")) {
    read_key_rules(options, config);
  }
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
  config.double_delete = options.duration("double_delete");
  if (config.double_delete && config.double_delete->count() <= 0) {
    options.error_at("double_delete", "must be longer than 0ms");
  }
  if (config.mode == SinkMode::kStream && options.has("publish")) {
    options.child("publish").error("publish applies to mode: invalidate or publish");
  } else {
    config.publish =
        read_name_template(options, "publish", /*required=*/config.mode == SinkMode::kPublish);
  }
  read_stream(options, config);
  read_window(options, config);
  options.check_unknown_keys();
  if (options.diagnostics().errors() != errors_before) return std::nullopt;
  return config;
}

}  // namespace cdcd::redis
