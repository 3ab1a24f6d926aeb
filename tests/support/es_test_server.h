#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/test_util.h"

namespace cdcd::test {

// tests/support/es_test_server.py, the strict stand-in for Elasticsearch's `_bulk` API, in its own
// process on a free loopback port. Reading back and fault injection go through its control
// endpoints with libcurl directly, never through cdcd's code.
class EsTestServer {
 public:
  struct Options {
    std::vector<std::string> auth_args;  // e.g. {"--user", "elastic", "--password", "pw"}
    bool keep_log = true;
    std::string distribution = "elasticsearch";
  };

  // Starts the server; throws std::runtime_error if it does not come up within 15 s.
  explicit EsTestServer(const std::string& work_dir) : EsTestServer(work_dir, Options{}) {}
  EsTestServer(const std::string& work_dir, Options options);
  ~EsTestServer();
  EsTestServer(const EsTestServer&) = delete;
  EsTestServer& operator=(const EsTestServer&) = delete;

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // POST /_control/faults with `faults` (see the server's docstring).
  void faults(const nlohmann::json& faults);
  // GET /_control/state: {"indices": {...}, "log": [...], "counters": {...}}.
  nlohmann::json state();
  // The documents of an index: id -> _source (empty when the index does not exist).
  nlohmann::json documents(const std::string& index);
  // A request to the server as a client would send it (no auth); returns the status and the body.
  std::pair<long, std::string> request(const std::string& method, const std::string& path,
                                       const std::string& body = "");

 private:
  ChildProcess* process_ = nullptr;
  std::unique_ptr<ChildProcess> owned_;
  int port_ = 0;
};

}  // namespace cdcd::test
