#include "daemon/redis/redis_options.h"

namespace cdcd::redis {

std::optional<ConnectionSettings> parse_connection_options(config::Node& options) {
  auto url = options.string("url", /*required=*/true);
  if (!url) return std::nullopt;
  auto settings = parse_url(*url);
  if (!settings) {
    options.error_at("url", settings.error().message);
    return std::nullopt;
  }
  config::Node tls = options.child("tls");
  if (tls.defined() && tls.expect_map()) {
    settings->tls_settings.ca_file = tls.string("ca_file").value_or("");
    settings->tls_settings.cert_file = tls.string("cert_file").value_or("");
    settings->tls_settings.key_file = tls.string("key_file").value_or("");
    settings->tls_settings.verify = tls.boolean("verify").value_or(true);
    if (settings->tls_settings.cert_file.empty() != settings->tls_settings.key_file.empty()) {
      tls.error("cert_file and key_file go together (a client certificate needs its key)");
    }
    if (!settings->tls) options.error_at("tls", "tls settings need a rediss:// url");
    tls.check_unknown_keys();
  }
  if (auto timeout = options.duration("timeout")) {
    settings->connect_timeout = *timeout;
    settings->io_timeout = *timeout;
  }
  return std::move(*settings);
}

}  // namespace cdcd::redis
