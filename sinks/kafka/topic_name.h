#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace cdcd::kafka {

// Why `topic` is not a legal Kafka topic name (empty, too long, characters outside
// [a-zA-Z0-9._-], "." or ".."), or nullopt when it is legal.
std::optional<std::string> topic_name_problem(std::string_view topic);

}  // namespace cdcd::kafka
