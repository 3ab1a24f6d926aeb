#include "daemon/config/node.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstddef>
#include <limits>
#include <mutex>

namespace cdcd::config {

namespace {

// Known keys belong to a YAML map, not to one Node object: child("batch") called twice, even on
// temporaries, must yield Nodes that see each other's reads, or check_unknown_keys() would flag
// what was read through the other. yaml-cpp nodes carry no user data and ParseContext has no room
// for it, so the sets live in this table, found again by map identity, while their context lives
// (every Node holds it, so a set outlives all Nodes of its map); dead ones go at the next lookup.
struct KeySet {
  std::weak_ptr<const ParseContext> context;
  YAML::Node map;
  std::set<std::string> keys;
};

class KeySetTable {
 public:
  std::shared_ptr<std::set<std::string>> find_or_create(
      const std::shared_ptr<const ParseContext>& context, const YAML::Node& map) {
    std::lock_guard lock(mutex_);
    std::erase_if(sets_, [](const auto& set) { return set->context.expired(); });
    for (const auto& set : sets_) {
      if (set->context.lock() == context && set->map.is(map)) return {set, &set->keys};
    }
    auto set = std::make_shared<KeySet>(KeySet{context, map, {}});
    sets_.push_back(set);
    return {set, &set->keys};
  }

 private:
  std::mutex mutex_;
  std::vector<std::shared_ptr<KeySet>> sets_;
};

KeySetTable& key_set_table() {
  static KeySetTable table;
  return table;
}

struct Entry {
  YAML::Node key;
  YAML::Node value;
};

// The first entry named `key` (yaml-cpp keeps duplicates; operator[] also returns the first).
// Iterating avoids operator[] on a non-const node, which may insert.
std::optional<Entry> find_entry(const YAML::Node& map, const std::string& key) {
  if (!map.IsMap()) return std::nullopt;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (it->first.IsScalar() && it->first.Scalar() == key) return Entry{it->first, it->second};
  }
  return std::nullopt;
}

bool is_null(const YAML::Node& node) { return !node.IsDefined() || node.IsNull(); }

Location location_of(const YAML::Node& node, const ParseContext& context) {
  // Undefined nodes have no mark at all, and documents with no content (and nodes built in
  // memory) have a mark of -1.
  YAML::Mark mark = node.IsDefined() ? node.Mark() : YAML::Mark::null_mark();
  if (mark.line < 0 || mark.column < 0) {
    return context.origin ? *context.origin : Location{context.file, 1, 1};
  }
  return {context.file, mark.line + 1, mark.column + 1};
}

// What a value is, for "expected X, got Y". Quotes the raw text as written in the file: the
// interpolated value may hold a secret from the environment and is never shown.
std::string describe(const YAML::Node& node, std::string_view interpolated) {
  if (is_null(node)) return "nothing";
  if (node.IsMap()) return "a map";
  if (node.IsSequence()) return "a list";
  std::string shown = quote(node.Scalar());
  if (node.Scalar() != interpolated) shown += " after interpolation";
  return shown;
}

std::string describe(const YAML::Node& node) {
  return describe(node, node.IsScalar() ? node.Scalar() : std::string());
}

std::string join(const std::vector<std::string>& words, std::string_view separator) {
  std::string out;
  for (const auto& word : words) {
    if (!out.empty()) out += separator;
    out += word;
  }
  return out;
}

std::string range_text(std::int64_t min, std::int64_t max) {
  constexpr auto kLowest = std::numeric_limits<std::int64_t>::min();
  constexpr auto kHighest = std::numeric_limits<std::int64_t>::max();
  if (min == kLowest && max == kHighest) return "an integer";
  if (max == kHighest) return "an integer of at least " + std::to_string(min);
  if (min == kLowest) return "an integer of at most " + std::to_string(max);
  return "an integer between " + std::to_string(min) + " and " + std::to_string(max);
}

std::optional<std::int64_t> parse_integer(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  std::int64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
    return std::nullopt;
  }
  return value;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Leading decimal digits of `text` as a number; nullopt when there are none or on overflow.
std::optional<std::uint64_t> take_digits(std::string_view& text, std::size_t* count = nullptr) {
  std::uint64_t value = 0;
  std::size_t digits = 0;
  while (digits < text.size() && is_digit(text[digits])) {
    if (__builtin_mul_overflow(value, 10, &value) ||
        __builtin_add_overflow(value, static_cast<std::uint64_t>(text[digits] - '0'), &value)) {
      return std::nullopt;
    }
    ++digits;
  }
  if (digits == 0) return std::nullopt;
  text.remove_prefix(digits);
  if (count) *count = digits;
  return value;
}

bool valid_variable_name(std::string_view name) {
  if (name.empty() || is_digit(name.front())) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Optimal string alignment distance: Levenshtein plus adjacent transpositions, the commonest typo.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates) {
  auto match = closest_match(word, candidates);
  return match ? " (did you mean \"" + *match + "\"?)" : "";
}

}  // namespace

