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
  // With tls: take cert.pem and key.pem from this directory (shared by a cluster's nodes, whose
  // cluster bus then runs over TLS too) instead of making a pair of its own.
  std::string certificate_dir;
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
  std::string ca_file() const { return certificate_dir() + "/cert.pem"; }
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
  std::string certificate_dir() const {
    return options_.certificate_dir.empty() ? dir_.path() : options_.certificate_dir;
  }

  RedisServerOptions options_;
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> process_;
};

struct RedisClusterOptions {
  RedisServerOptions node;  // of every node (cluster_node is set by RedisCluster)
  // All 16384 slots on the first node, the other two joined as masters without slots: one node
  // executes everything, in one order (and the cluster forms in about a second).
  bool all_slots_on_first_node = false;
};

// Three cluster-enabled masters: by default joined with `redis-cli --cluster create` (slots spread
// over all three), on ports <= 55535 (the cluster bus listens on port + 10000). The destructor
// ends every node.
class RedisCluster {
 public:
  explicit RedisCluster(RedisClusterOptions options = {});
  ~RedisCluster();
  RedisServer& node(int index) { return *nodes_.at(static_cast<std::size_t>(index)); }
  int size() const { return static_cast<int>(nodes_.size()); }
  // The first node's URL: where a cluster client starts.
  std::string url() const { return nodes_.front()->url(); }
  // A cluster-mode redis-cli (-c follows MOVED) against the first node.
  std::string cli(const std::vector<std::string>& args) const;

  std::string node_id(int index);
  // The index of the node serving `slot` (CLUSTER SLOTS of the first running node).
  int owner_of(int slot);
  // Moving a slot by hand, as redis-cli --cluster reshard does: begin (IMPORTING on the target,
  // MIGRATING on the source), move some of its keys (MIGRATE), finish (the rest of its keys, then
  // SETSLOT NODE on every node).
  void begin_slot_migration(int slot, int from, int to);
  void migrate_keys(int from, int to, const std::vector<std::string>& keys);
  void finish_slot_migration(int slot, int from, int to);
  // Waits until every running node says cluster_state:ok and all agree on the slot map.
  void wait_until_healthy(std::chrono::seconds timeout = std::chrono::seconds(60));

 private:
  void create_with_redis_cli();
  void create_on_first_node();

  RedisClusterOptions options_;
  TempDir certificates_;  // with node.tls: one certificate for every node
  std::vector<std::unique_ptr<RedisServer>> nodes_;
};

}  // namespace cdcd::test
