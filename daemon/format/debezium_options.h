#pragma once

#include <optional>

#include "daemon/config/node.h"
#include "daemon/format/format.h"

namespace cdcd {

// Reads a sink's `debezium:` map (Debezium's option names: decimal.handling.mode, ...), reporting
// each bad value at its file:line:column. Absent: the defaults. nullopt when something was wrong.
std::optional<DebeziumOptions> parse_debezium_options(config::Node& sink_options);

}  // namespace cdcd