std::string Diagnostic::format() const {
  std::string out;
  if (where.line > 0) {
    out = where.file + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) + ": ";
  }
  out += severity == Severity::kWarning ? "warning: " : "error: ";
  if (!path.empty()) out += path + ": ";
  return out + message;
}

void Diagnostics::add(Location where, std::string path, std::string message) {
  items_.push_back(Diagnostic{std::move(where), std::move(path), std::move(message)});
}

void Diagnostics::warn(Location where, std::string path, std::string message) {
  items_.push_back(
      Diagnostic{std::move(where), std::move(path), std::move(message), Severity::kWarning});
}

std::size_t Diagnostics::errors() const {
  return std::count_if(items_.begin(), items_.end(),
                       [](const Diagnostic& item) { return item.severity == Severity::kError; });
}

std::string Diagnostics::to_string() const {
  std::vector<const Diagnostic*> sorted;
  for (const auto& item : items_) sorted.push_back(&item);
  std::stable_sort(sorted.begin(), sorted.end(), [](const Diagnostic* a, const Diagnostic* b) {
    return std::pair(a->where.line, a->where.column) < std::pair(b->where.line, b->where.column);
  });
  std::string out;
  for (const Diagnostic* item : sorted) out += item->format() + "\n";
  return out;
}

Node::Node(YAML::Node node, std::string path, std::shared_ptr<const ParseContext> context)
    : node_(std::move(node)), path_(std::move(path)), context_(std::move(context)) {
  known_keys_ = node_.IsMap() ? key_set_table().find_or_create(context_, node_)
                              : std::make_shared<std::set<std::string>>();
}

Location Node::location() const { return location_of(node_, *context_); }

Node Node::stand_in(YAML::Node node) const {
  auto context = std::make_shared<ParseContext>(*context_);
  context->origin = location();
  return Node(std::move(node), path_, std::move(context));
}

bool Node::expect_map() {
  if (is_map()) return true;
  error("expected a map, got " + describe(node_));
  return false;
}

bool Node::has(const std::string& key) {
  known_keys_->insert(key);
  auto entry = find_entry(node_, key);
  return entry && !is_null(entry->value);
}

Node Node::child(const std::string& key, bool required) {
  known_keys_->insert(key);
  auto entry = find_entry(node_, key);
  if (!entry) {
    if (required) report(node_, path_, "missing required key \"" + key + "\"");
    return Node(YAML::Node(YAML::NodeType::Undefined), child_path(key), context_);
  }
  if (required && is_null(entry->value)) {
    report(entry->key, child_path(key), "missing value for required key \"" + key + "\"");
  }
  return Node(entry->value, child_path(key), context_);
}

namespace {

// The interpolated text of `value` (a child just fetched); a non-scalar is reported as
// "expected WHAT, got a map". Null or absent values give nullopt silently: child() has reported
// them if they were required.
std::optional<std::string> scalar_text(Node& value, const std::string& what,
                                       const std::string& got) {
  if (!value.defined()) return std::nullopt;
  if (!value.is_scalar()) {
    value.error("expected " + what + ", got " + got);
    return std::nullopt;
  }
  return value.scalar();
}

}  // namespace

std::optional<std::string> Node::string(const std::string& key, bool required) {
  Node value = child(key, required);
  return scalar_text(value, "a string", describe(value.node_));
}

std::optional<bool> Node::boolean(const std::string& key, bool required) {
  const std::string what = "a boolean (true or false)";
  Node value = child(key, required);
  auto text = scalar_text(value, what, describe(value.node_));
  if (!text) return std::nullopt;
  if (*text == "true" || *text == "True" || *text == "TRUE") return true;
  if (*text == "false" || *text == "False" || *text == "FALSE") return false;
  value.error("expected " + what + ", got " + describe(value.node_, *text));
  return std::nullopt;
}

std::optional<std::int64_t> Node::integer(const std::string& key, std::int64_t min,
                                          std::int64_t max, bool required) {
  const std::string what = range_text(min, max);
  Node value = child(key, required);
  auto text = scalar_text(value, what, describe(value.node_));
  if (!text) return std::nullopt;
  auto parsed = parse_integer(*text);
  if (!parsed || *parsed < min || *parsed > max) {
    value.error("expected " + what + ", got " + describe(value.node_, *text));
    return std::nullopt;
  }
  return parsed;
}

