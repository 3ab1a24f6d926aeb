#include "sinks/kafka/message_template.h"

#include <nlohmann/json.hpp>

namespace cdcd::kafka {

namespace {

constexpr std::string_view kKeyPrefix = "key.";

}  // namespace

Result<MessageTemplate> MessageTemplate::parse(std::string_view text, bool allow_key_fields) {
  MessageTemplate result;
  result.text_ = std::string(text);
  std::string literal;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '}') return fail("unmatched '}' at offset " + std::to_string(i));
    if (text[i] != '{') {
      literal += text[i];
      continue;
    }
    auto close = text.find('}', i);
    if (close == std::string_view::npos) {
      return fail("unterminated placeholder at offset " + std::to_string(i));
    }
    std::string_view name = text.substr(i + 1, close - i - 1);
    Segment segment{Part::kLiteral, ""};
    if (name == "source") {
      segment.part = Part::kSource;
    } else if (name == "entity") {
      segment.part = Part::kEntity;
    } else if (name == "schema") {
      segment.part = Part::kSchema;
    } else if (name == "table") {
      segment.part = Part::kTable;
    } else if (name == "operation") {
      segment.part = Part::kOperation;
    } else if (allow_key_fields && name.starts_with(kKeyPrefix) &&
               name.size() > kKeyPrefix.size()) {
      segment.part = Part::kKeyField;
      segment.text = std::string(name.substr(kKeyPrefix.size()));
    } else {
      return fail("unknown placeholder {" + std::string(name) + "}; known: {source} {entity} " +
                  "{schema} {table} {operation}" + (allow_key_fields ? " {key.FIELD}" : ""));
    }
    if (!literal.empty()) result.segments_.push_back({Part::kLiteral, std::move(literal)});
    literal.clear();
    result.segments_.push_back(std::move(segment));
    result.has_placeholders_ = true;
    i = close;
  }
  if (!literal.empty()) result.segments_.push_back({Part::kLiteral, std::move(literal)});
  return result;
}

Status MessageTemplate::render_with_key(const Change& change, std::string_view source,
                                        std::string_view key, std::string& out) const {
  auto dot = change.entity.rfind('.');
  std::string_view entity = change.entity;
  for (const auto& segment : segments_) {
    switch (segment.part) {
      case Part::kLiteral:
        out += segment.text;
        break;
      case Part::kSource:
        out += source;
        break;
      case Part::kEntity:
        out += entity;
        break;
      case Part::kSchema:
        if (dot != std::string::npos) out += entity.substr(0, dot);
        break;
      case Part::kTable:
        out += dot == std::string::npos ? entity : entity.substr(dot + 1);
        break;
      case Part::kOperation:
        out += to_string(change.operation);
        break;
      case Part::kKeyField:
        if (auto status = render_key_field(key, segment.text, out); !status) return status;
        break;
    }
  }
  return ok();
}

Status MessageTemplate::render_key_field(std::string_view key_text, const std::string& field,
                                         std::string& out) {
  auto key = nlohmann::json::parse(key_text, nullptr, /*allow_exceptions=*/false);
  if (!key.is_object()) {
    return fail("the change's key is not a JSON object: " + std::string(key_text));
  }
  auto it = key.find(field);
  if (it == key.end()) {
    return fail("the change's key " + std::string(key_text) + " has no field \"" + field + "\"");
  }
  if (it->is_string()) {
    out += it->get_ref<const std::string&>();
  } else {
    out += it->dump();
  }
  return ok();
}

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
