#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "daemon/core/change.h"
#include "daemon/core/result.h"
#include "sources/postgres/pgoutput.h"
#include "sources/postgres/value_json.h"

namespace cdcd::postgres {

// What pg_type says about a type that is not built in.
struct PgTypeRow {
  char typtype = 'b';   // 'b' base, 'd' domain, 'e' enum, ...
  char category = 'U';  // 'A' for arrays
  std::uint32_t element = 0;
  std::uint32_t base = 0;  // a domain's base type
  char delimiter = ',';
};
using TypeLookup = std::function<Result<PgTypeRow>(std::uint32_t oid)>;

// Resolves type OIDs to their JSON mapping: built-in types from a table, others (enums, domains,
// arrays of them) once through `lookup`. Returned pointers stay valid for the cache's lifetime.
class TypeCache {
 public:
  explicit TypeCache(TypeLookup lookup);
  Result<const TypeInfo*> resolve(std::uint32_t oid);

 private:
  Result<const TypeInfo*> resolve_depth(std::uint32_t oid, int depth);
  TypeLookup lookup_;
  std::unordered_map<std::uint32_t, std::unique_ptr<TypeInfo>> types_;
};

struct Column {
  std::string name;
  std::string json_name;  // "\"name\":", ready to append
  const TypeInfo* type = nullptr;
};

struct Relation {
  std::string entity;  // "schema.table"
  char replica_identity = 'd';
  std::vector<Column> columns;
  std::vector<std::size_t> key_columns;  // indexes into columns
};

// Appends a JSON object of `columns` (all when `only` is empty) of a row given as text values.
// Unchanged TOAST values ('u') are left out and, when `unchanged` is given, listed there.
void append_row(std::string& out, const Relation& relation, const std::vector<TupleValue>& values,
                const std::vector<std::size_t>* only, std::vector<std::string>* unchanged);

// The primary-key columns of a relation, for tables with REPLICA IDENTITY FULL (whose pgoutput
// key would otherwise be every column).
using KeyLookup = std::function<Result<std::vector<std::string>>(std::uint32_t relation_oid)>;

// Turns pgoutput messages into Changes. Relation messages update the cache in stream order, so a
// column added mid-stream shows in the changes that follow it.
class ChangeDecoder {
 public:
  ChangeDecoder(TypeLookup type_lookup, KeyLookup key_lookup);

  // Applies schema messages (Relation, Type) always; appends the changes of Insert, Update,
  // Delete and Truncate to `out` when `want_changes` (lsn, seq and time are left to the caller).
  Status decode(std::string_view message, bool want_changes, std::vector<Change>& out);

  const Relation* relation(std::uint32_t oid) const;
  TypeCache& types() { return types_; }

 private:
  Status apply_relation(std::string_view message);
  Result<const Relation*> find(std::uint32_t oid) const;
  Status decode_insert(std::string_view message, std::vector<Change>& out);
  Status decode_update(std::string_view message, std::vector<Change>& out);
  Status decode_delete(std::string_view message, std::vector<Change>& out);
  Status decode_truncate(std::string_view message, std::vector<Change>& out);
  Status check_width(const Relation& relation, const std::vector<TupleValue>& values) const;

  TypeCache types_;
  KeyLookup key_lookup_;
  std::unordered_map<std::uint32_t, Relation> relations_;
  std::vector<TupleValue> old_values_;
  std::vector<TupleValue> new_values_;
};

}  // namespace cdcd::postgres