std::optional<std::chrono::milliseconds> Node::duration(const std::string& key, bool required) {
  const std::string what = "a duration such as 250ms, 5s or 1m";
  Node value = child(key, required);
  auto text = scalar_text(value, what, describe(value.node_));
  if (!text) return std::nullopt;
  auto parsed = parse_duration(*text);
  if (!parsed) {
    std::string hint = parse_integer(*text) ? " (add a unit: ms, s, m or h)" : "";
    value.error("expected " + what + ", got " + describe(value.node_, *text) + hint);
  }
  return parsed;
}

std::optional<std::uint64_t> Node::size(const std::string& key, bool required) {
  const std::string what = "a size such as 512, 64KiB or 16MiB";
  Node value = child(key, required);
  auto text = scalar_text(value, what, describe(value.node_));
  if (!text) return std::nullopt;
  auto parsed = parse_size(*text);
  if (!parsed) value.error("expected " + what + ", got " + describe(value.node_, *text));
  return parsed;
}

std::optional<std::string> Node::one_of(const std::string& key,
                                        const std::vector<std::string>& choices, bool required) {
  const std::string what = "one of " + join(choices, ", ");
  Node value = child(key, required);
  auto text = scalar_text(value, what, describe(value.node_));
  if (!text) return std::nullopt;
  if (std::find(choices.begin(), choices.end(), *text) != choices.end()) return text;
  value.error("expected " + what + ", got " + describe(value.node_, *text) +
              did_you_mean(*text, choices));
  return std::nullopt;
}

