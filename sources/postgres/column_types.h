#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "daemon/core/entity_schema.h"

namespace cdcd::postgres {

// pg_type.typname of a built-in type (OID below 10000), empty for any other OID.
std::string_view builtin_type_name(std::uint32_t oid);
// The element OID of a built-in array type, 0 when `array_oid` is not one.
std::uint32_t builtin_array_element(std::uint32_t array_oid);
// Whether `oid` is a built-in type or an array of one: all a column type's OID says about it.
bool is_builtin_type(std::uint32_t oid);

// A type that is not built in. pgoutput's Type messages announce its name (once per session,
// before the first Relation that uses it); what else a column's representation needs is in the
// catalog (type_catalog.h), and only there.
struct CustomType {
  std::string name;        // pg_type.typname
  bool looked_up = false;  // the fields below come from the catalog
  // A domain: its base type, followed through domains over domains (0: not a domain), and the
  // type modifier the nearest domain declares for it (-1: none).
  std::uint32_t base_oid = 0;
  std::string base_name;
  std::int32_t base_modifier = -1;
  // An enum, or a domain over one: its labels in their sort order (pg_enum.enumsortorder).
  std::optional<std::vector<std::string>> enum_labels;
};
using CustomTypes = std::unordered_map<std::uint32_t, CustomType>;

struct DeclaredColumn {
  std::string name;
  std::uint32_t type_oid = 0;
  std::int32_t type_modifier = -1;
  bool key = false;
  std::string type_name;  // when known (the snapshot reads it from the catalog), else looked up
};

// A column's type: its name (built-in table, else `custom`, else "unknown") and what its type
// modifier declares (numeric precision/scale, time precision, character/bit length). A domain
// that `custom` knows the base of is its base type with the domain's modifier; an enum carries
// its labels.
ColumnType column_type(std::uint32_t oid, std::int32_t modifier, std::string_view known_name,
                       const CustomTypes& custom);

// The shared schema of an entity. Key columns are not optional; every other column is, since
// pgoutput does not carry NOT NULL and the stream alone decides what a change looks like.
std::shared_ptr<const EntitySchema> make_entity_schema(std::string entity,
                                                       const std::vector<DeclaredColumn>& columns,
                                                       const CustomTypes& custom);

}  // namespace cdcd::postgres
