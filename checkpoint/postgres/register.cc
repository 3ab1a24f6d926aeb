#include <algorithm>
#include <memory>

#include "checkpoint/postgres/postgres_checkpoint_store.h"
#include "daemon/plugin/registry.h"

namespace cdcd {

namespace {

std::unique_ptr<CheckpointStore> make_postgres_checkpoint_store(
    config::Node& options, const CheckpointStoreContext& context) {
  const std::size_t errors_before = options.diagnostics().items().size();
  // The runtime reads the checkpoint interval itself.
  options.mark_known({"interval"});
  postgres::PostgresCheckpointStoreOptions parsed;
  if (auto dsn = options.string("dsn", /*required=*/true)) {
    if (postgres::dsn_syntax_error(*dsn)) {
      options.error_at("dsn", "not a valid libpq connection string or URI");
    }
    parsed.dsn = *dsn;
  }
  if (auto table = options.string("table")) {
    auto dots = std::count(table->begin(), table->end(), '.');
    if (table->empty() || dots > 1 || table->front() == '.' || table->back() == '.') {
      options.error_at("table", "expected a table name, optionally schema-qualified (schema.name)");
    }
    parsed.table = *table;
  }
  options.check_unknown_keys();
  if (options.diagnostics().items().size() != errors_before) return nullptr;
  return std::make_unique<postgres::PostgresCheckpointStore>(std::move(parsed), context);
}

// postgres://USER@HOST/DB?sslmode=...: libpq takes the URI as the connection string.
Result<YAML::Node> options_from_postgres_url(const std::string& url) {
  YAML::Node options;
  options["dsn"] = url;
  return options;
}

}  // namespace

void register_checkpoint_postgres(PluginRegistry& registry) {
  registry.add_checkpoint_store("postgres", make_postgres_checkpoint_store);
  registry.add_checkpoint_store_scheme("postgres", "postgres", options_from_postgres_url);
  registry.add_checkpoint_store_scheme("postgresql", "postgres", options_from_postgres_url);
}

}  // namespace cdcd
