#pragma once

#include <optional>

#include "daemon/config/node.h"
#include "daemon/format/format.h"

namespace cdcd {

// Reads a sink's `debezium:` map (Debezium's option names: decimal.handling.mode, ...), reporting
// each bad value at its file:line:column. Absent: the defaults. nullopt when something was wrong.
std::optional<DebeziumOptions> parse_debezium_options(config::Node& sink_options);

// What a sink writes: its format and, for `debezium`, the format's options.
struct SinkFormat {
  Format format = Format::kNative;
  DebeziumOptions debezium;
};

// What a sink can do beyond encoding changes.
struct SinkFormatSupport {
  bool heartbeats = false;  // writes heartbeat records on a timer (heartbeat.interval.ms)
};

// Reads a sink's `format` (absent: `default_format`) and its `debezium:` map, the same way for
// every sink that writes a format; a `debezium:` map with another format, or an option the sink
// cannot honour, is an error at its file:line:column. nullopt when something was reported.
std::optional<SinkFormat> parse_sink_format(config::Node& sink_options, Format default_format,
                                            const SinkFormatSupport& support = {});

}  // namespace cdcd
