#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/change.h"
#include "daemon/core/result.h"

namespace cdcd::kafka {

// A topic or key template such as "cdc.{source}.{entity}" or "{key.id}". Placeholders: {source}
// (the consumer's source name), {entity}, {schema} and {table} (the entity split at its last
// '.'; without a '.', schema is empty and table is the entity), {operation}, and, where allowed,
// {key.FIELD} (a top-level field of the change's key: a string as its text, anything else as
// compact JSON).
class MessageTemplate {
 public:
  // Parses `text`; the error says which placeholder is unknown or unterminated.
  static Result<MessageTemplate> parse(std::string_view text, bool allow_key_fields);

  // Appends the rendered template to `out`. Fails only for a {key.FIELD} the key lacks.
  Status render(const Change& change, std::string_view source, std::string& out) const {
    return render_with_key(change, source, change.key, out);
  }
  // The same with `key` (a JSON object) in place of the change's key, e.g. its old key.
  Status render_with_key(const Change& change, std::string_view source, std::string_view key,
                         std::string& out) const;

  // True when the template has no placeholder: every change renders the same text.
  bool is_constant() const { return segments_.size() <= 1 && !has_placeholders_; }
  const std::string& text() const { return text_; }

 private:
  enum class Part { kLiteral, kSource, kEntity, kSchema, kTable, kOperation, kKeyField };
  struct Segment {
    Part part;
    std::string text;  // literal text, or the key field's name
  };

  static Status render_key_field(std::string_view key, const std::string& field, std::string& out);

  std::string text_;
  std::vector<Segment> segments_;
  bool has_placeholders_ = false;
};

// Why `topic` is not a legal Kafka topic name (empty, too long, characters outside
// [a-zA-Z0-9._-], "." or ".."), or nullopt when it is legal.
std::optional<std::string> topic_name_problem(std::string_view topic);

}  // namespace cdcd::kafka
