#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/core/change.h"
#include "daemon/core/result.h"

namespace cdcd {

enum class RowImage { kKey, kNew, kOld };

// The row images a template may read fields of. Topics and index names usually may not (one
// name per entity keeps producers and indexes manageable); keys and cache keys may.
struct TemplateImages {
  bool key = false;
  bool new_row = false;
  bool old_row = false;
};

// One change as a template sees it. The row images are parsed at most once, on first use, however
// many templates render from the same view (a cache sink renders several keys per change).
class TemplateInput {
 public:
  TemplateInput(const Change& change, std::string_view source) : change_(change), source_(source) {}
  // The same change with `key` (a JSON object) in place of its key, e.g. its old key.
  TemplateInput(const Change& change, std::string_view source, std::string_view key)
      : change_(change), source_(source), key_text_(key) {}

  const Change& change() const { return change_; }
  std::string_view source() const { return source_; }
  // The image's top-level field, or nullptr when the image is empty or lacks it.
  Result<const nlohmann::json*> field(RowImage image, const std::string& name) const;

 private:
  Result<const nlohmann::json*> parsed(std::optional<nlohmann::json>& slot, std::string_view text,
                                       std::string_view what) const;

  const Change& change_;
  std::string_view source_;
  std::optional<std::string_view> key_text_;
  mutable std::optional<nlohmann::json> key_, new_row_, old_row_;
};

// A name template such as "cdc.{source}.{entity}", "{schema}_{table}" or "user:{key.id}".
// Placeholders: {source} (the consumer's source name), {entity}, {schema} and {table} (the entity
// split at its last '.'; without a '.', schema is empty and table is the entity), {operation},
// and, where allowed, {key.FIELD}, {new.FIELD} and {old.FIELD}: a top-level field of the key, the
// new row or the old row, a string as its text and anything else as compact JSON.
class ChangeTemplate {
 public:
  // Parses `text`; the error says which placeholder is unknown or unterminated.
  static Result<ChangeTemplate> parse(std::string_view text, TemplateImages allowed);

  // Appends the rendered template to `out` and returns true; or returns false, leaving `out` as
  // it was, when a field it names is absent or null in the change (an insert has no old row; an
  // unchanged TOAST column is not in the new one). Fails only for an image that is not a JSON
  // object.
  Result<bool> render(const TemplateInput& input, std::string& out) const;

  // render() that treats an absent field as an error naming it (for keys a sink cannot skip).
  Status render_required(const TemplateInput& input, std::string& out) const;

  // True when the template has no placeholder: every change renders the same text.
  bool is_constant() const { return !has_placeholders_; }
  // True when the template names a field of that image.
  bool reads(RowImage image) const;
  const std::string& text() const { return text_; }

 private:
  enum class Part { kLiteral, kSource, kEntity, kSchema, kTable, kOperation, kField };
  struct Segment {
    Part part;
    std::string text;                 // literal text, or the field's name
    RowImage image = RowImage::kKey;  // for kField
  };

  std::string text_;
  std::vector<Segment> segments_;
  bool has_placeholders_ = false;
};

}  // namespace cdcd
