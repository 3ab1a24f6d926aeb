#include "sinks/elasticsearch/elasticsearch_config.h"

namespace cdcd::elasticsearch {

namespace {

std::vector<std::string> read_urls(config::Node& options) {
  config::Node node = options.child("urls");
  if (node.defined() && node.is_scalar()) {
    auto url = options.string("urls");
    return url ? std::vector<std::string>{*url} : std::vector<std::string>{};
  }
  auto urls = options.string_list("urls", /*required=*/true).value_or(std::vector<std::string>{});
  if (node.defined() && urls.empty()) node.error("expected at least one URL");
  for (const auto& url : urls) {
    if (!url.starts_with("http://") && !url.starts_with("https://")) {
      // The URL itself is not quoted: it may hold a password.
      node.error("expected URLs starting with http:// or https://");
      break;
    }
  }
  return urls;
}

http::Auth read_auth(config::Node& options) {
  http::Auth auth;
  config::Node node = options.child("auth");
  if (!node.defined() || !node.expect_map()) return auth;
  auto username = node.string("username");
  auto password = node.string("password");
  auto api_key = node.string("api_key");
  auto bearer = node.string("bearer");
  node.check_unknown_keys();
  int kinds = (username || password ? 1 : 0) + (api_key ? 1 : 0) + (bearer ? 1 : 0);
  if (kinds > 1) {
    node.error("expected one of username/password, api_key or bearer");
  } else if (username || password) {
    if (!username || !password) {
      node.error("username and password go together");
    } else {
      auth = {http::Auth::Kind::kBasic, *username, *password};
    }
  } else if (api_key) {
    auth = {http::Auth::Kind::kApiKey, "", *api_key};
  } else if (bearer) {
    auth = {http::Auth::Kind::kBearer, "", *bearer};
  }
  return auth;
}

http::Tls read_tls(config::Node& options) {
  http::Tls tls;
  config::Node node = options.child("tls");
  if (!node.defined() || !node.expect_map()) return tls;
  tls.ca_file = node.string("ca_file").value_or("");
  tls.verify = node.boolean("verify").value_or(true);
  node.check_unknown_keys();
  return tls;
}

void read_bulk(config::Node& options, ElasticsearchConfig& config) {
  config::Node node = options.child("bulk");
  if (!node.defined() || !node.expect_map()) return;
  config.bulk.max_actions =
      static_cast<std::size_t>(node.integer("max_actions", 1, 1'000'000).value_or(1000));
  // Elasticsearch refuses requests above http.max_content_length (100MB by default).
  auto max_bytes = node.size("max_bytes");
  if (max_bytes && (*max_bytes < 1024 || *max_bytes > 100'000'000)) {
    node.error_at("max_bytes", "expected between 1KiB and 100MB (http.max_content_length)");
  } else if (max_bytes) {
    config.bulk.max_bytes = static_cast<std::size_t>(*max_bytes);
  }
  config.http.gzip = node.one_of("compression", {"gzip", "none"}).value_or("gzip") == "gzip";
  config.bulk.concurrency =
      static_cast<std::size_t>(node.integer("concurrency", 1, 64).value_or(4));
  node.check_unknown_keys();
}

void read_retry(config::Node& options, ElasticsearchConfig& config) {
  config::Node node = options.child("retry");
  if (!node.defined() || !node.expect_map()) return;
  config.retry.initial_backoff =
      node.duration("initial_backoff").value_or(config.retry.initial_backoff);
  config.retry.max_backoff = node.duration("max_backoff").value_or(config.retry.max_backoff);
  node.check_unknown_keys();
}

void read_template(config::Node& options, const std::string& key, TemplateImages images,
                   std::optional<ChangeTemplate>& out) {
  auto text = options.string(key);
  if (!text || *text == "null" || text->empty()) return;
  if (auto parsed = ChangeTemplate::parse(*text, images)) {
    out = std::move(*parsed);
  } else {
    options.error_at(key, parsed.error().message);
  }
}

}  // namespace

std::optional<ElasticsearchConfig> parse_elasticsearch_config(config::Node& options) {
  auto errors_before = options.diagnostics().errors();
  ElasticsearchConfig config;
  config.http.urls = read_urls(options);
  config.http.auth = read_auth(options);
  config.http.tls = read_tls(options);
  config.http.connect_timeout =
      options.duration("connect_timeout").value_or(std::chrono::seconds(5));
  config.http.request_timeout =
      options.duration("request_timeout").value_or(std::chrono::seconds(60));

  std::optional<ChangeTemplate> index;
  read_template(options, "index", TemplateImages{}, index);
  if (!options.has("index")) {
    index = ChangeTemplate::parse("{schema}_{table}", TemplateImages{}).value();
  }
  if (index) config.index = std::move(*index);

  const TemplateImages row_images{.key = true, .new_row = true, .old_row = true};
  auto id_text = options.string("id").value_or("default");
  if (id_text != "default") read_template(options, "id", row_images, config.id);
  read_template(options, "routing", row_images, config.routing);
  config.pipeline = options.string("pipeline").value_or("");
  if (config.pipeline == "null") config.pipeline.clear();

  config.document = options.one_of("document", {"row", "changelog"}).value_or("row") == "row"
                        ? DocumentMode::kRow
                        : DocumentMode::kChangelog;
  config.format =
      parse_format(options.one_of("format", {"native", "debezium", "mongodb"}).value_or("native"))
          .value_or(Format::kNative);
  if (options.has("format") && config.document == DocumentMode::kRow) {
    options.error_at("format", "applies to document: changelog only (row documents are the row)");
  }
  config.deletes = options.one_of("deletes", {"delete", "soft"}).value_or("delete") == "delete"
                       ? DeleteMode::kDelete
                       : DeleteMode::kSoft;
  auto truncate =
      options.one_of("truncate", {"ignore", "delete_by_query", "stop"}).value_or("ignore");
  config.truncate = truncate == "ignore"            ? TruncateMode::kIgnore
                    : truncate == "delete_by_query" ? TruncateMode::kDeleteByQuery
                                                    : TruncateMode::kStop;
  config.replay_window = options.duration("replay_window").value_or(config.replay_window);
  read_bulk(options, config);
  read_retry(options, config);
  options.check_unknown_keys();
  if (options.diagnostics().errors() != errors_before) return std::nullopt;
  return config;
}

}  // namespace cdcd::elasticsearch
