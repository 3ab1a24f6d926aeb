#include "daemon/redis/redis_connector.h"

#include <algorithm>

namespace cdcd::redis {

Connector::Connector(ConnectionSettings settings, bool cluster)
    : settings_(std::move(settings)), cluster_(cluster) {
  seeds_.push_back({settings_.host, settings_.port});
}

Result<std::unique_ptr<Client>> Connector::open(const std::atomic<bool>* abort) {
  if (!cluster_) {
    auto opened = Connection::open(settings_, abort);
    if (!opened) return tl::unexpected(opened.error());
    return std::unique_ptr<Client>(std::move(*opened));
  }
  auto opened = ClusterConnection::open(settings_, seeds_, abort);
  if (!opened) return tl::unexpected(opened.error());
  seeds_.resize(1);
  for (auto& master : (*opened)->masters()) {
    if (std::find(seeds_.begin(), seeds_.end(), master) == seeds_.end()) seeds_.push_back(master);
  }
  return std::unique_ptr<Client>(std::move(*opened));
}

}  // namespace cdcd::redis
