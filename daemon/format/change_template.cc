#include "daemon/format/change_template.h"

#include <array>
#include <charconv>
#include <cstdint>
#include <utility>

namespace cdcd {

namespace {

struct FieldPrefix {
  std::string_view prefix;
  RowImage image;
};

constexpr std::array<FieldPrefix, 3> kFieldPrefixes{{
    {"key.", RowImage::kKey},
    {"new.", RowImage::kNew},
    {"old.", RowImage::kOld},
}};

bool allowed(TemplateImages images, RowImage image) {
  switch (image) {
    case RowImage::kKey:
      return images.key;
    case RowImage::kNew:
      return images.new_row;
    case RowImage::kOld:
      return images.old_row;
  }
  return false;
}

std::string known_placeholders(TemplateImages images) {
  std::string known = "{source} {entity} {schema} {table} {operation}";
  for (const auto& [prefix, image] : kFieldPrefixes) {
    if (allowed(images, image)) known += " {" + std::string(prefix) + "FIELD}";
  }
  return known;
}

std::string_view image_name(RowImage image) {
  switch (image) {
    case RowImage::kKey:
      return "key";
    case RowImage::kNew:
      return "new row";
    case RowImage::kOld:
      return "old row";
  }
  return "";
}

}  // namespace

Result<const nlohmann::json*> TemplateInput::parsed(std::optional<nlohmann::json>& slot,
                                                    std::string_view text,
                                                    std::string_view what) const {
  if (!slot) {
    if (text.empty()) return nullptr;
    slot = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  }
  if (!slot->is_object()) {
    return fail("the change's " + std::string(what) +
                " is not a JSON object: " + std::string(text));
  }
  return &*slot;
}

Result<const nlohmann::json*> TemplateInput::field(RowImage image, const std::string& name) const {
  Result<const nlohmann::json*> object = nullptr;
  switch (image) {
    case RowImage::kKey:
      object = parsed(key_, key_text_.value_or(std::string_view(change_.key)), image_name(image));
      break;
    case RowImage::kNew:
      object = parsed(new_row_, change_.new_row, image_name(image));
      break;
    case RowImage::kOld:
      object = parsed(old_row_, change_.old_row, image_name(image));
      break;
  }
  if (!object || *object == nullptr) return object;
  auto it = (*object)->find(name);
  if (it == (*object)->end() || it->is_null()) return nullptr;
  return &*it;
}

Result<ChangeTemplate> ChangeTemplate::parse(std::string_view text, TemplateImages images) {
  ChangeTemplate result;
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
    Segment segment{Part::kLiteral, "", RowImage::kKey};
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
    } else {
      for (const auto& [prefix, image] : kFieldPrefixes) {
        if (allowed(images, image) && name.starts_with(prefix) && name.size() > prefix.size()) {
          segment.part = Part::kField;
          segment.text = std::string(name.substr(prefix.size()));
          segment.image = image;
        }
      }
      if (segment.part != Part::kField) {
        return fail("unknown placeholder {" + std::string(name) +
                    "}; known: " + known_placeholders(images));
      }
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

Result<bool> ChangeTemplate::render(const TemplateInput& input, std::string& out) const {
  const std::size_t rendered_from = out.size();
  std::string_view entity = input.change().entity;
  auto dot = entity.rfind('.');
  for (const auto& segment : segments_) {
    switch (segment.part) {
      case Part::kLiteral:
        out += segment.text;
        break;
      case Part::kSource:
        out += input.source();
        break;
      case Part::kEntity:
        out += entity;
        break;
      case Part::kSchema:
        if (dot != std::string_view::npos) out += entity.substr(0, dot);
        break;
      case Part::kTable:
        out += dot == std::string_view::npos ? entity : entity.substr(dot + 1);
        break;
      case Part::kOperation:
        out += to_string(input.change().operation);
        break;
      case Part::kField: {
        auto value = input.field(segment.image, segment.text);
        if (!value) {
          out.resize(rendered_from);
          return tl::unexpected(value.error());
        }
        if (*value == nullptr) {
          out.resize(rendered_from);
          return false;
        }
        if ((*value)->is_string()) {
          out += (*value)->get_ref<const std::string&>();
        } else if ((*value)->is_number_integer()) {
          // Ids are mostly integers: dump() would build a temporary string for each.
          char digits[24];
          auto end =
              (*value)->is_number_unsigned()
                  ? std::to_chars(digits, digits + sizeof digits, (*value)->get<std::uint64_t>())
                        .ptr
                  : std::to_chars(digits, digits + sizeof digits, (*value)->get<std::int64_t>())
                        .ptr;
          out.append(digits, end);
        } else {
          out += (*value)->dump();
        }
        break;
      }
    }
  }
  return true;
}

Status ChangeTemplate::render_required(const TemplateInput& input, std::string& out) const {
  auto rendered = render(input, out);
  if (!rendered) return tl::unexpected(rendered.error());
  if (*rendered) return ok();
  for (const auto& segment : segments_) {
    if (segment.part != Part::kField) continue;
    auto value = input.field(segment.image, segment.text);
    if (value && *value == nullptr) {
      return fail("the change's " + std::string(image_name(segment.image)) + " has no field \"" +
                  segment.text + "\" (template \"" + text_ + "\")");
    }
  }
  return fail("template \"" + text_ + "\" could not be rendered");
}

bool ChangeTemplate::reads(RowImage image) const {
  for (const auto& segment : segments_) {
    if (segment.part == Part::kField && segment.image == image) return true;
  }
  return false;
}

}  // namespace cdcd
