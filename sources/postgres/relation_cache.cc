#include "sources/postgres/relation_cache.h"

#include <algorithm>

namespace cdcd::postgres {

namespace {

struct BuiltinType {
  std::uint32_t oid;
  ValueKind kind;
  std::uint32_t array_oid;  // the OID of its array type
};

// Built-in types with a JSON mapping other than a string, and the string types that have array
// types worth typing. Everything else (interval, time, money, inet, ...) is its text form.
constexpr BuiltinType kBuiltinTypes[] = {
    {16, ValueKind::kBool, 1000},          // bool
    {17, ValueKind::kBytea, 1001},         // bytea
    {18, ValueKind::kString, 1002},        // "char"
    {19, ValueKind::kString, 1003},        // name
    {20, ValueKind::kInteger, 1016},       // int8
    {21, ValueKind::kInteger, 1005},       // int2
    {23, ValueKind::kInteger, 1007},       // int4
    {25, ValueKind::kString, 1009},        // text
    {26, ValueKind::kInteger, 1028},       // oid
    {114, ValueKind::kJson, 199},          // json
    {700, ValueKind::kFloat, 1021},        // float4
    {701, ValueKind::kFloat, 1022},        // float8
    {1042, ValueKind::kString, 1014},      // bpchar
    {1043, ValueKind::kString, 1015},      // varchar
    {1082, ValueKind::kDateTime, 1182},    // date
    {1083, ValueKind::kString, 1183},      // time
    {1114, ValueKind::kDateTime, 1115},    // timestamp
    {1184, ValueKind::kDateTimeTz, 1185},  // timestamptz
    {1186, ValueKind::kString, 1187},      // interval (ISO 8601 via intervalstyle)
    {1266, ValueKind::kDateTimeTz, 1270},  // timetz
    {1700, ValueKind::kString, 1231},      // numeric: a string, no precision lost
    {2950, ValueKind::kString, 2951},      // uuid
    {3802, ValueKind::kJson, 3807},        // jsonb
};

// The first OID of objects created after initdb; below it, types are built in.
constexpr std::uint32_t kFirstNormalObjectId = 16384;

std::string json_name(const std::string& name) {
  std::string out;
  append_json_string(out, name);
  out += ':';
  return out;
}

}  // namespace

TypeCache::TypeCache(TypeLookup lookup) : lookup_(std::move(lookup)) {
  for (const auto& builtin : kBuiltinTypes) {
    auto element = std::make_unique<TypeInfo>(TypeInfo{builtin.kind, nullptr, ','});
    auto array = std::make_unique<TypeInfo>(TypeInfo{ValueKind::kArray, element.get(), ','});
    types_[builtin.oid] = std::move(element);
    types_[builtin.array_oid] = std::move(array);
  }
}

Result<const TypeInfo*> TypeCache::resolve(std::uint32_t oid) { return resolve_depth(oid, 0); }

Result<const TypeInfo*> TypeCache::resolve_depth(std::uint32_t oid, int depth) {
  if (auto it = types_.find(oid); it != types_.end()) return it->second.get();
  auto info = std::make_unique<TypeInfo>();
  // Other built-in types keep their text form; user types need a look at pg_type.
  if (oid >= kFirstNormalObjectId && depth < 8 && lookup_) {
    auto row = lookup_(oid);
    if (!row) return tl::unexpected(row.error());
    if (row->typtype == 'd' && row->base != 0) {
      auto base = resolve_depth(row->base, depth + 1);
      if (!base) return base;
      *info = **base;
    } else if (row->category == 'A' && row->element != 0) {
      auto element = resolve_depth(row->element, depth + 1);
      if (!element) return element;
      *info = TypeInfo{ValueKind::kArray, *element, row->delimiter};
    }
  }
  // A cycle (a type reached again through its own domain base or array element) stored this OID
  // at a deeper level already, and the levels in between point at that entry: keep it.
  return types_.try_emplace(oid, std::move(info)).first->second.get();
}

void append_row(std::string& out, const Relation& relation, const std::vector<TupleValue>& values,
                const std::vector<std::size_t>* only, std::vector<std::string>* unchanged) {
  out += '{';
  bool first = true;
  auto append_column = [&](std::size_t index) {
    const TupleValue& value = values[index];
    const Column& column = relation.columns[index];
    if (value.kind == 'u') {
      if (unchanged) unchanged->push_back(column.name);
      return;
    }
    if (!first) out += ',';
    first = false;
    out += column.json_name;
    if (value.kind == 'n') {
      out += "null";
    } else {
      append_json_value(out, *column.type, value.data);
    }
  };
  if (only) {
    for (std::size_t index : *only) append_column(index);
  } else {
    for (std::size_t index = 0; index < values.size(); ++index) append_column(index);
  }
  out += '}';
}

ChangeDecoder::ChangeDecoder(TypeLookup type_lookup, KeyLookup key_lookup)
    : types_(std::move(type_lookup)), key_lookup_(std::move(key_lookup)) {}

const Relation* ChangeDecoder::relation(std::uint32_t oid) const {
  auto it = relations_.find(oid);
  return it == relations_.end() ? nullptr : &it->second;
}

Status ChangeDecoder::decode(std::string_view message, bool want_changes,
                             std::vector<Change>& out) {
  if (message.empty()) return fail("empty pgoutput message");
  switch (message[0]) {
    case 'R':
      return apply_relation(message);
    case 'Y':
      // Types are resolved by OID from pg_type when a relation first uses them.
      return ok();
    case 'I':
      return want_changes ? decode_insert(message, out) : ok();
    case 'U':
      return want_changes ? decode_update(message, out) : ok();
    case 'D':
      return want_changes ? decode_delete(message, out) : ok();
    case 'T':
      return want_changes ? decode_truncate(message, out) : ok();
    case 'M':
    case 'O':
      return ok();
    default:
      return fail(std::string("unexpected pgoutput message type '") + message[0] + "'");
  }
}

Status ChangeDecoder::apply_relation(std::string_view message) {
  auto parsed = parse_relation(message);
  if (!parsed) return fail("malformed pgoutput Relation message");
  Relation relation;
  relation.entity = parsed->nspname + "." + parsed->relname;
  relation.replica_identity = parsed->replica_identity;
  std::vector<std::string> full_identity_key;
  if (parsed->replica_identity == 'f' && key_lookup_) {
    auto key = key_lookup_(parsed->oid);
    if (!key) return tl::unexpected(key.error());
    full_identity_key = std::move(*key);
  }
  for (std::size_t i = 0; i < parsed->columns.size(); ++i) {
    auto& source = parsed->columns[i];
    auto type = types_.resolve(source.type_oid);
    if (!type) return tl::unexpected(type.error());
    bool key = source.key;
    // REPLICA IDENTITY FULL flags every column; the primary key identifies the row better.
    if (parsed->replica_identity == 'f' && !full_identity_key.empty()) {
      key = std::find(full_identity_key.begin(), full_identity_key.end(), source.name) !=
            full_identity_key.end();
    }
    if (key) relation.key_columns.push_back(i);
    relation.columns.push_back(Column{source.name, json_name(source.name), *type});
  }
  relations_[parsed->oid] = std::move(relation);
  return ok();
}

Result<const Relation*> ChangeDecoder::find(std::uint32_t oid) const {
  const Relation* found = relation(oid);
  if (found == nullptr) {
    return fail("pgoutput change for relation " + std::to_string(oid) +
                " before its Relation message");
  }
  return found;
}

Status ChangeDecoder::check_width(const Relation& relation,
                                  const std::vector<TupleValue>& values) const {
  if (values.size() == relation.columns.size()) return ok();
  return fail("pgoutput tuple of " + relation.entity + " has " + std::to_string(values.size()) +
              " columns, its Relation message " + std::to_string(relation.columns.size()));
}

namespace {

// The old image of an Update or Delete, by what pgoutput sent: 'O' the whole old row (REPLICA
// IDENTITY FULL), 'K' its key columns. Without either the key did not change, so the change's key
// columns are the old ones.
void set_old_row(Change& change, const Relation& relation, char old_kind,
                 const std::vector<TupleValue>& old_values) {
  if (old_kind == 'O') {
    append_row(change.old_row, relation, old_values, nullptr, nullptr);
  } else if (old_kind == 'K') {
    append_row(change.old_row, relation, old_values, &relation.key_columns, nullptr);
  } else {
    change.old_row = change.key;
  }
}

}  // namespace

Status ChangeDecoder::decode_insert(std::string_view message, std::vector<Change>& out) {
  ByteReader reader(message);
  reader.u8();
  auto relation = find(reader.u32());
  if (!relation) return tl::unexpected(relation.error());
  if (reader.u8() != 'N' || !parse_tuple(reader, new_values_)) {
    return fail("malformed pgoutput Insert message");
  }
  if (auto width = check_width(**relation, new_values_); !width) return width;
  Change& change = out.emplace_back();
  change.operation = Operation::kInsert;
  change.entity = (*relation)->entity;
  append_row(change.key, **relation, new_values_, &(*relation)->key_columns, nullptr);
  append_row(change.new_row, **relation, new_values_, nullptr, &change.unchanged_columns);
  return ok();
}

Status ChangeDecoder::decode_update(std::string_view message, std::vector<Change>& out) {
  ByteReader reader(message);
  reader.u8();
  auto relation = find(reader.u32());
  if (!relation) return tl::unexpected(relation.error());
  const Relation& rel = **relation;
  char old_kind = static_cast<char>(reader.u8());
  char new_marker = old_kind;
  if (old_kind == 'K' || old_kind == 'O') {
    if (!parse_tuple(reader, old_values_)) return fail("malformed pgoutput Update message");
    new_marker = static_cast<char>(reader.u8());
  }
  if (new_marker != 'N' || !parse_tuple(reader, new_values_)) {
    return fail("malformed pgoutput Update message");
  }
  if (auto width = check_width(rel, new_values_); !width) return width;
  bool has_old = old_kind == 'K' || old_kind == 'O';
  if (has_old) {
    if (auto width = check_width(rel, old_values_); !width) return width;
  }
  Change& change = out.emplace_back();
  change.operation = Operation::kUpdate;
  change.entity = rel.entity;
  append_row(change.key, rel, new_values_, &rel.key_columns, nullptr);
  append_row(change.new_row, rel, new_values_, nullptr, &change.unchanged_columns);
  set_old_row(change, rel, old_kind, old_values_);
  return ok();
}

Status ChangeDecoder::decode_delete(std::string_view message, std::vector<Change>& out) {
  ByteReader reader(message);
  reader.u8();
  auto relation = find(reader.u32());
  if (!relation) return tl::unexpected(relation.error());
  const Relation& rel = **relation;
  char old_kind = static_cast<char>(reader.u8());
  if ((old_kind != 'K' && old_kind != 'O') || !parse_tuple(reader, old_values_)) {
    return fail("malformed pgoutput Delete message");
  }
  if (auto width = check_width(rel, old_values_); !width) return width;
  Change& change = out.emplace_back();
  change.operation = Operation::kDelete;
  change.entity = rel.entity;
  append_row(change.key, rel, old_values_, &rel.key_columns, nullptr);
  set_old_row(change, rel, old_kind, old_values_);
  return ok();
}

Status ChangeDecoder::decode_truncate(std::string_view message, std::vector<Change>& out) {
  auto truncate = parse_truncate(message);
  if (!truncate) return fail("malformed pgoutput Truncate message");
  for (std::uint32_t oid : truncate->relation_oids) {
    auto relation = find(oid);
    if (!relation) return tl::unexpected(relation.error());
    Change& change = out.emplace_back();
    change.operation = Operation::kTruncate;
    change.entity = (*relation)->entity;
    change.key = "{}";
  }
  return ok();
}

}  // namespace cdcd::postgres
