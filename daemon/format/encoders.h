#pragma once

#include <string>
#include <string_view>

#include "daemon/core/change.h"
#include "daemon/format/format.h"

// The encoder of each output format; encode_change (format.cc) dispatches to them.
namespace cdcd::format_internal {

void encode_native(const Change& change, std::string& out);
void encode_debezium(const Change& change, const EncodeContext& context, std::string& out);
void encode_debezium_key(const Change& change, std::string_view key_json,
                         const EncodeContext& context, std::string& out);
void encode_mongodb(const Change& change, const EncodeContext& context, std::string& out);

// An entity name split at its last '.': "public.orders" -> {"public", "orders"}; without a dot the
// whole name is the table and the schema is empty.
struct EntityName {
  std::string_view schema;
  std::string_view table;
};

inline EntityName split_entity(std::string_view entity) {
  const auto dot = entity.rfind('.');
  if (dot == std::string_view::npos) return {{}, entity};
  return {entity.substr(0, dot), entity.substr(dot + 1)};
}

// Floor division, so that times before the epoch still round towards the past.
inline std::int64_t floor_div(std::int64_t value, std::int64_t divisor) {
  const std::int64_t quotient = value / divisor;
  return (value % divisor != 0 && value < 0) ? quotient - 1 : quotient;
}

}  // namespace cdcd::format_internal
