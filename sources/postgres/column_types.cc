#include "sources/postgres/column_types.h"

namespace cdcd::postgres {

namespace {

// PostgreSQL's typmod encodings (numeric.c, datetime.h, varchar.c, varbit.c).
constexpr std::int32_t kVarHeaderSize = 4;
constexpr int kIntervalFullPrecision = 0xFFFF;

void apply_modifier(ColumnType& type) {
  const std::int32_t modifier = type.modifier;
  if (modifier < 0) return;
  const std::string& name = type.name;
  if (name == "numeric") {
    if (modifier < kVarHeaderSize) return;
    const std::int32_t packed = modifier - kVarHeaderSize;
    type.precision = (packed >> 16) & 0xFFFF;
    // An 11-bit signed scale since PostgreSQL 15 (negative scales round left of the point).
    type.scale = ((packed & 0x7FF) ^ 1024) - 1024;
  } else if (name == "time" || name == "timetz" || name == "timestamp" || name == "timestamptz") {
    type.precision = modifier;
  } else if (name == "interval") {
    const int precision = modifier & 0xFFFF;
    if (precision != kIntervalFullPrecision) type.precision = precision;
  } else if (name == "bpchar" || name == "varchar") {
    if (modifier >= kVarHeaderSize) type.length = modifier - kVarHeaderSize;
  } else if (name == "bit" || name == "varbit") {
    type.length = modifier;
  }
}

std::string type_name(std::uint32_t oid, std::string_view known_name, const CustomTypes& custom) {
  if (!known_name.empty()) return std::string(known_name);
  if (auto builtin = builtin_type_name(oid); !builtin.empty()) return std::string(builtin);
  if (auto builtin_element = builtin_array_element(oid); builtin_element != 0) {
    return "_" + std::string(builtin_type_name(builtin_element));
  }
  auto it = custom.find(oid);
  return it == custom.end() || it->second.name.empty() ? std::string("unknown") : it->second.name;
}

}  // namespace

ColumnType column_type(std::uint32_t oid, std::int32_t modifier, std::string_view known_name,
                       const CustomTypes& custom) {
  auto found = custom.find(oid);
  const CustomType* resolved = found == custom.end() ? nullptr : &found->second;
  if (resolved != nullptr && resolved->base_oid != 0) {
    // A domain column has no modifier of its own (atttypmod is -1): the domain declares it.
    oid = resolved->base_oid;
    known_name = resolved->base_name;
    if (modifier < 0) modifier = resolved->base_modifier;
  }
  ColumnType type;
  if (resolved != nullptr) type.enum_labels = resolved->enum_labels;
  type.oid = oid;
  type.modifier = modifier;
  type.name = type_name(oid, known_name, custom);
  if (auto element = builtin_array_element(oid); element != 0) {
    type.element_oid = element;
    type.element_name = std::string(builtin_type_name(element));
  } else if (type.name.size() > 1 && type.name[0] == '_') {
    // An array of a type that is not built in (an enum, a domain): only its name is known.
    type.element_name = type.name.substr(1);
  }
  // An array column's modifier is its element's (numeric(10,2)[] has the numeric typmod).
  if (!type.element_name.empty()) {
    ColumnType element;
    element.name = type.element_name;
    element.modifier = modifier;
    apply_modifier(element);
    type.precision = element.precision;
    type.scale = element.scale;
    type.length = element.length;
  } else {
    apply_modifier(type);
  }
  return type;
}

std::shared_ptr<const EntitySchema> make_entity_schema(std::string entity,
                                                       const std::vector<DeclaredColumn>& columns,
                                                       const CustomTypes& custom) {
  auto schema = std::make_shared<EntitySchema>();
  schema->entity = std::move(entity);
  schema->columns.reserve(columns.size());
  for (const auto& column : columns) {
    schema->columns.push_back(ColumnSchema{
        column.name,
        postgres::column_type(column.type_oid, column.type_modifier, column.type_name, custom),
        !column.key, column.key});
  }
  return schema;
}

}  // namespace cdcd::postgres