std::optional<std::vector<std::string>> Node::string_list(const std::string& key, bool required) {
  Node list = child(key, required);
  if (!list.defined()) return std::nullopt;
  if (!list.is_sequence()) {
    list.error("expected a list of strings, got " + describe(list.node_));
    return std::nullopt;
  }
  std::vector<std::string> values;
  bool ok = true;
  for (Node& element : list.elements()) {
    auto text = element.is_scalar() ? element.scalar() : std::nullopt;
    if (!element.is_scalar()) element.error("expected a string, got " + describe(element.node_));
    if (text) {
      values.push_back(std::move(*text));
    } else {
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  return values;
}

std::optional<std::map<std::string, std::string>> Node::string_map(const std::string& key) {
  Node map = child(key);
  if (!map.defined()) return std::nullopt;
  if (!map.expect_map()) return std::nullopt;
  std::map<std::string, std::string> values;
  bool ok = true;
  for (auto& [name, value] : map.entries()) {
    auto text = value.is_scalar() ? value.scalar() : std::nullopt;
    if (!value.is_scalar()) value.error("expected a string, got " + describe(value.node_));
    if (text) {
      values.emplace(name, std::move(*text));
    } else {
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  return values;
}

std::optional<std::string> Node::scalar() {
  if (!is_scalar()) {
    error("expected a string, got " + describe(node_));
    return std::nullopt;
  }
  return interpolate(node_, path_);
}

std::vector<std::pair<std::string, Node>> Node::entries() {
  std::vector<std::pair<std::string, Node>> out;
  if (!expect_map()) return out;
  // Later duplicates are skipped, as operator[] does; the config loader reports them.
  std::set<std::string> seen;
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    if (!it->first.IsScalar()) continue;
    const std::string& key = it->first.Scalar();
    if (!seen.insert(key).second) continue;
    known_keys_->insert(key);
    out.emplace_back(key, Node(it->second, child_path(key), context_));
  }
  return out;
}

std::vector<Node> Node::elements() {
  std::vector<Node> out;
  if (!is_sequence()) {
    error("expected a list, got " + describe(node_));
    return out;
  }
  for (std::size_t i = 0; i < node_.size(); ++i) {
    out.emplace_back(node_[i], path_ + "[" + std::to_string(i) + "]", context_);
  }
  return out;
}

void Node::check_unknown_keys() {
  if (!is_map()) return;
  std::vector<std::string> known(known_keys_->begin(), known_keys_->end());
  std::set<std::string> reported;
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    if (!it->first.IsScalar()) continue;
    const std::string& key = it->first.Scalar();
    if (known_keys_->count(key) || !reported.insert(key).second) continue;
    std::string message = "unknown key " + quote(key);
    if (auto match = closest_match(key, known)) {
      message += " (did you mean \"" + *match + "\"?)";
    } else if (!known.empty()) {
      message += "; valid keys are: " + join(known, ", ");
    }
    report(it->first, child_path(key), message);
  }
}

void Node::mark_known(std::initializer_list<std::string> keys) {
  known_keys_->insert(keys.begin(), keys.end());
}

void Node::error(const std::string& message) const { report(node_, path_, message); }

void Node::error_at(const std::string& key, const std::string& message) {
  known_keys_->insert(key);
  auto entry = find_entry(node_, key);
  if (!entry) {
    report(node_, path_, message);
  } else {
    // A null value's mark points past the key, often at the next line: show the key instead.
    report(is_null(entry->value) ? entry->key : entry->value, child_path(key), message);
  }
}

std::optional<std::string> Node::interpolate(const YAML::Node& scalar_node,
                                             const std::string& path) const {
  InterpolationResult result = interpolate_env(scalar_node.Scalar(), context_->env);
  if (result.error) {
    report(scalar_node, path, *result.error);
    return std::nullopt;
  }
  return std::move(result.value);
}

std::string Node::child_path(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

void Node::report(const YAML::Node& at, const std::string& path, const std::string& message) const {
  context_->diagnostics->add(location_of(at, *context_), path, message);
}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  std::string_view rest = text;
  auto whole = take_digits(rest);
  if (!whole) return std::nullopt;
  std::uint64_t fraction = 0;
  std::size_t fraction_digits = 0;
  if (!rest.empty() && rest.front() == '.') {
    rest.remove_prefix(1);
    auto digits = take_digits(rest, &fraction_digits);
    if (!digits || fraction_digits > 9) return std::nullopt;
    fraction = *digits;
  }
  std::uint64_t unit_ms = 0;
  if (rest == "ms") {
    unit_ms = 1;
  } else if (rest == "s") {
    unit_ms = 1000;
  } else if (rest == "m") {
    unit_ms = 60'000;
  } else if (rest == "h") {
    unit_ms = 3'600'000;
  } else {
    return std::nullopt;
  }
  std::uint64_t scale = 1;
  for (std::size_t i = 0; i < fraction_digits; ++i) scale *= 10;
  // A fraction must come to whole milliseconds: "1.5s" is fine, "0.5ms" is not representable.
  if ((fraction * unit_ms) % scale != 0) return std::nullopt;
  std::uint64_t total = 0;
  if (__builtin_mul_overflow(*whole, unit_ms, &total) ||
      __builtin_add_overflow(total, fraction * unit_ms / scale, &total) ||
      total > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(total));
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  static const std::vector<std::pair<std::string_view, std::uint64_t>> kUnits = {
      {"", 1},
      {"B", 1},
      {"KB", 1000},
      {"MB", 1000'000},
      {"GB", 1000'000'000},
      {"KiB", 1ULL << 10},
      {"MiB", 1ULL << 20},
      {"GiB", 1ULL << 30},
  };
  std::string_view rest = text;
  auto number = take_digits(rest);
  if (!number) return std::nullopt;
  for (const auto& [unit, factor] : kUnits) {
    if (rest != unit) continue;
    std::uint64_t bytes = 0;
    if (__builtin_mul_overflow(*number, factor, &bytes)) return std::nullopt;
    return bytes;
  }
  return std::nullopt;
}

InterpolationResult interpolate_env(std::string_view text, const EnvLookup& env) {
  InterpolationResult result;
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '$' || i + 1 == text.size() || (text[i + 1] != '$' && text[i + 1] != '{')) {
      result.value += text[i++];
      continue;
    }
    if (text[i + 1] == '$') {  // "$$" is a literal "$"
      result.value += '$';
      i += 2;
      continue;
    }
    std::size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      result.error = "unterminated \"${\" in " + quote(text);
      return result;
    }
    std::string_view inner = text.substr(i + 2, close - i - 2);
    std::size_t dash = inner.find(":-");
    std::string_view name = inner.substr(0, dash);
    if (!valid_variable_name(name)) {
      result.error = "invalid environment variable name " + quote(name) + " in " + quote(text);
      return result;
    }
    std::optional<std::string> value = env ? env(std::string(name)) : std::nullopt;
    if (dash != std::string_view::npos && (!value || value->empty())) {
      value = std::string(inner.substr(dash + 2));  // as in the shell, ":-" also covers empty
    }
    if (!value) {
      result.error = "environment variable \"" + std::string(name) + "\" is not set";
      return result;
    }
    result.value += *value;
    i = close + 1;
  }
  return result;
}

std::optional<std::string> closest_match(std::string_view word,
                                         const std::vector<std::string>& candidates) {
  // Within a third of the word (at least 2 edits), but 1 for words of up to 3 letters, where 2
  // edits leave almost nothing in common ("foo" is not a typo of "log").
  const std::size_t limit = word.size() <= 3 ? 1 : std::max<std::size_t>(2, word.size() / 3);
  const std::string needle = lowercase(word);
  std::optional<std::string> best;
  std::size_t best_distance = limit + 1;
  for (const auto& candidate : candidates) {
    std::size_t distance = edit_distance(needle, lowercase(candidate));
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

std::string quote(std::string_view text) {
  constexpr std::size_t kMaxShown = 80;
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    char c = text[i];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  if (text.size() > kMaxShown) out += "...";
  return out + "\"";
}

}  // namespace cdcd::config
