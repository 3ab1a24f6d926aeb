#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace cdcd::config {

// 1-based position in a config file; line 0 for the file as a whole (e.g. it cannot be read).
struct Location {
  std::string file;
  int line = 0;
  int column = 0;
};

enum class Severity { kError, kWarning };

struct Diagnostic {
  Location where;
  std::string path;  // dotted path of the offending node, e.g. "consumers.orders.batch.max_wait"
  std::string message;
  Severity severity = Severity::kError;

  // "FILE:LINE:COLUMN: error: PATH: MESSAGE" ("warning" for a warning), without "PATH: " when the
  // path is empty (the document itself), and "error: MESSAGE" when there is no position.
  std::string format() const;
};

// Collects every problem of a config instead of stopping at the first. Errors reject the config;
// warnings point at something legal but probably unintended.
class Diagnostics {
 public:
  void add(Location where, std::string path, std::string message);
  void warn(Location where, std::string path, std::string message);
  bool empty() const { return items_.empty(); }
  std::size_t errors() const;
  const std::vector<Diagnostic>& items() const { return items_; }
  // One formatted diagnostic per line, in file order.
  std::string to_string() const;

 private:
  std::vector<Diagnostic> items_;
};

using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// State shared by every Node of one parsed file.
struct ParseContext {
  std::string file;
  Diagnostics* diagnostics = nullptr;
  EnvLookup env;
  // Where the problems of nodes built in memory (they have no position) are reported.
  std::optional<Location> origin = std::nullopt;
};

// A view of one YAML node that reports problems with their location. Plugins read their options
// through it; every key read is remembered, so that check_unknown_keys() can flag the rest with a
// "did you mean" suggestion. Scalars are ${VAR} / ${VAR:-default} interpolated when read.
class Node {
 public:
  Node(YAML::Node node, std::string path, std::shared_ptr<const ParseContext> context);

  const std::string& path() const { return path_; }
  Location location() const;
  bool defined() const { return node_.IsDefined() && !node_.IsNull(); }
  bool is_map() const { return node_.IsMap(); }
  bool is_sequence() const { return node_.IsSequence(); }
  bool is_scalar() const { return node_.IsScalar(); }

  // Reports that this node must be a map; returns false (and reports) when it is not.
  bool expect_map();

  bool has(const std::string& key);
  // The child node; an undefined Node if absent (and, with required, reported at this map).
  Node child(const std::string& key, bool required = false);

  std::optional<std::string> string(const std::string& key, bool required = false);
  std::optional<bool> boolean(const std::string& key, bool required = false);
  std::optional<std::int64_t> integer(const std::string& key, std::int64_t min, std::int64_t max,
                                      bool required = false);
  // "250ms", "5s", "1m", "2h"; a bare number is rejected to avoid unit mistakes.
  std::optional<std::chrono::milliseconds> duration(const std::string& key, bool required = false);
  // "512", "64KiB", "16MiB", "1GiB" (also KB/MB/GB as powers of 1000).
  std::optional<std::uint64_t> size(const std::string& key, bool required = false);
  std::optional<std::string> one_of(const std::string& key, const std::vector<std::string>& choices,
                                    bool required = false);
  std::optional<std::vector<std::string>> string_list(const std::string& key,
                                                      bool required = false);
  // A map of scalar to scalar (e.g. librdkafka properties), values interpolated.
  std::optional<std::map<std::string, std::string>> string_map(const std::string& key);

  // This node's own scalar value, interpolated.
  std::optional<std::string> scalar();

  // Children of a map in file order, as (key, Node); reports if this is not a map.
  std::vector<std::pair<std::string, Node>> entries();
  // Elements of a sequence.
  std::vector<Node> elements();

  // Reports every key of this map that nobody asked for, with the closest known key.
  void check_unknown_keys();
  // Declares keys as known without reading them (read by someone else, e.g. the runtime's "type").
  void mark_known(std::initializer_list<std::string> keys);

  // `node`, built in memory from this node's value (e.g. options a URL stands for), read in this
  // node's place: its problems are reported at this node's position, under this node's path.
  Node stand_in(YAML::Node node) const;

  void error(const std::string& message) const;
  void error_at(const std::string& key, const std::string& message);

  Diagnostics& diagnostics() const { return *context_->diagnostics; }

 private:
  std::optional<std::string> interpolate(const YAML::Node& scalar_node,
                                         const std::string& path) const;
  std::string child_path(const std::string& key) const;
  void report(const YAML::Node& at, const std::string& path, const std::string& message) const;

  YAML::Node node_;
  std::string path_;
  std::shared_ptr<const ParseContext> context_;
  std::shared_ptr<std::set<std::string>> known_keys_;
};

// Parses a duration such as "250ms"; nullopt when malformed.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);
// Parses a size such as "16MiB"; nullopt when malformed.
std::optional<std::uint64_t> parse_size(std::string_view text);
// Replaces ${VAR} and ${VAR:-default}; on an unset variable without default returns the error text.
struct InterpolationResult {
  std::string value;
  std::optional<std::string> error;
};
InterpolationResult interpolate_env(std::string_view text, const EnvLookup& env);
// Scalar text as shown in a diagnostic: quoted, escaped, and cut when long.
std::string quote(std::string_view text);
// Closest candidate by edit distance, if reasonably close.
std::optional<std::string> closest_match(std::string_view word,
                                         const std::vector<std::string>& candidates);

}  // namespace cdcd::config
