#pragma once

#include <cstdint>

#include "daemon/core/result.h"
#include "sources/postgres/column_types.h"
#include "sources/postgres/pg_connection.h"

namespace cdcd::postgres {

// What the catalog (pg_type, pg_enum) says now about a type that is not built in: its name, the
// base type of a domain (through domains over domains) with the modifier the nearest domain
// declares, and the labels of an enum or of a domain over one. A type the catalog no longer
// holds comes back with `looked_up` set and nothing else known. Debezium's PostgreSQL connector
// reads the same catalog for the same facts (its TypeRegistry), so it sees what this sees.
Result<CustomType> look_up_type(PgConnection& conn, std::uint32_t oid);

}  // namespace cdcd::postgres
