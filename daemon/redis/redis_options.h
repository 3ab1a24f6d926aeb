#pragma once

#include <optional>

#include "daemon/config/node.h"
#include "daemon/redis/redis_connection.h"

namespace cdcd::redis {

// Reads the connection options every Redis plugin shares: `url` (redis:// or rediss://), `tls:
// {ca_file, cert_file, key_file, verify}` and `timeout`. Reports problems to the node's
// diagnostics (never quoting the URL, which may hold a password); nullopt when it did.
std::optional<ConnectionSettings> parse_connection_options(config::Node& options);

}  // namespace cdcd::redis
