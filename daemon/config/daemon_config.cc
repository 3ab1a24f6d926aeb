#include "daemon/config/daemon_config.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string_view>

#include <spdlog/spdlog.h>
#include <yaml-cpp/eventhandler.h>

#include "daemon/core/lsn.h"
#include "daemon/format/rfc3339.h"
#include "daemon/metrics/metrics.h"

namespace cdcd {

namespace {

using config::Diagnostics;
using config::Location;
using config::Node;

constexpr std::int64_t kMaxBatchEvents = 1'000'000;
constexpr std::int64_t kMaxInFlight = 1024;
constexpr std::uint64_t kMinQueueBytes = 64 << 10;
constexpr std::int64_t kMaxLsn = std::numeric_limits<std::int64_t>::max();

const std::vector<std::string> kTopLevelRequired = {"sources", "sinks", "consumers"};
const std::vector<std::string> kLogLevels = {"trace", "debug",    "info", "warn",
                                             "error", "critical", "off"};

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& word : words) out += (out.empty() ? "" : ", ") + word;
  return out;
}

bool contains(const std::vector<std::string>& words, const std::string& word) {
  return std::find(words.begin(), words.end(), word) != words.end();
}

Location location_of(const YAML::Mark& mark, const std::string& file) {
  if (mark.line < 0 || mark.column < 0) return {file, 1, 1};
  return {file, mark.line + 1, mark.column + 1};
}

// Walks the whole document once, before any Node reads it: reports duplicate keys (yaml-cpp keeps
// both entries and lookups see only the first) and remembers the raw text of every scalar by
// position, so that diagnostics quote what the file says, never an interpolated value.
class DocumentScan {
 public:
  DocumentScan(std::string file, Diagnostics& diagnostics)
      : file_(std::move(file)), diagnostics_(diagnostics) {}

  void walk(const YAML::Node& node, const std::string& path) {
    if (node.IsScalar()) {
      Location at = location_of(node.Mark(), file_);
      raw_.emplace(std::pair(at.line, at.column), node.Scalar());
      return;
    }
    if (!node.IsMap() && !node.IsSequence()) return;
    // An alias to an enclosing anchor makes a cycle: visit each collection once.
    if (!visited_.insert(node.Mark().pos).second) return;
    if (node.IsSequence()) {
      for (std::size_t i = 0; i < node.size(); ++i) {
        walk(node[i], path + "[" + std::to_string(i) + "]");
      }
      return;
    }
    std::map<std::string, int> first_line;
    for (auto it = node.begin(); it != node.end(); ++it) {
      Location at = location_of(it->first.Mark(), file_);
      if (!it->first.IsScalar()) {
        diagnostics_.add(at, path, "keys must be plain strings");
        continue;
      }
      const std::string& key = it->first.Scalar();
      std::string child = path.empty() ? key : path + "." + key;
      keys_.emplace(child, at);
      auto [first, inserted] = first_line.emplace(key, at.line);
      if (!inserted) {
        diagnostics_.add(at, child,
                         "duplicate key " + config::quote(key) + " (first defined at line " +
                             std::to_string(first->second) + ")");
      }
      walk(it->second, child);
    }
  }

  // The raw text of the scalar at `where`, as written in the file.
  std::optional<std::string> raw_at(const Location& where) const {
    auto it = raw_.find(std::pair(where.line, where.column));
    if (it == raw_.end()) return std::nullopt;
    return it->second;
  }

  // Where the key ending `path` is written (the first one, if repeated).
  std::optional<Location> key_at(const std::string& path) const {
    auto it = keys_.find(path);
    if (it == keys_.end()) return std::nullopt;
    return it->second;
  }

 private:
  std::string file_;
  Diagnostics& diagnostics_;
  std::set<int> visited_;
  std::map<std::pair<int, int>, std::string> raw_;
  std::map<std::string, Location> keys_;
};

