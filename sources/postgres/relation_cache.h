#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "daemon/core/change.h"
#include "daemon/core/result.h"
#include "sources/postgres/column_types.h"
#include "sources/postgres/pgoutput.h"
#include "sources/postgres/value_json.h"

namespace cdcd::postgres {

// The JSON mapping of a column type, a function of its OID alone: PostgreSQL's built-in types
// (OIDs below 10000, the same on every server version) from a fixed table, arrays of them as JSON
// arrays of their element's mapping. Any other type (domains, enums, composites, ranges of
// one's own, arrays of them, extension types) is its text form: pgoutput names such types but
// does not describe them, and the catalog at decode time may no longer hold them, so that no
// other rule gives the same JSON whenever the change is decoded. The reference stays valid for
// the program's life.
const TypeInfo& type_of_oid(std::uint32_t oid);

struct Column {
  std::string name;
  std::string json_name;  // "\"name\":", ready to append
  const TypeInfo* type = nullptr;
};

struct Relation {
  std::string entity;  // "schema.table"
  std::vector<Column> columns;
  std::vector<std::size_t> key_columns;        // indexes into columns
  std::vector<DeclaredColumn> declared;        // what the schema is made of
  std::vector<std::size_t> enum_columns;       // indexes of columns whose type has enum labels
  std::shared_ptr<const EntitySchema> schema;  // attached to every change of the relation
};

// Appends a JSON object of `columns` (all when `only` is empty) of a row given as text values.
// Unchanged TOAST values ('u') are left out and, when `unchanged` is given, listed there.
void append_row(std::string& out, const Relation& relation, const std::vector<TupleValue>& values,
                const std::vector<std::size_t>* only, std::vector<std::string>* unchanged);

// Turns pgoutput messages into Changes. Relation messages update the cache in stream order, so a
// column added mid-stream shows in the changes that follow it. What a change looks like depends
// only on the stream: a key is the columns the Relation message flags as replica identity, a
// value's JSON the mapping of its column's type OID. Only the column types attached to changes
// (Change::schema) say more about types that are not built in (enum labels, a domain's base
// type), which the catalog alone knows: the type lookup reads it when a Relation message names
// such a type, for every type of a relation whose Relation message comes again, and when an
// enum value is not among the labels read (ALTER TYPE ... ADD VALUE sends no Relation message).
class ChangeDecoder {
 public:
  // What the catalog says now about a type (type_catalog.h). Errors keep their `retryable`.
  using TypeLookup = std::function<Result<CustomType>(std::uint32_t oid)>;

  // Without a lookup, types that are not built in are known by name only.
  void set_type_lookup(TypeLookup lookup) { lookup_ = std::move(lookup); }

  // Applies schema messages (Relation, Type) always; appends the changes of Insert, Update,
  // Delete and Truncate to `out` when `want_changes` (lsn, seq and time are left to the caller).
  Status decode(std::string_view message, bool want_changes, std::vector<Change>& out);

  const Relation* relation(std::uint32_t oid) const;

 private:
  Status apply_relation(std::string_view message);
  Status apply_type(std::string_view message);
  Status resolve_type(std::uint32_t oid, bool refresh, std::string_view column,
                      std::string_view entity);
  Status refresh_stale_enums(const Relation& relation, const std::vector<TupleValue>& values);
  void rebuild_schemas_using(std::uint32_t type_oid);
  Result<const Relation*> find(std::uint32_t oid) const;
  Status decode_insert(std::string_view message, std::vector<Change>& out);
  Status decode_update(std::string_view message, std::vector<Change>& out);
  Status decode_delete(std::string_view message, std::vector<Change>& out);
  Status decode_truncate(std::string_view message, std::vector<Change>& out);
  Status check_width(const Relation& relation, const std::vector<TupleValue>& values) const;
  void append_new_key(std::string& out, const Relation& relation);

  std::unordered_map<std::uint32_t, Relation> relations_;
  CustomTypes custom_types_;
  TypeLookup lookup_;
  // Enum values that were not among the labels even after reading them again (a label renamed
  // since): not looked up again for every change that has them.
  std::set<std::pair<std::uint32_t, std::string>, std::less<>> unknown_labels_;
  std::vector<TupleValue> old_values_;
  std::vector<TupleValue> new_values_;
  std::vector<TupleValue> key_values_;
};

}  // namespace cdcd::postgres
