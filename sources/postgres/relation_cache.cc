#include "sources/postgres/relation_cache.h"

#include <algorithm>

namespace cdcd::postgres {

namespace {

struct BuiltinType {
  std::uint32_t oid;
  std::uint32_t array_oid;  // the OID of its array type
  ValueKind kind;
  char delimiter;    // between the elements of its arrays (';' for box)
  const char* name;  // pg_type.typname
};

// Every type of pg_type.dat (PostgreSQL 15) that has an array type, with its array: OIDs below
// 10000 are assigned in PostgreSQL's source and never change, so this is what any server version
// means by them. Types with a JSON mapping other than a string are marked; the others (interval,
// time, numeric, money, inet, uuid, ranges, geometry, ...) are their text form.
constexpr BuiltinType kBuiltinTypes[] = {
    {16, 1000, ValueKind::kBool, ',', "bool"},
    {17, 1001, ValueKind::kBytea, ',', "bytea"},
    {18, 1002, ValueKind::kString, ',', "char"},
    {19, 1003, ValueKind::kString, ',', "name"},
    {20, 1016, ValueKind::kInteger, ',', "int8"},
    {21, 1005, ValueKind::kInteger, ',', "int2"},
    {22, 1006, ValueKind::kString, ',', "int2vector"},
    {23, 1007, ValueKind::kInteger, ',', "int4"},
    {24, 1008, ValueKind::kString, ',', "regproc"},
    {25, 1009, ValueKind::kString, ',', "text"},
    {26, 1028, ValueKind::kInteger, ',', "oid"},
    {27, 1010, ValueKind::kString, ',', "tid"},
    {28, 1011, ValueKind::kString, ',', "xid"},
    {29, 1012, ValueKind::kString, ',', "cid"},
    {30, 1013, ValueKind::kString, ',', "oidvector"},
    {71, 210, ValueKind::kString, ',', "pg_type"},
    {75, 270, ValueKind::kString, ',', "pg_attribute"},
    {81, 272, ValueKind::kString, ',', "pg_proc"},
    {83, 273, ValueKind::kString, ',', "pg_class"},
    {114, 199, ValueKind::kJson, ',', "json"},
    {142, 143, ValueKind::kString, ',', "xml"},
    {600, 1017, ValueKind::kString, ',', "point"},
    {601, 1018, ValueKind::kString, ',', "lseg"},
    {602, 1019, ValueKind::kString, ',', "path"},
    {603, 1020, ValueKind::kString, ';', "box"},
    {604, 1027, ValueKind::kString, ',', "polygon"},
    {628, 629, ValueKind::kString, ',', "line"},
    {650, 651, ValueKind::kString, ',', "cidr"},
    {700, 1021, ValueKind::kFloat, ',', "float4"},
    {701, 1022, ValueKind::kFloat, ',', "float8"},
    {718, 719, ValueKind::kString, ',', "circle"},
    {774, 775, ValueKind::kString, ',', "macaddr8"},
    {790, 791, ValueKind::kString, ',', "money"},
    {829, 1040, ValueKind::kString, ',', "macaddr"},
    {869, 1041, ValueKind::kString, ',', "inet"},
    {1033, 1034, ValueKind::kString, ',', "aclitem"},
    {1042, 1014, ValueKind::kString, ',', "bpchar"},
    {1043, 1015, ValueKind::kString, ',', "varchar"},
    {1082, 1182, ValueKind::kDateTime, ',', "date"},
    {1083, 1183, ValueKind::kString, ',', "time"},
    {1114, 1115, ValueKind::kDateTime, ',', "timestamp"},
    {1184, 1185, ValueKind::kDateTimeTz, ',', "timestamptz"},
    {1186, 1187, ValueKind::kString, ',', "interval"},
    {1266, 1270, ValueKind::kDateTimeTz, ',', "timetz"},
    {1560, 1561, ValueKind::kString, ',', "bit"},
    {1562, 1563, ValueKind::kString, ',', "varbit"},
    {1700, 1231, ValueKind::kString, ',', "numeric"},
    {1790, 2201, ValueKind::kString, ',', "refcursor"},
    {2202, 2207, ValueKind::kString, ',', "regprocedure"},
    {2203, 2208, ValueKind::kString, ',', "regoper"},
    {2204, 2209, ValueKind::kString, ',', "regoperator"},
    {2205, 2210, ValueKind::kString, ',', "regclass"},
    {2206, 2211, ValueKind::kString, ',', "regtype"},
    {2249, 2287, ValueKind::kString, ',', "record"},
    {2275, 1263, ValueKind::kString, ',', "cstring"},
    {2950, 2951, ValueKind::kString, ',', "uuid"},
    {2970, 2949, ValueKind::kString, ',', "txid_snapshot"},
    {3220, 3221, ValueKind::kString, ',', "pg_lsn"},
    {3614, 3643, ValueKind::kString, ',', "tsvector"},
    {3615, 3645, ValueKind::kString, ',', "tsquery"},
    {3642, 3644, ValueKind::kString, ',', "gtsvector"},
    {3734, 3735, ValueKind::kString, ',', "regconfig"},
    {3769, 3770, ValueKind::kString, ',', "regdictionary"},
    {3802, 3807, ValueKind::kJson, ',', "jsonb"},
    {3904, 3905, ValueKind::kString, ',', "int4range"},
    {3906, 3907, ValueKind::kString, ',', "numrange"},
    {3908, 3909, ValueKind::kString, ',', "tsrange"},
    {3910, 3911, ValueKind::kString, ',', "tstzrange"},
    {3912, 3913, ValueKind::kString, ',', "daterange"},
    {3926, 3927, ValueKind::kString, ',', "int8range"},
    {4072, 4073, ValueKind::kString, ',', "jsonpath"},
    {4089, 4090, ValueKind::kString, ',', "regnamespace"},
    {4096, 4097, ValueKind::kString, ',', "regrole"},
    {4191, 4192, ValueKind::kString, ',', "regcollation"},
    {4451, 6150, ValueKind::kString, ',', "int4multirange"},
    {4532, 6151, ValueKind::kString, ',', "nummultirange"},
    {4533, 6152, ValueKind::kString, ',', "tsmultirange"},
    {4534, 6153, ValueKind::kString, ',', "tstzmultirange"},
    {4535, 6155, ValueKind::kString, ',', "datemultirange"},
    {4536, 6157, ValueKind::kString, ',', "int8multirange"},
    {5038, 5039, ValueKind::kString, ',', "pg_snapshot"},
    {5069, 271, ValueKind::kString, ',', "xid8"},
};

std::string json_name(const std::string& name) {
  std::string out;
  append_json_string(out, name);
  out += ':';
  return out;
}

using TypeTable = std::unordered_map<std::uint32_t, TypeInfo>;

// Element types first, so that the array entries can point at them (an unordered_map never moves
// its elements).
TypeTable make_type_table() {
  TypeTable table;
  for (const auto& builtin : kBuiltinTypes) {
    table.emplace(builtin.oid, TypeInfo{builtin.kind, nullptr, ','});
  }
  for (const auto& builtin : kBuiltinTypes) {
    table.emplace(builtin.array_oid,
                  TypeInfo{ValueKind::kArray, &table.at(builtin.oid), builtin.delimiter});
  }
  return table;
}

}  // namespace

std::string_view builtin_type_name(std::uint32_t oid) {
  for (const auto& builtin : kBuiltinTypes) {
    if (builtin.oid == oid) return builtin.name;
  }
  return {};
}

std::uint32_t builtin_array_element(std::uint32_t array_oid) {
  for (const auto& builtin : kBuiltinTypes) {
    if (builtin.array_oid == array_oid) return builtin.oid;
  }
  return 0;
}

bool is_builtin_type(std::uint32_t oid) {
  return !builtin_type_name(oid).empty() || builtin_array_element(oid) != 0;
}

const TypeInfo& type_of_oid(std::uint32_t oid) {
  static const TypeTable kTable = make_type_table();
  static const TypeInfo kTextForm{};
  auto it = kTable.find(oid);
  return it == kTable.end() ? kTextForm : it->second;
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
      return apply_type(message);
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
  // The Relation message of a relation seen before follows a change of it (ALTER TABLE, ALTER
  // TYPE): what the catalog says about its types is read again.
  const bool again = relations_.contains(parsed->oid);
  std::vector<std::uint32_t> resolved;
  relation.declared.reserve(parsed->columns.size());
  for (std::size_t i = 0; i < parsed->columns.size(); ++i) {
    auto& source = parsed->columns[i];
    const std::uint32_t oid = source.type_oid;
    if (!is_builtin_type(oid) &&
        std::find(resolved.begin(), resolved.end(), oid) == resolved.end()) {
      if (auto found = resolve_type(oid, again, source.name, relation.entity); !found) {
        return found;
      }
      resolved.push_back(oid);
    }
    relation.declared.push_back({source.name, oid, source.type_modifier, source.key, {}});
    // The replica identity as the stream states it: the primary key, the REPLICA IDENTITY USING
    // INDEX columns, every column for REPLICA IDENTITY FULL.
    if (source.key) relation.key_columns.push_back(i);
    relation.columns.push_back(Column{source.name, json_name(source.name), &type_of_oid(oid)});
  }
  relation.schema = make_entity_schema(relation.entity, relation.declared, custom_types_);
  for (std::size_t i = 0; i < relation.schema->columns.size(); ++i) {
    if (relation.schema->columns[i].type.enum_labels) relation.enum_columns.push_back(i);
  }
  relations_[parsed->oid] = std::move(relation);
  return ok();
}

// A type that is not built in keeps its text form (type_of_oid); its name is kept for the column
// types of the relations that follow, next to what the catalog says about it.
Status ChangeDecoder::apply_type(std::string_view message) {
  auto parsed = parse_type(message);
  if (!parsed) return fail("malformed pgoutput Type message");
  custom_types_[parsed->oid].name = parsed->name;
  return ok();
}

Status ChangeDecoder::resolve_type(std::uint32_t oid, bool refresh, std::string_view column,
                                   std::string_view entity) {
  if (!lookup_) return ok();
  CustomType& cached = custom_types_[oid];
  if (cached.looked_up && !refresh) return ok();
  auto found = lookup_(oid);
  if (!found) {
    std::string message = "looking up the type (OID " + std::to_string(oid) + ") of column ";
    message += column;
    message += " of ";
    message += entity;
    message += " in the catalog: " + found.error().message;
    return tl::unexpected(Error{std::move(message), found.error().retryable});
  }
  if (found->name.empty()) found->name = cached.name;  // dropped since: the stream's name stays
  cached = std::move(*found);
  return ok();
}

Status ChangeDecoder::refresh_stale_enums(const Relation& relation,
                                          const std::vector<TupleValue>& values) {
  for (std::size_t index : relation.enum_columns) {
    const TupleValue& value = values[index];
    if (value.kind != 't') continue;
    const std::uint32_t oid = relation.declared[index].type_oid;
    const auto& labels = relation.schema->columns[index].type.enum_labels;
    if (!labels || std::find(labels->begin(), labels->end(), value.data) != labels->end()) {
      continue;
    }
    auto unknown = std::pair(oid, std::string(value.data));
    if (unknown_labels_.contains(unknown)) continue;
    if (auto refreshed = resolve_type(oid, true, relation.declared[index].name, relation.entity);
        !refreshed) {
      return refreshed;
    }
    rebuild_schemas_using(oid);
    const auto& fresh = custom_types_[oid].enum_labels;
    if (!fresh || std::find(fresh->begin(), fresh->end(), value.data) == fresh->end()) {
      unknown_labels_.insert(std::move(unknown));
    }
  }
  return ok();
}

// A new schema object, so that encoders that cache by schema see the change.
void ChangeDecoder::rebuild_schemas_using(std::uint32_t type_oid) {
  auto of_type = [&](const DeclaredColumn& column) { return column.type_oid == type_oid; };
  for (auto& entry : relations_) {
    Relation& relation = entry.second;
    if (std::any_of(relation.declared.begin(), relation.declared.end(), of_type)) {
      relation.schema = make_entity_schema(relation.entity, relation.declared, custom_types_);
    }
  }
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

// The old image of a Delete, by what pgoutput sent: 'O' the whole old row (REPLICA IDENTITY FULL),
// 'K' its key columns.
void set_old_row(Change& change, const Relation& relation, char old_kind,
                 const std::vector<TupleValue>& old_values) {
  if (old_kind == 'O') {
    append_row(change.old_row, relation, old_values, nullptr, nullptr);
  } else {
    append_row(change.old_row, relation, old_values, &relation.key_columns, nullptr);
  }
}

bool has_unchanged_key(const Relation& relation, const std::vector<TupleValue>& values) {
  for (std::size_t index : relation.key_columns) {
    if (values[index].kind == 'u') return true;
  }
  return false;
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
  if (auto fresh = refresh_stale_enums(**relation, new_values_); !fresh) return fresh;
  Change& change = out.emplace_back();
  change.operation = Operation::kInsert;
  change.entity = (*relation)->entity;
  change.schema = (*relation)->schema;
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
  const bool has_old = old_kind == 'K' || old_kind == 'O';
  if (has_old) {
    if (!parse_tuple(reader, old_values_)) return fail("malformed pgoutput Update message");
    new_marker = static_cast<char>(reader.u8());
  }
  if (new_marker != 'N' || !parse_tuple(reader, new_values_)) {
    return fail("malformed pgoutput Update message");
  }
  if (auto width = check_width(rel, new_values_); !width) return width;
  if (has_old) {
    if (auto width = check_width(rel, old_values_); !width) return width;
  }
  if (auto fresh = refresh_stale_enums(rel, new_values_); !fresh) return fresh;
  Change& change = out.emplace_back();
  change.operation = Operation::kUpdate;
  change.entity = rel.entity;
  change.schema = rel.schema;
  append_row(change.new_row, rel, new_values_, nullptr, &change.unchanged_columns);
  if (!has_old) {
    // Without an old image the key did not change: the new key is the old one.
    append_row(change.key, rel, new_values_, &rel.key_columns, nullptr);
    change.old_row = change.key;
    return ok();
  }
  std::string old_key;
  append_row(old_key, rel, old_values_, &rel.key_columns, nullptr);
  append_new_key(change.key, rel);
  if (old_key != change.key) change.old_key = old_key;
  if (old_kind == 'O') {
    append_row(change.old_row, rel, old_values_, nullptr, nullptr);
  } else {
    change.old_row = std::move(old_key);
  }
  return ok();
}

// A key column whose value is unchanged TOAST was not sent again in the new row; PostgreSQL then
// sends the old image with it (a key with out-of-line values is always logged), and the key takes
// the value from there rather than lacking a column.
void ChangeDecoder::append_new_key(std::string& out, const Relation& relation) {
  if (!has_unchanged_key(relation, new_values_)) {
    append_row(out, relation, new_values_, &relation.key_columns, nullptr);
    return;
  }
  key_values_ = new_values_;
  for (std::size_t index : relation.key_columns) {
    if (key_values_[index].kind == 'u') key_values_[index] = old_values_[index];
  }
  append_row(out, relation, key_values_, &relation.key_columns, nullptr);
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
  if (auto fresh = refresh_stale_enums(rel, old_values_); !fresh) return fresh;
  Change& change = out.emplace_back();
  change.operation = Operation::kDelete;
  change.entity = rel.entity;
  change.schema = rel.schema;
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
    change.schema = (*relation)->schema;
    change.key = "{}";
  }
  return ok();
}

}  // namespace cdcd::postgres
