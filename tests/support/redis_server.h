#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/test_util.h"

namespace cdcd::test {

struct RedisServerOptions {
  // Serve TLS only (tls-port), with a throwaway self-signed certificate for 127.0.0.1.
  bool tls = false;
  // appendonly with appendfsync always: what a restart (even after SIGKILL) must keep.
  bool persistent = false;
  std::optional<std::string> password;  // requirepass
  bool cluster_node = false;            // cluster-enabled (see RedisCluster)
  std::vector<std::string> extra_args;
};

// A throwaway redis-server on a free loopback port, in its own TempDir: started by the
// constructor, ended (SIGKILL) by the destructor. Errors throw std::runtime_error.
class RedisServer {
 public:
  explicit RedisServer(RedisServerOptions options = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  // redis:// (or rediss://) URL, with the password when one is set.
  std::string url() const;
  // For TLS servers: the certificate to trust (ca_file).
  std::string ca_file() const { return dir_.file("cert.pem"); }
  const std::string& dir() const { return dir_.path(); }

  void start();  // waits until it answers PING
  void kill();   // SIGKILL: no shutdown save
  void stop();   // SIGTERM, waits for exit
  void restart() {
    stop();
    start();
  }
  // SIGSTOP / SIGCONT: a server that accepts nothing and answers nothing.
  void pause();
  void resume();
  bool running() const { return process_ != nullptr; }

  // Runs redis-cli against this server with `args`; returns its stdout (trailing newline cut).
  // Throws when redis-cli fails.
  std::string cli(const std::vector<std::string>& args) const;
  std::string log() const;

 private:
  std::vector<std::string> cli_prefix() const;
  void make_certificate();

  RedisServerOptions options_;
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> process_;
};

// Three cluster-enabled masters joined with `redis-cli --cluster create` (slots spread over all
// three), on ports <= 55535 (the cluster bus listens on port + 10000).
class RedisCluster {
 public:
  RedisCluster();
  ~RedisCluster();
  RedisServer& node(int index) { return *nodes_.at(static_cast<std::size_t>(index)); }
  std::size_t size() const { return nodes_.size(); }
  // A cluster-mode redis-cli (-c follows MOVED) against the first node.
  std::string cli(const std::vector<std::string>& args) const;

 private:
  std::vector<std::unique_ptr<RedisServer>> nodes_;
};

}  // namespace cdcd::test
