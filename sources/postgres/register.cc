#include <memory>

#include "daemon/plugin/registry.h"
#include "sources/postgres/pg_connection.h"
#include "sources/postgres/postgres_source.h"

namespace cdcd {

namespace {

bool valid_slot_name(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

std::unique_ptr<Source> make_postgres_source(config::Node& options, const SourceContext& context) {
  const std::size_t errors_before = options.diagnostics().items().size();
  postgres::PostgresSourceOptions parsed;
  if (auto dsn = options.string("dsn", /*required=*/true)) {
    // libpq's own message may quote part of the string (a password, perhaps): keep it out.
    if (postgres::dsn_syntax_error(*dsn)) {
      options.error_at("dsn", "not a valid libpq connection string or URI");
    }
    parsed.dsn = *dsn;
  }
  if (auto slot = options.string("slot", /*required=*/true)) {
    if (!valid_slot_name(*slot)) {
      options.error_at("slot",
                       "a replication slot name has 1 to 63 lower case letters, digits or '_'");
    }
    parsed.slot = *slot;
  }
  if (auto publication = options.string("publication", /*required=*/true)) {
    if (publication->empty()) options.error_at("publication", "must not be empty");
    parsed.publication = *publication;
  }
  parsed.create_slot = options.boolean("create_slot").value_or(true);
  parsed.create_publication = options.boolean("create_publication").value_or(true);
  if (auto tables = options.string_list("tables")) {
    for (const auto& table : *tables) {
      if (table.empty()) options.error_at("tables", "table names must not be empty");
    }
    parsed.tables = *tables;
  }
  parsed.initial_snapshot =
      options.one_of("snapshot", {"never", "initial"}).value_or("never") == "initial";
  parsed.heartbeat = options.duration("heartbeat").value_or(std::chrono::seconds(10));
  if (auto interval = options.duration("status_interval")) {
    if (interval->count() <= 0) options.error_at("status_interval", "must be greater than 0");
    parsed.status_interval = *interval;
  }
  if (auto bytes = options.size("max_transaction_bytes")) {
    if (*bytes < 1024) options.error_at("max_transaction_bytes", "must be at least 1KiB");
    parsed.max_transaction_bytes = *bytes;
  }
  parsed.spill_dir = options.string("spill_dir").value_or("");
  options.check_unknown_keys();
  if (options.diagnostics().items().size() != errors_before) return nullptr;
  return std::make_unique<postgres::PostgresSource>(std::move(parsed), context);
}

}  // namespace

void register_source_postgres(PluginRegistry& registry) {
  registry.add_source("postgres", make_postgres_source);
}

}  // namespace cdcd