// A name of a source, sink or consumer: it becomes a metric label, a logger name and, for
// consumers, a checkpoint file name, so no path separators or spaces.
bool valid_name(const std::string& name) {
  if (name.empty() || name.front() == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

// Why `listen` is not an address the HTTP server can bind, or nullopt when it is: "HOST:PORT" or
// ":PORT" (all interfaces), port 0 (the kernel picks one, as tests do) to 65535. Debian's civetweb
// is built without IPv6, so a bracketed IPv6 host would only fail later, when binding.
std::optional<std::string> listen_problem(const std::string& listen, const std::string& shown) {
  const std::string expected = "expected HOST:PORT or :PORT such as 127.0.0.1:9187, got " + shown;
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return expected;
  std::string host = listen.substr(0, colon);
  std::string port = listen.substr(colon + 1);
  if (!host.empty() && (host.front() == '[' || host.find(':') != std::string::npos)) {
    return "IPv6 addresses are not supported (the HTTP server is built without IPv6), got " + shown;
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return expected;
  }
  if (std::stoi(port) > 65535) return "port " + port + " is out of range 0-65535";
  return std::nullopt;
}

std::optional<std::string> getenv_lookup(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (!value) return std::nullopt;
  return std::string(value);
}

class Parser {
 public:
  Parser(const PluginRegistry& registry, const PluginEnvironment& plugins, const DocumentScan& scan)
      : registry_(registry), plugins_(plugins), scan_(scan) {}

  DaemonConfig parse(Node& root) {
    parse_sources(root);
    parse_sinks(root);
    parse_checkpoints(root);
    parse_consumers(root);
    parse_metrics(root);
    parse_log(root);
    if (auto timeout = root.duration("shutdown_timeout")) {
      if (timeout->count() == 0) {
        root.error_at("shutdown_timeout", "must be greater than 0");
      } else {
        config_.shutdown_timeout = *timeout;
      }
    }
    root.check_unknown_keys();
    return std::move(config_);
  }

 private:
  // How a value appears in a message: its raw text, never the interpolated value.
  std::string shown(const Node& node, const std::string& value) const {
    auto raw = scan_.raw_at(node.location());
    if (!raw) return "a value";
    return config::quote(*raw) + (*raw == value ? "" : " after interpolation");
  }

  // " (did you mean "x"?)", or "; WHAT are: a, b" when nothing is close.
  static std::string suggestion(const std::string& word, const std::vector<std::string>& names,
                                const std::string& what) {
    if (auto match = config::closest_match(word, names)) {
      return " (did you mean \"" + *match + "\"?)";
    }
    return "; " + what + " are: " + (names.empty() ? "none" : join(names));
  }

  std::shared_ptr<spdlog::logger> logger(const std::string& name) const {
    if (plugins_.logger) return plugins_.logger(name);
    return spdlog::default_logger()->clone(name);
  }

  std::shared_ptr<prometheus::Registry> metrics_registry() const {
    return plugins_.metrics ? plugins_.metrics->registry() : nullptr;
  }

  // The entries of a required, non-empty map of named things (sources, sinks, consumers).
  std::vector<std::pair<std::string, Node>> named_entries(Node& root, const std::string& key,
                                                          const std::string& what) {
    Node map = root.child(key, true);
    if (!map.defined() || !map.expect_map()) return {};
    auto entries = map.entries();
    if (entries.empty()) map.error("at least one " + what + " is required");
    for (auto& [name, entry] : entries) {
      if (valid_name(name)) continue;
      auto at = scan_.key_at(entry.path());
      entry.diagnostics().add(at ? *at : entry.location(), entry.path(),
                              "invalid name " + config::quote(name) +
                                  ": use letters, digits, \"_\", \"-\" and \".\" (not first)");
    }
    return entries;
  }

  // Reads "type" and checks that a plugin of that kind has this name.
  std::optional<std::string> plugin_type(Node& entry, const std::string& kind,
                                         const std::vector<std::string>& types) {
    auto type = entry.string("type", true);
    if (!type || contains(types, *type)) return type;
    entry.error_at("type", "unknown " + kind + " type " + shown(entry.child("type"), *type) +
                               suggestion(*type, types, "available types"));
    return std::nullopt;
  }

  // Runs a plugin factory. It reports its own option errors; one that fails without a word, or
  // throws despite the interface contract, still gets a diagnostic.
  template <typename Factory, typename Context>
  auto create(const Factory& factory, Node& options, const Context& context,
              const std::string& what) -> decltype(factory(options, context)) {
    std::size_t before = options.diagnostics().items().size();
    decltype(factory(options, context)) instance;
    try {
      instance = factory(options, context);
    } catch (const std::exception& e) {
      options.error(what + " plugin failed: " + e.what());
      return nullptr;
    }
    if (!instance && options.diagnostics().items().size() == before) {
      options.error(what + " plugin rejected its options");
    }
    return instance;
  }

  void parse_sources(Node& root) {
    for (auto& [name, entry] : named_entries(root, "sources", "source")) {
      source_names_.push_back(name);
      if (!entry.expect_map()) continue;
      auto type = plugin_type(entry, "source", registry_.source_types());
      if (!type) continue;
      SourceContext context{name, logger("source." + name), metrics_registry(),
                            plugins_.metrics ? plugins_.metrics->source(name) : SourceMetrics{}};
      auto source = create(*registry_.source(*type), entry, context, "the " + *type + " source");
      if (source) config_.sources.push_back({name, *type, std::move(source)});
    }
  }

  void parse_sinks(Node& root) {
    for (auto& [name, entry] : named_entries(root, "sinks", "sink")) {
      sink_names_.push_back(name);
      if (!entry.expect_map()) continue;
      auto type = plugin_type(entry, "sink", registry_.sink_types());
      if (!type) continue;
      SinkContext context{name, logger("sink." + name), metrics_registry(),
                          plugins_.metrics ? plugins_.metrics->sink(name) : SinkMetrics{}};
      auto sink = create(*registry_.sink(*type), entry, context, "the " + *type + " sink");
      if (sink) config_.sinks.push_back({name, *type, std::move(sink)});
    }
  }

  // The top-level store: optional when every consumer names its own.
  void parse_checkpoints(Node& root) {
    Node node = root.child("checkpoints");
    if (!node.defined()) return;
    // Declared: a consumer without its own store uses it (its problems are reported here).
    has_top_level_store_ = true;
    if (!node.expect_map()) return;
    if (auto store = store_from_map(node, "checkpoints")) {
      default_interval_ = store->interval;
      config_.checkpoint_stores.push_back(std::move(*store));
    }
  }

  // `{type: T, interval: D, ...the store's options}`, as the top-level `checkpoints`.
  std::optional<CheckpointStoreInstance> store_from_map(Node& node, const std::string& name) {
    CheckpointStoreInstance instance;
    instance.name = name;
    instance.interval = default_interval_;
    auto type = plugin_type(node, "checkpoint store", registry_.checkpoint_store_types());
    if (auto interval = node.duration("interval")) {
      if (interval->count() == 0) {
        node.error_at("interval", "must be greater than 0");
      } else {
        instance.interval = *interval;
      }
    }
    if (!type) return std::nullopt;
    instance.type = *type;
    CheckpointStoreContext context{logger(name)};
    instance.store = create(*registry_.checkpoint_store(*type), node, context,
                            "the " + *type + " checkpoint store");
    if (!instance.store) return std::nullopt;
    return instance;
  }

  // A consumer's own `checkpoints`: a store URL (redis://..., file:///..., postgres://...) or a
  // map like the top-level one. Consumers naming the same URL share one store.
  void parse_consumer_store(Node& consumer_node, ConsumerConfig& consumer) {
    Node node = consumer_node.child("checkpoints");
    if (!node.defined()) {
      if (!has_top_level_store_) {
        consumer_node.error("consumer " + consumer.name +
                            " has no checkpoint store: set `checkpoints` at the top level, or on "
                            "the consumer (a URL such as redis://HOST:PORT/0?key=PREFIX, "
                            "file:///var/lib/cdcd/checkpoints, postgres://HOST/DB)");
      }
      return;
    }
    const std::string name = "consumers." + consumer.name + ".checkpoints";
    std::optional<CheckpointStoreInstance> store;
    if (node.is_scalar()) {
      auto raw = scan_.raw_at(node.location());
      if (!raw) return;
      if (auto shared = store_by_url_.find(*raw); shared != store_by_url_.end()) {
        consumer.checkpoint_store = shared->second;
        return;
      }
      store = store_from_url(node, *raw, name);
      if (store) store_by_url_[*raw] = config_.checkpoint_stores.size();
    } else if (node.expect_map()) {
      store = store_from_map(node, name);
    }
    if (!store) return;
    consumer.checkpoint_store = config_.checkpoint_stores.size();
    config_.checkpoint_stores.push_back(std::move(*store));
  }

  std::optional<CheckpointStoreInstance> store_from_url(Node& node, const std::string& url,
                                                        const std::string& name) {
    std::vector<std::string> schemes;
    for (const auto& scheme : registry_.checkpoint_store_schemes())
      schemes.push_back(scheme + "://");
    auto separator = url.find("://");
    const auto* scheme = separator == std::string::npos
                             ? nullptr
                             : registry_.checkpoint_store_scheme(url.substr(0, separator));
    if (!scheme) {
      node.error("expected a checkpoint store URL (" + join(schemes) +
                 ") or a map with `type`, got " + config::quote(url));
      return std::nullopt;
    }
    auto options = scheme->options(url);
    if (!options) {
      node.error(options.error().message);
      return std::nullopt;
    }
    Node stand_in = node.stand_in(*options);
    CheckpointStoreInstance instance;
    instance.name = name;
    instance.type = scheme->type;
    instance.interval = default_interval_;
    CheckpointStoreContext context{logger(name)};
    instance.store = create(*registry_.checkpoint_store(scheme->type), stand_in, context,
                            "the " + scheme->type + " checkpoint store");
    if (!instance.store) return std::nullopt;
    return instance;
  }

  void parse_consumers(Node& root) {
    for (auto& [name, node] : named_entries(root, "consumers", "consumer")) {
      if (!node.expect_map()) continue;
      ConsumerConfig consumer;
      consumer.name = name;
      parse_consumer(node, consumer);
      config_.consumers.push_back(std::move(consumer));
    }
  }

  void parse_consumer(Node& node, ConsumerConfig& consumer) {
    if (auto source = node.string("source", true)) {
      // With no source declared, the sources section has been reported already.
      if (!source_names_.empty() && !contains(source_names_, *source)) {
        node.error_at("source", "no source named " + shown(node.child("source"), *source) +
                                    suggestion(*source, source_names_, "defined sources"));
      }
      consumer.source = *source;
    }
    parse_sink_list(node, consumer);
    parse_consumer_store(node, consumer);
    if (auto entities = node.string_list("entities")) {
      if (entities->empty()) {
        node.error_at("entities", "must not be empty (use [\"*\"] for every entity)");
      } else {
        consumer.entities = std::move(*entities);
      }
    }
    if (auto excluded = node.string_list("exclude_entities")) {
      consumer.exclude_entities = std::move(*excluded);
    }
    parse_operations(node, consumer);
    parse_start(node, consumer.start);
    parse_batch(node, consumer.batch);
    parse_on_error(node, consumer);
    if (auto bytes = node.size("max_queue_bytes")) {
      if (*bytes < kMinQueueBytes) {
        node.error_at("max_queue_bytes", "must be at least 64KiB");
      } else {
        consumer.max_queue_bytes = *bytes;
      }
    }
    node.check_unknown_keys();
  }

  void parse_sink_list(Node& node, ConsumerConfig& consumer) {
    Node list = node.child("sinks", true);
    auto names = node.string_list("sinks");
    if (!names) return;
    if (names->empty()) list.error("at least one sink is required");
    std::vector<Node> elements = list.elements();
    std::set<std::string> seen;
    for (std::size_t i = 0; i < names->size(); ++i) {
      const std::string& name = (*names)[i];
      if (!sink_names_.empty() && !contains(sink_names_, name)) {
        elements[i].error("no sink named " + shown(elements[i], name) +
                          suggestion(name, sink_names_, "defined sinks"));
      } else if (!seen.insert(name).second) {
        elements[i].error("sink " + shown(elements[i], name) + " is listed twice");
      }
    }
    consumer.sinks = std::move(*names);
  }

  void parse_operations(Node& node, ConsumerConfig& consumer) {
    Node list = node.child("operations");
    auto names = node.string_list("operations");
    if (!names) return;
    if (names->empty()) list.error("must list at least one operation");
    std::vector<std::string> valid;
    for (Operation op : kAllOperations) valid.emplace_back(to_string(op));
    std::vector<Node> elements = list.elements();
    bool all_valid = true;
    for (std::size_t i = 0; i < names->size(); ++i) {
      auto op = parse_operation((*names)[i]);
      if (!op) {
        all_valid = false;
        elements[i].error("expected one of " + join(valid) + ", got " +
                          shown(elements[i], (*names)[i]) + did_you_mean((*names)[i], valid));
      } else if (std::find(consumer.operations.begin(), consumer.operations.end(), *op) ==
                 consumer.operations.end()) {
        consumer.operations.push_back(*op);
      }
    }
    if (all_valid) warn_if_reads_filtered(list, consumer);
  }

  // A source's snapshot rows arrive as `read` changes: an operations list without read drops
  // them all, which is legal (the consumer may want only what changes from now on) but rarely
  // meant.
  void warn_if_reads_filtered(Node& list, const ConsumerConfig& consumer) {
    if (consumer.operations.empty() ||
        std::find(consumer.operations.begin(), consumer.operations.end(), Operation::kRead) !=
            consumer.operations.end()) {
      return;
    }
    for (const auto& source : config_.sources) {
      if (source.name != consumer.source || !source.source->emits_reads()) continue;
      list.diagnostics().warn(list.location(), list.path(),
                              "source \"" + source.name +
                                  "\" takes an initial snapshot, whose rows arrive as read "
                                  "changes; this list leaves out read, so they never reach the "
                                  "sinks (add read to deliver them)");
    }
  }

  static std::string did_you_mean(const std::string& word, const std::vector<std::string>& names) {
    auto match = config::closest_match(word, names);
    return match ? " (did you mean \"" + *match + "\"?)" : "";
  }

  void parse_start(Node& consumer, StartConfig& start) {
    Node node = consumer.child("start");
    if (!node.defined()) return;
    const std::string expected = "expected checkpoint, beginning, {lsn: N} or {timestamp: RFC3339}";
    if (node.is_scalar()) {
      auto mode = node.scalar();
      if (!mode) return;
      if (*mode == "checkpoint") {
        start.kind = StartConfig::Kind::kCheckpoint;
      } else if (*mode == "beginning") {
        start.kind = StartConfig::Kind::kBeginning;
      } else {
        node.error(expected + ", got " + shown(node, *mode) +
                   did_you_mean(*mode, {"checkpoint", "beginning"}));
      }
      return;
    }
    if (!node.is_map()) {
      node.error(expected + ", got a list");
      return;
    }
    bool has_lsn = node.has("lsn");
    bool has_timestamp = node.has("timestamp");
    if (has_lsn && has_timestamp) {
      node.error("give either lsn or timestamp, not both");
    } else if (has_lsn) {
      parse_start_lsn(node, start);
    } else if (has_timestamp) {
      parse_start_timestamp(node, start);
    } else {
      node.error(expected);
    }
    node.check_unknown_keys();
  }

  // A number, or PostgreSQL's X/Y form as pg_current_wal_lsn() and the postgres source's messages
  // show it.
  void parse_start_lsn(Node& node, StartConfig& start) {
    Node lsn_node = node.child("lsn");
    if (auto text = lsn_node.is_scalar() ? lsn_node.scalar() : std::nullopt;
        text && text->find('/') != std::string::npos) {
      if (auto lsn = parse_lsn(*text)) {
        start.kind = StartConfig::Kind::kLsn;
        start.lsn = *lsn;
      } else {
        lsn_node.error(
            "expected an lsn: a number, or PostgreSQL's X/Y form such as 0/16B3748, "
            "got " +
            shown(lsn_node, *text));
      }
      return;
    }
    if (auto lsn = node.integer("lsn", 0, kMaxLsn, true)) {
      start.kind = StartConfig::Kind::kLsn;
      start.lsn = static_cast<std::uint64_t>(*lsn);
    }
  }

  void parse_start_timestamp(Node& node, StartConfig& start) {
    auto text = node.string("timestamp", true);
    if (!text) return;
    if (auto micros = parse_rfc3339_us(*text)) {
      start.kind = StartConfig::Kind::kTimestamp;
      start.timestamp_us = *micros;
      return;
    }
    node.error_at("timestamp",
                  "expected an RFC3339 timestamp such as 2025-11-21T10:00:00Z or "
                  "2025-11-21T12:00:00.5+02:00, got " +
                      shown(node.child("timestamp"), *text));
  }

  void parse_batch(Node& consumer, BatchConfig& batch) {
    Node node = consumer.child("batch");
    if (!node.defined() || !node.expect_map()) return;
    if (auto events = node.integer("max_events", 1, kMaxBatchEvents)) batch.max_events = *events;
    if (auto bytes = node.size("max_bytes")) {
      if (*bytes == 0) {
        node.error_at("max_bytes", "must be greater than 0");
      } else {
        batch.max_bytes = *bytes;
      }
    }
    if (auto wait = node.duration("max_wait")) batch.max_wait = *wait;
    if (auto eager = node.boolean("send_when_caught_up")) batch.send_when_caught_up = *eager;
    if (auto in_flight = node.integer("max_in_flight", 1, kMaxInFlight)) {
      batch.max_in_flight = *in_flight;
    }
    node.check_unknown_keys();
  }

  void parse_on_error(Node& node, ConsumerConfig& consumer) {
    auto policy = node.one_of("on_error", {"stop", "dead_letter"});
    bool dead_letter = policy == "dead_letter";
    if (dead_letter) consumer.on_error = OnError::kDeadLetter;
    auto sink = node.string("dead_letter_sink");
    if (!sink) {
      if (dead_letter && !node.has("dead_letter_sink")) {
        node.error("missing required key \"dead_letter_sink\" (on_error is dead_letter)");
      }
      return;
    }
    Node sink_node = node.child("dead_letter_sink");
    // A wrong on_error was reported already; a dead_letter_sink next to it says nothing new.
    if (!dead_letter && (policy || !node.has("on_error"))) {
      sink_node.error("dead_letter_sink is only used with on_error: dead_letter");
    } else if (!sink_names_.empty() && !contains(sink_names_, *sink)) {
      sink_node.error("no sink named " + shown(sink_node, *sink) +
                      suggestion(*sink, sink_names_, "defined sinks"));
    } else if (contains(consumer.sinks, *sink)) {
      sink_node.error("the dead-letter sink " + shown(sink_node, *sink) +
                      " must not also be one of the consumer's sinks");
    }
    consumer.dead_letter_sink = *sink;
  }

  void parse_metrics(Node& root) {
    Node node = root.child("metrics");
    if (!node.defined() || !node.expect_map()) return;
    if (auto listen = node.string("listen", true)) {
      if (auto problem = listen_problem(*listen, shown(node.child("listen"), *listen))) {
        node.error_at("listen", *problem);
      } else {
        config_.metrics.listen = *listen;
      }
    }
    node.check_unknown_keys();
  }

  void parse_log(Node& root) {
    Node node = root.child("log");
    if (!node.defined() || !node.expect_map()) return;
    if (auto level = node.one_of("level", kLogLevels)) config_.log.level = *level;
    if (auto format = node.one_of("format", {"text", "json"})) config_.log.format = *format;
    node.check_unknown_keys();
  }

  const PluginRegistry& registry_;
  const PluginEnvironment& plugins_;
  const DocumentScan& scan_;
  DaemonConfig config_;
  // Every declared name, even when its plugin failed, so that consumers naming it are not
  // reported a second time.
  std::vector<std::string> source_names_;
  std::vector<std::string> sink_names_;
  std::chrono::milliseconds default_interval_{1000};  // the top-level store's
  bool has_top_level_store_ = false;
  std::map<std::string, std::size_t> store_by_url_;  // raw URL -> index in checkpoint_stores
};

// Where the indentation of line `line` (0-based) holds a tab, if it does and the line holds more.
std::optional<Location> tab_in_indentation(std::string_view text, int line,
                                           const std::string& file) {
  if (line < 0) return std::nullopt;  // an exception without a position
  std::size_t start = 0;
  for (int i = 0; i < line; ++i) {
    start = text.find('\n', start);
    if (start == std::string_view::npos) return std::nullopt;
    ++start;
  }
  std::string_view rest = text.substr(start, text.find('\n', start) - start);
  std::size_t content = rest.find_first_not_of(" \t");
  std::size_t tab = rest.substr(0, content).find('\t');
  if (content == std::string_view::npos || tab == std::string_view::npos) return std::nullopt;
  return Location{file, line + 1, static_cast<int>(tab) + 1};
}

// yaml-cpp 0.7's LoadAll() never returns on a document that starts with a token no node can start
// with (a lone ","): it reports an empty document there again and again, allocating each time
// (jbeder/yaml-cpp#1040, fixed in 0.8.1). Records where each document starts, to stop there.
class DocumentStarts : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

  std::vector<YAML::Mark> starts;
};

// Where a document starts at the same place as the one before (LoadAll() would loop there), if
// one does. Throws YAML::Exception as LoadAll() does.
std::optional<YAML::Mark> stuck_document(const std::string& text) {
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  DocumentStarts documents;
  while (parser.HandleNextDocument(documents)) {
    const auto& starts = documents.starts;
    if (starts.size() >= 2 && starts.back().pos == starts[starts.size() - 2].pos) {
      return starts.back();
    }
  }
  return std::nullopt;
}

// The single YAML document of the file, or nullopt after reporting why there is none.
std::optional<YAML::Node> load_document(const std::string& text, const std::string& file,
                                        Diagnostics& diagnostics) {
  std::vector<YAML::Node> documents;
  try {
    if (auto stuck = stuck_document(text)) {
      diagnostics.add(location_of(*stuck, file), "",
                      "invalid YAML: unexpected " + config::quote(text.substr(stuck->pos, 1)));
      return std::nullopt;
    }
    documents = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    // yaml-cpp words a tab in indentation as a broken structure ("illegal map value", "end of
    // map not found") at the tab's line.
    if (auto tab = tab_in_indentation(text, e.mark.line, file)) {
      diagnostics.add(*tab, "",
                      "invalid YAML: a tab in indentation (YAML indents with spaces only)");
    } else {
      diagnostics.add(location_of(e.mark, file), "", "invalid YAML: " + e.msg);
    }
    return std::nullopt;
  }
  if (documents.empty() || documents.front().IsNull()) {
    diagnostics.add({file, 1, 1}, "",
                    "the configuration is empty; expected a map with " + join(kTopLevelRequired));
    return std::nullopt;
  }
  for (std::size_t i = 1; i < documents.size(); ++i) {
    if (documents[i].IsNull()) continue;
    diagnostics.add(location_of(documents[i].Mark(), file), "",
                    "only one YAML document is allowed in a configuration file");
  }
  return documents.front();
}

}  // namespace

