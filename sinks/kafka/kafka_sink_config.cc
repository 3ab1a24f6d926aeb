#include "sinks/kafka/kafka_sink_config.h"

#include "daemon/format/debezium_options.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <sstream>
#include <vector>

#include <librdkafka/rdkafka.h>

namespace cdcd::kafka {

namespace {

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// librdkafka's spellings of a true boolean.
bool is_true(const std::string& value) {
  auto v = lower(value);
  return v == "true" || v == "t" || v == "1";
}

// A property the user may set only to values that keep the guarantees. Returns the reason a value
// is refused, or an empty string when it is acceptable.
using Guard = std::function<std::string(const std::string& value)>;

const std::map<std::string, Guard>& guarded_properties() {
  static const Guard idempotence = [](const std::string& value) -> std::string {
    if (is_true(value)) return "";
    return "must stay true: without idempotence a retried request can duplicate or reorder "
           "changes of a key";
  };
  static const Guard acks = [](const std::string& value) -> std::string {
    auto v = lower(value);
    if (v == "all" || v == "-1") return "";
    return "must stay \"all\": with fewer acknowledgements a broker failure can lose changes that "
           "were already checkpointed";
  };
  static const Guard in_flight = [](const std::string& value) -> std::string {
    int n = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec == std::errc() && end == value.data() + value.size() && n >= 1 && n <= 5) return "";
    return "must be between 1 and 5: the idempotent producer keeps order only up to 5 requests "
           "in flight per connection";
  };
  static const Guard partitioner = [](const std::string& value) -> std::string {
    if (value == "murmur2_random" || value == "murmur2") return "";
    return "must be murmur2_random (or murmur2): the Java client's hash, so that a key lands on "
           "the same partition whichever client writes it";
  };
  static const Guard report_all = [](const std::string& value) -> std::string {
    if (!is_true(value)) return "";
    return "must stay false: the sink acknowledges a batch on the success reports of its messages";
  };
  static const Guard no_transactions = [](const std::string&) -> std::string {
    return "is not supported: the sink uses the idempotent producer, not transactions";
  };
  static const Guard use_brokers = [](const std::string&) -> std::string {
    return "is set by the sink's `brokers` option; set it there";
  };
  static const std::map<std::string, Guard> guards = {
      {"enable.idempotence", idempotence},
      {"acks", acks},
      {"request.required.acks", acks},
      {"max.in.flight.requests.per.connection", in_flight},
      {"max.in.flight", in_flight},
      {"partitioner", partitioner},
      {"delivery.report.only.error", report_all},
      {"transactional.id", no_transactions},
      {"bootstrap.servers", use_brokers},
      {"metadata.broker.list", use_brokers},
  };
  return guards;
}

// Names librdkafka treats as one property: a user's value under any of them replaces the default.
const std::vector<std::vector<std::string>>& property_aliases() {
  static const std::vector<std::vector<std::string>> aliases = {
      {"acks", "request.required.acks"},
      {"max.in.flight", "max.in.flight.requests.per.connection"},
      {"message.timeout.ms", "delivery.timeout.ms"},
      {"linger.ms", "queue.buffering.max.ms"},
  };
  return aliases;
}

void set_property(std::map<std::string, std::string>& properties, const std::string& name,
                  const std::string& value) {
  for (const auto& group : property_aliases()) {
    if (std::find(group.begin(), group.end(), name) == group.end()) continue;
    for (const auto& alias : group) properties.erase(alias);
  }
  properties[name] = value;
}

// librdkafka's property names, from its own documentation table, for "did you mean" hints.
const std::vector<std::string>& librdkafka_property_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> result;
    char* text = nullptr;
    size_t size = 0;
    FILE* out = open_memstream(&text, &size);
    if (out == nullptr) return result;
    rd_kafka_conf_properties_show(out);
    std::fclose(out);
    std::istringstream lines(std::string(text, size));
    std::free(text);
    // Table rows look like "name   |  *  | range | default | importance | description".
    for (std::string line; std::getline(lines, line);) {
      auto bar = line.find('|');
      if (bar == std::string::npos || line.starts_with("Property") || line.starts_with("-")) {
        continue;
      }
      auto end = line.find_last_not_of(' ', bar - 1);
      if (end != std::string::npos) result.push_back(line.substr(0, end + 1));
    }
    return result;
  }();
  return names;
}

