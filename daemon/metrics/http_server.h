#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <prometheus/registry.h>

#include "daemon/core/result.h"

namespace cdcd {

// What the HTTP endpoints ask the daemon. Each callback is called on a server thread.
struct HealthCallbacks {
  // /readyz: every source connected and no sink in a failed state. Returns the reason when not.
  std::function<std::optional<std::string>()> not_ready_reason;
  // /status: the JSON document `cdcd status --json` prints.
  std::function<std::string()> status_json;
};

// Serves /metrics (Prometheus text format, including process metrics), /healthz, /readyz and
// /status on `listen` ("host:port"; port 0 picks a free one).
class HttpServer {
 public:
  HttpServer(std::shared_ptr<prometheus::Registry> registry, HealthCallbacks callbacks);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  Status start(const std::string& listen);
  // The port actually bound (useful with port 0).
  int port() const;
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cdcd