std::optional<DaemonConfig> parse_config(const std::string& text, const std::string& file,
                                         const PluginRegistry& registry,
                                         const PluginEnvironment& plugins,
                                         config::Diagnostics& diagnostics, config::EnvLookup env) {
  const std::size_t errors_before = diagnostics.errors();
  auto document = load_document(text, file, diagnostics);
  if (!document) return std::nullopt;
  auto context = std::make_shared<config::ParseContext>(
      config::ParseContext{file, &diagnostics, env ? std::move(env) : getenv_lookup});
  Node root(*document, "", context);
  if (!root.expect_map()) return std::nullopt;
  DocumentScan scan(file, diagnostics);
  scan.walk(*document, "");
  DaemonConfig config = Parser(registry, plugins, scan).parse(root);
  if (diagnostics.errors() != errors_before) return std::nullopt;
  config.file = file;
  return config;
}

std::optional<DaemonConfig> load_config(const std::string& path, const PluginRegistry& registry,
                                        const PluginEnvironment& plugins,
                                        config::Diagnostics& diagnostics, config::EnvLookup env) {
  if (path.empty()) {
    diagnostics.add({path, 0, 0}, "", "no config file given (the path is empty)");
    return std::nullopt;
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  std::string text;
  int error = fd < 0 ? errno : 0;
  char buffer[65536];
  while (fd >= 0 && error == 0) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) {
      text.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      error = errno;
    }
  }
  if (fd >= 0) ::close(fd);
  if (error != 0) {
    // No position: the problem is the file, not a place in it.
    diagnostics.add({path, 0, 0}, "", "cannot read " + path + ": " + std::strerror(error));
    return std::nullopt;
  }
  return parse_config(text, path, registry, plugins, diagnostics, std::move(env));
}

}  // namespace cdcd