void read_properties(config::Node& options, KafkaSinkConfig& config) {
  config.properties = default_producer_properties();
  auto user = options.string_map("properties");
  if (!user) return;
  config::Node node = options.child("properties");
  // librdkafka checks names and values without connecting anywhere: a typo is a config error.
  std::unique_ptr<rd_kafka_conf_t, decltype(&rd_kafka_conf_destroy)> scratch(rd_kafka_conf_new(),
                                                                             rd_kafka_conf_destroy);
  for (const auto& [name, value] : *user) {
    const auto& guards = guarded_properties();
    if (auto guard = guards.find(name); guard != guards.end()) {
      if (auto reason = guard->second(value); !reason.empty()) {
        node.error_at(name, name + " " + reason);
        continue;
      }
    }
    char errstr[512];
    auto result =
        rd_kafka_conf_set(scratch.get(), name.c_str(), value.c_str(), errstr, sizeof errstr);
    if (result != RD_KAFKA_CONF_OK) {
      std::string hint;
      if (result == RD_KAFKA_CONF_UNKNOWN) {
        if (auto match = config::closest_match(name, librdkafka_property_names())) {
          hint = "; did you mean \"" + *match + "\"?";
        }
      }
      node.error_at(name, std::string("librdkafka: ") + errstr + hint);
      continue;
    }
    set_property(config.properties, name, value);
  }
}

std::optional<TopicCreation> read_topic_creation(config::Node& options) {
  config::Node node = options.child("create_topics");
  if (!node.defined() || !node.expect_map()) return std::nullopt;
  auto partitions = node.integer("partitions", 1, 1 << 20, /*required=*/true);
  auto replication = node.integer("replication_factor", 1, 1 << 10, /*required=*/true);
  node.check_unknown_keys();
  if (!partitions || !replication) return std::nullopt;
  return TopicCreation{static_cast<int>(*partitions), static_cast<int>(*replication)};
}

}  // namespace

const std::map<std::string, std::string>& default_producer_properties() {
  static const std::map<std::string, std::string> defaults = {
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"max.in.flight.requests.per.connection", "5"},
      {"partitioner", "murmur2_random"},
      // Never give up on a message while the cluster is unreachable: the pipeline backs up
      // instead. A finite value is allowed; a timed-out message then fails its batch and the
      // consumer stops without checkpointing it.
      {"message.timeout.ms", "0"},
      // Bounded memory: librdkafka's own default is 1 GiB of queued messages.
      {"queue.buffering.max.kbytes", "65536"},
      {"statistics.interval.ms", "5000"},
  };
  return defaults;
}

std::optional<KafkaSinkConfig> parse_kafka_sink_config(config::Node& options) {
  auto errors_before = options.diagnostics().items().size();
  KafkaSinkConfig config;
  config.brokers = options.string("brokers", /*required=*/true).value_or("");

  auto topic_text = options.string("topic").value_or("cdc.{source}.{entity}");
  if (auto topic = ChangeTemplate::parse(topic_text, TemplateImages{})) {
    config.topic = std::move(*topic);
  } else {
    options.error_at("topic", topic.error().message);
  }

  auto key_text = options.string("key").value_or("default");
  if (key_text != "default") {
    if (auto key = ChangeTemplate::parse(key_text, TemplateImages{.key = true})) {
      config.key = std::move(*key);
    } else {
      options.error_at("key", key.error().message);
    }
  }

  if (auto format = parse_sink_format(options, Format::kDebezium, {.heartbeats = true})) {
    config.format = format->format;
    config.debezium = std::move(format->debezium);
  }
  config.tombstones = options.boolean("tombstones").value_or(true);
  config.headers = options.boolean("headers").value_or(true);
  read_properties(options, config);
  config.create_topics = read_topic_creation(options);
  options.check_unknown_keys();
  if (options.diagnostics().items().size() != errors_before) return std::nullopt;
  return config;
}

}  // namespace cdcd::kafka
