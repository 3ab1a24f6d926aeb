#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "daemon/redis/cluster_connection.h"
#include "daemon/redis/redis_connection.h"

namespace cdcd::redis {

// Opens the clients of one Redis deployment: a Connection to a server, or with `cluster` a
// ClusterConnection. For a cluster it remembers the masters the last client saw, so that a new
// client can start from any of them when the URL's node is down. Used by one thread at a time.
class Connector {
 public:
  Connector(ConnectionSettings settings, bool cluster);

  // Connection failures are retryable; a refused AUTH, or `cluster` against a server without
  // cluster mode, is not. Every wait ends early once `*abort` becomes true.
  Result<std::unique_ptr<Client>> open(const std::atomic<bool>* abort);

 private:
  ConnectionSettings settings_;
  bool cluster_;
  std::vector<ClusterConnection::Address> seeds_;  // the URL's node first
};

}  // namespace cdcd::redis
