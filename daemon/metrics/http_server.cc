#include "daemon/metrics/http_server.h"

#include <CivetServer.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include "daemon/metrics/process_collector.h"

namespace cdcd {

namespace {

constexpr char kPrometheusContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr char kTextContentType[] = "text/plain; charset=utf-8";

struct Response {
  int status = 200;
  std::string content_type = kTextContentType;
  std::string body;
};

void send(mg_connection* conn, const Response& response) {
  const std::string length = std::to_string(response.body.size());
  mg_response_header_start(conn, response.status);
  mg_response_header_add(conn, "Content-Type", response.content_type.c_str(), -1);
  mg_response_header_add(conn, "Content-Length", length.c_str(), -1);
  mg_response_header_add(conn, "Cache-Control", "no-store", -1);
  mg_response_header_send(conn);
  mg_write(conn, response.body.data(), response.body.size());
}

// Set while start() runs mg_start on this thread: civetweb reports why it could not listen ("cannot
// bind to 127.0.0.1:9187: 98 (Address already in use)") only through the log callback.
thread_local std::string* startup_errors = nullptr;

int log_civetweb_message(const mg_connection*, const char* message) {
  if (startup_errors) {
    if (!startup_errors->empty()) *startup_errors += "; ";
    *startup_errors += message;
  } else {
    spdlog::warn("metrics http server: {}", message);
  }
  return 1;
}

// The host a local client reaches a server listening on `listen` ("host:port" or ":port") at.
std::string local_host(const std::string& listen) {
  const std::string host = listen.substr(0, listen.rfind(':'));
  return host.empty() || host == "0.0.0.0" ? "127.0.0.1" : host;
}

// civetweb's accept loop polls with a fixed 2 s timeout and looks at its stop flag only between
// polls; a connection attempt wakes it so that stop() takes milliseconds instead of up to 2 s.
void poke(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &addresses) != 0) return;
  for (addrinfo* a = addresses; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const bool connected = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    ::close(fd);
    if (connected) break;
  }
  freeaddrinfo(addresses);
}

}  // namespace

// Answers every path itself (civetweb routes all of them here) so that the set of endpoints is
// exact: "/metrics/x" is a 404, not /metrics.
class Endpoints : public CivetHandler {
 public:
  Endpoints(std::shared_ptr<prometheus::Registry> registry, HealthCallbacks callbacks)
      : registry_(std::move(registry)), callbacks_(std::move(callbacks)) {}

  bool handleGet(CivetServer*, mg_connection* conn) override {
    const mg_request_info* request = mg_get_request_info(conn);
    send(conn, respond_safely(request->local_uri ? request->local_uri : ""));
    return true;
  }

 private:
  // Nothing may unwind into civetweb's C frames: a throwing callback becomes a 500.
  Response respond_safely(const std::string& path) const {
    try {
      return respond(path);
    } catch (const std::exception& e) {
      return {500, kTextContentType, std::string("internal error: ") + e.what() + "\n"};
    } catch (...) {
      return {500, kTextContentType, "internal error\n"};
    }
  }

  Response respond(const std::string& path) const {
    if (path == "/metrics") return metrics();
    if (path == "/healthz") return {200, kTextContentType, "ok\n"};
    if (path == "/readyz") return readiness();
    if (path == "/status") return status();
    return {404, kTextContentType, "not found: " + path + "\n"};
  }

  Response metrics() const {
    std::vector<prometheus::MetricFamily> families = registry_->Collect();
    for (auto& family : process_.Collect()) families.push_back(std::move(family));
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, families);
    return {200, kPrometheusContentType, out.str()};
  }

  Response readiness() const {
    if (callbacks_.not_ready_reason) {
      if (auto reason = callbacks_.not_ready_reason()) {
        return {503, kTextContentType, *reason + "\n"};
      }
    }
    return {200, kTextContentType, "ready\n"};
  }

  Response status() const {
    if (!callbacks_.status_json) return {503, kTextContentType, "status not available\n"};
    return {200, "application/json", callbacks_.status_json()};
  }

  std::shared_ptr<prometheus::Registry> registry_;
  HealthCallbacks callbacks_;
  ProcessCollector process_;
};

struct HttpServer::Impl {
  Impl(std::shared_ptr<prometheus::Registry> registry, HealthCallbacks callbacks)
      : endpoints(std::move(registry), std::move(callbacks)) {}

  Endpoints endpoints;
  // Declared after `endpoints`: destroyed (threads joined) before the handler it calls.
  std::unique_ptr<CivetServer> server;
  std::string host;  // where stop() pokes the accept loop
  int port = 0;
};

HttpServer::HttpServer(std::shared_ptr<prometheus::Registry> registry, HealthCallbacks callbacks)
    : impl_(std::make_unique<Impl>(std::move(registry), std::move(callbacks))) {}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start(const std::string& listen) {
  if (impl_->server) return fail("metrics http server already started");
  // civetweb spells "all interfaces" as a bare port.
  const std::string ports = !listen.empty() && listen.front() == ':' ? listen.substr(1) : listen;
  const std::vector<std::string> options = {"listening_ports",    ports,  "num_threads", "2",
                                            "request_timeout_ms", "10000"};
  CivetCallbacks callbacks;
  callbacks.log_message = log_civetweb_message;
  std::string errors;
  startup_errors = &errors;
  std::unique_ptr<CivetServer> server;
  try {
    server = std::make_unique<CivetServer>(options, &callbacks);
  } catch (const CivetException& e) {
    if (errors.empty()) errors = e.what();
  }
  startup_errors = nullptr;
  if (!server) {
    return fail("metrics.listen " + listen + ": cannot start the HTTP server: " + errors);
  }
  const std::vector<int> bound = server->getListeningPorts();
  if (bound.empty()) return fail("metrics.listen " + listen + ": no port bound");
  server->addHandler("/", impl_->endpoints);
  impl_->host = local_host(listen);
  impl_->port = bound.front();
  impl_->server = std::move(server);
  return ok();
}

int HttpServer::port() const { return impl_->port; }

void HttpServer::stop() {
  if (!impl_->server) return;
  std::atomic<bool> closed{false};
  std::thread closer([&] {
    impl_->server->close();
    closed = true;
  });
  while (!closed) {
    poke(impl_->host, impl_->port);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  closer.join();
  impl_->server.reset();
}

}  // namespace cdcd
