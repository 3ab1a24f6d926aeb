#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cdcd {

// The declared type of one column, as the source knows it. Encoders that need more than the JSON
// of a value (Debezium's logical types, a schema block) read it; nothing is guessed from values.
struct ColumnType {
  // The source's type name, e.g. "numeric", "timestamptz", "_int4" (array); for a PostgreSQL
  // domain its base type's (followed through domains over domains), as the column is represented.
  std::string name;
  std::uint32_t oid = 0;
  // The source's type modifier (PostgreSQL atttypmod), -1 for none; for a domain the modifier
  // the nearest domain declares for its base type (a domain over numeric(10,2)).
  std::int32_t modifier = -1;
  // Derived from the modifier: numeric(precision, scale), time/timestamp/interval(precision),
  // char/varchar/bit(length); nullopt when the column does not declare it.
  std::optional<int> precision;
  std::optional<int> scale;
  std::optional<int> length;
  // For an array: its element's type name and OID (empty / 0 otherwise).
  std::string element_name;
  std::uint32_t element_oid = 0;
  // For an enum (or a domain over one): its labels in their sort order.
  std::optional<std::vector<std::string>> enum_labels;
};

struct ColumnSchema {
  std::string name;
  ColumnType type;
  bool optional = true;  // may be null
  bool key = false;      // part of the change's key
};

// The columns of one entity, attached by the source once per entity version and shared by
// pointer by every change of it (Change::schema).
struct EntitySchema {
  std::string entity;
  std::vector<ColumnSchema> columns;

  const ColumnSchema* find(std::string_view column) const {
    for (const auto& candidate : columns) {
      if (candidate.name == column) return &candidate;
    }
    return nullptr;
  }
};

}  // namespace cdcd
