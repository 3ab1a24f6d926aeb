#include "daemon/format/debezium_options.h"

#include <string>
#include <utility>
#include <vector>

namespace cdcd {

namespace {

template <typename Mode>
using Choices = std::vector<std::pair<std::string, Mode>>;

template <typename Mode>
void read_mode(config::Node& node, const std::string& key, const Choices<Mode>& choices,
               Mode& mode) {
  std::vector<std::string> names;
  for (const auto& choice : choices) names.push_back(choice.first);
  auto value = node.one_of(key, names);
  if (!value) return;
  for (const auto& [name, choice] : choices) {
    if (name == *value) mode = choice;
  }
}

}  // namespace

std::optional<DebeziumOptions> parse_debezium_options(config::Node& sink_options) {
  DebeziumOptions options;
  config::Node node = sink_options.child("debezium");
  if (!node.defined()) return options;
  if (!node.expect_map()) return std::nullopt;
  const std::size_t errors_before = node.diagnostics().errors();
  using Options = DebeziumOptions;
  read_mode<Options::DecimalMode>(node, "decimal.handling.mode",
                                  {{"precise", Options::DecimalMode::kPrecise},
                                   {"double", Options::DecimalMode::kDouble},
                                   {"string", Options::DecimalMode::kString}},
                                  options.decimal);
  read_mode<Options::TimePrecisionMode>(
      node, "time.precision.mode",
      {{"adaptive", Options::TimePrecisionMode::kAdaptive},
       {"adaptive_time_microseconds", Options::TimePrecisionMode::kAdaptiveTimeMicroseconds},
       {"connect", Options::TimePrecisionMode::kConnect}},
      options.time_precision);
  read_mode<Options::IntervalMode>(
      node, "interval.handling.mode",
      {{"numeric", Options::IntervalMode::kNumeric}, {"string", Options::IntervalMode::kString}},
      options.interval);
  read_mode<Options::BinaryMode>(node, "binary.handling.mode",
                                 {{"bytes", Options::BinaryMode::kBytes},
                                  {"base64", Options::BinaryMode::kBase64},
                                  {"base64-url-safe", Options::BinaryMode::kBase64UrlSafe},
                                  {"hex", Options::BinaryMode::kHex}},
                                 options.binary);
  read_mode<Options::HstoreMode>(
      node, "hstore.handling.mode",
      {{"json", Options::HstoreMode::kJson}, {"map", Options::HstoreMode::kMap}}, options.hstore);
  // Debezium's own bounds are those of a BigDecimal scale; more than numeric's 1000 is a typo.
  if (auto digits = node.integer("money.fraction.digits", 0, 1000)) {
    options.money_fraction_digits = static_cast<int>(*digits);
  }
  options.schemas = node.boolean("schemas").value_or(false);
  options.topic_prefix = node.string("topic.prefix").value_or("");
  options.transaction_metadata = node.boolean("provide.transaction.metadata").value_or(false);
  options.transaction_topic = node.string("topic.transaction").value_or("transaction");
  // Debezium's bound is an int of milliseconds; a day between heartbeats is already no heartbeat.
  if (auto interval = node.integer("heartbeat.interval.ms", 0, 86'400'000)) {
    options.heartbeat_interval = std::chrono::milliseconds(*interval);
  }
  options.heartbeat_topic_prefix =
      node.string("topic.heartbeat.prefix").value_or("__debezium-heartbeat");
  node.check_unknown_keys();
  if (node.diagnostics().errors() != errors_before) return std::nullopt;
  return options;
}

std::optional<SinkFormat> parse_sink_format(config::Node& sink_options, Format default_format,
                                            const SinkFormatSupport& support) {
  const std::size_t errors_before = sink_options.diagnostics().errors();
  SinkFormat parsed;
  auto name = sink_options.one_of("format", {"native", "debezium", "mongodb"});
  parsed.format = parse_format(name.value_or("")).value_or(default_format);
  auto debezium = parse_debezium_options(sink_options);
  if (debezium) parsed.debezium = std::move(*debezium);
  if (sink_options.has("debezium") && parsed.format != Format::kDebezium) {
    // The options would silently do nothing.
    sink_options.error_at("debezium", "applies only with format: debezium (the format is " +
                                          std::string(to_string(parsed.format)) + ")");
  }
  if (!support.heartbeats && parsed.debezium.heartbeat_interval.count() > 0) {
    config::Node node = sink_options.child("debezium");
    node.error_at("heartbeat.interval.ms",
                  "this sink cannot send heartbeats (only the kafka sink writes them to their "
                  "topic); remove it or set 0");
  }
  if (sink_options.diagnostics().errors() != errors_before) return std::nullopt;
  return parsed;
}

}  // namespace cdcd
