#include "sources/postgres/type_catalog.h"

#include <cstdlib>
#include <string>

namespace cdcd::postgres {

namespace {

// The type and, for a domain, every type below it, the type itself first.
constexpr char kTypeChainSql[] =
    "WITH RECURSIVE chain(oid, typname, typtype, typbasetype, typtypmod, depth) AS ("
    " SELECT t.oid, t.typname, t.typtype, t.typbasetype, t.typtypmod, 0 FROM pg_type t"
    " WHERE t.oid = $1::oid"
    " UNION ALL"
    " SELECT b.oid, b.typname, b.typtype, b.typbasetype, b.typtypmod, c.depth + 1 FROM chain c"
    " JOIN pg_type b ON b.oid = c.typbasetype WHERE c.typtype = 'd')"
    " SELECT oid, typname, typtype::text, typtypmod FROM chain ORDER BY depth";

constexpr char kEnumLabelsSql[] =
    "SELECT enumlabel FROM pg_enum WHERE enumtypid = $1::oid ORDER BY enumsortorder";

Result<std::vector<std::string>> enum_labels(PgConnection& conn, const std::string& oid) {
  auto result = conn.exec_params(kEnumLabelsSql, {oid});
  if (!result) return tl::unexpected(result.error());
  std::vector<std::string> labels;
  for (int row = 0; row < PQntuples(result->get()); ++row) {
    labels.emplace_back(PQgetvalue(result->get(), row, 0));
  }
  return labels;
}

}  // namespace

Result<CustomType> look_up_type(PgConnection& conn, std::uint32_t oid) {
  auto chain = conn.exec_params(kTypeChainSql, {std::to_string(oid)});
  if (!chain) return tl::unexpected(chain.error());
  PGresult* rows = chain->get();
  CustomType type;
  type.looked_up = true;
  const int depth = PQntuples(rows);
  if (depth == 0) return type;  // dropped since the change was written
  type.name = PQgetvalue(rows, 0, 1);
  const int root = depth - 1;
  if (root > 0) {
    type.base_oid =
        static_cast<std::uint32_t>(std::strtoul(PQgetvalue(rows, root, 0), nullptr, 10));
    type.base_name = PQgetvalue(rows, root, 1);
    for (int row = 0; row < root && type.base_modifier < 0; ++row) {
      type.base_modifier =
          static_cast<std::int32_t>(std::strtol(PQgetvalue(rows, row, 3), nullptr, 10));
    }
  }
  if (std::string_view(PQgetvalue(rows, root, 2)) == "e") {
    auto labels = enum_labels(conn, PQgetvalue(rows, root, 0));
    if (!labels) return tl::unexpected(labels.error());
    type.enum_labels = std::move(*labels);
  }
  return type;
}

}  // namespace cdcd::postgres
