#include "sinks/kafka/topic_name.h"

namespace cdcd::kafka {

std::optional<std::string> topic_name_problem(std::string_view topic) {
  // Kafka's own limits (kafka.common.Topic): 249 characters of [a-zA-Z0-9._-].
  constexpr std::size_t kMaxLength = 249;
  if (topic.empty()) return "the topic name is empty";
  if (topic == "." || topic == "..") return "\"" + std::string(topic) + "\" is not a topic name";
  if (topic.size() > kMaxLength) {
    return "the topic name is " + std::to_string(topic.size()) + " characters long (at most " +
           std::to_string(kMaxLength) + ")";
  }
  for (char c : topic) {
    bool legal = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
    if (!legal) {
      return "the topic name \"" + std::string(topic) + "\" has a character outside [a-zA-Z0-9._-]";
    }
  }
  return std::nullopt;
}

}  // namespace cdcd::kafka
