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
  node.check_unknown_keys();
  if (node.diagnostics().errors() != errors_before) return std::nullopt;
  return options;
}

}  // namespace cdcd
