#pragma once

#include <cstdint>
#include <memory>
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

// Names of types that are not built in, as pgoutput's Type messages announce them (the stream
// names such a type once per session, before the first Relation that uses it).
using CustomTypeNames = std::unordered_map<std::uint32_t, std::string>;

struct DeclaredColumn {
  std::string name;
  std::uint32_t type_oid = 0;
  std::int32_t type_modifier = -1;
  bool key = false;
  std::string type_name;  // when known (the snapshot reads it from the catalog), else looked up
};

// A column's type: its name (built-in table, else `custom`, else "unknown") and what its type
// modifier declares (numeric precision/scale, time precision, character/bit length).
ColumnType column_type(std::uint32_t oid, std::int32_t modifier, std::string_view known_name,
                       const CustomTypeNames& custom);

// The shared schema of an entity. Key columns are not optional; every other column is, since
// pgoutput does not carry NOT NULL and the stream alone decides what a change looks like.
std::shared_ptr<const EntitySchema> make_entity_schema(std::string entity,
                                                       const std::vector<DeclaredColumn>& columns,
                                                       const CustomTypeNames& custom);

}  // namespace cdcd::postgres
