#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/core/result.h"

namespace cdcd::http {

// How requests authenticate. Secrets are kept only here and in libcurl's handles; every text the
// client hands out (errors, URLs) goes through HttpClient::redact().
struct Auth {
  enum class Kind { kNone, kBasic, kApiKey, kBearer };
  Kind kind = Kind::kNone;
  std::string username;  // kBasic
  std::string secret;    // the password, API key or bearer token
};

struct Tls {
  std::string ca_file;  // empty: the system's trust store
  bool verify = true;   // peer certificate and host name
};

struct ClientOptions {
  // Base URLs such as "https://es1:9200" (a trailing '/' is dropped). Requests go round-robin over
  // them; a request whose connection fails moves on to the next one.
  std::vector<std::string> urls;
  Auth auth;
  Tls tls;
  bool gzip = false;  // compress request bodies (Content-Encoding: gzip)
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(5)};
  std::chrono::milliseconds request_timeout{std::chrono::seconds(60)};
};

struct Request {
  std::string method = "GET";  // GET, POST, PUT, DELETE, HEAD
  std::string path;            // "/_bulk?pipeline=x", appended to the base URL
  std::string body;
  std::string content_type = "application/json";
};

struct Response {
  int status = 0;  // 0 when no HTTP response arrived (see transport_error)
  std::string body;
  std::string url;                             // the base URL that answered (or failed last)
  std::optional<std::string> transport_error;  // connection refused, timeout, TLS, aborted
  std::chrono::duration<double> elapsed{};     // of the last attempt
  std::size_t body_bytes = 0;                  // request body before compression
  std::size_t wire_bytes = 0;                  // request body as sent
};

// A small HTTP/1.1 client over libcurl for the sinks that talk to HTTP services. Connections are
// kept alive: each concurrent perform() borrows a session (a curl multi handle with its own easy
// handles and connection cache) from a pool and returns it afterwards.
//
// Thread-safe: several threads may call perform() at once; abort() may be called from any thread.
class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends every request, all of them at once (HTTP/1.1 keep-alive connections, one per request in
  // flight), and returns their responses in the same order. A request that fails to connect (or
  // times out) is tried on each other URL once before it reports a transport error. Returns
  // promptly, with transport errors "aborted", once abort() was called.
  std::vector<Response> perform(const std::vector<Request>& requests);

  // Makes every perform() in progress and every later one return at once (for a sink's stop()).
  void abort();
  bool aborted() const { return aborted_; }

  // `text` with every secret of the options (password, key, token) replaced by "***".
  std::string redact(std::string text) const;

  const ClientOptions& options() const { return options_; }

 private:
  struct Session;
  std::unique_ptr<Session> take_session();
  void give_back(std::unique_ptr<Session> session);

  const ClientOptions options_;
  std::vector<std::string> secrets_;
  std::atomic<bool> aborted_{false};
  std::atomic<std::size_t> next_url_{0};
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<Session>> pool_;
};

// Appends `data` gzip-compressed (RFC 1952) to `out` with zlib.
Status gzip_compress(std::string_view data, std::string& out, int level = 1);

}  // namespace cdcd::http
