#pragma once

#include <map>
#include <optional>
#include <string>

#include "daemon/config/node.h"
#include "daemon/format/change_template.h"
#include "daemon/format/format.h"

namespace cdcd::kafka {

struct TopicCreation {
  int partitions = 1;
  int replication_factor = 1;
};

struct KafkaSinkConfig {
  std::string brokers;
  ChangeTemplate topic;
  std::optional<ChangeTemplate> key;  // nullopt: the change's key as compact JSON
  Format format = Format::kDebezium;
  DebeziumOptions debezium;
  bool tombstones = true;
  bool headers = true;
  // Every librdkafka property the producer gets: the sink's defaults overridden by the user's.
  std::map<std::string, std::string> properties;
  std::optional<TopicCreation> create_topics;
};

// Reads a `type: kafka` sink's options, reporting every problem to the node's diagnostics
// (including properties that would break the sink's guarantees, or that librdkafka rejects).
// Returns nullopt when something was reported. No I/O.
std::optional<KafkaSinkConfig> parse_kafka_sink_config(config::Node& options);

// The librdkafka properties the sink sets unless the user overrides them (see docs/sinks/kafka.md).
const std::map<std::string, std::string>& default_producer_properties();

}  // namespace cdcd::kafka
