#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/redis/cluster_slots.h"
#include "daemon/redis/redis_connection.h"

namespace cdcd::redis {

// A Redis Cluster as one Client: one Connection (TLS and AUTH as configured) per master, commands
// routed by the hash slot of their key (cluster_slots.h) and pipelined per node; replies come back
// in append order.
//
// Redirections are followed here, invisible to the caller: MOVED updates the slot map (and a full
// CLUSTER SLOTS refresh follows once no reply is owed) and resends the command to the new owner;
// ASK resends it once to the named node behind ASKING; NOSCRIPT for a script loaded through
// load_script() loads it again on that node and resends. CLUSTERDOWN, TRYAGAIN and the other
// retryable error replies are returned as replies (the caller resends with backoff); a node lost
// or unreachable is an Error for the commands it owed (the caller opens a new client).
//
// Per-key order: a node executes what one connection sends in order, and a redirected command is
// resent when its reply is read, in the order the node answered. Every command of a slot goes
// where that slot's earlier unanswered commands went, even after a MOVED updated the map, so a
// later command never overtakes an earlier one being redirected: it is redirected after it.
class ClusterConnection final : public Client {
 public:
  struct Address {
    std::string host;
    int port = 0;
    bool operator==(const Address&) const = default;
  };

  ~ClusterConnection() override;

  // Reads the slot map (CLUSTER SLOTS) from the first of `seeds` that answers, then connects to
  // every master. A master that cannot be reached is not fatal here: commands for its slots fail
  // (retryably) until a new client reaches it. Fails when no seed answers.
  static Result<std::unique_ptr<ClusterConnection>> open(const ConnectionSettings& settings,
                                                         const std::vector<Address>& seeds,
                                                         const std::atomic<bool>* abort);

  void append(const Command& command) override;
  // Splits `commands` back into commands (hiredis' reply parser reads a RESP array of bulk strings
  // like any reply) to route each by its key.
  void append_formatted(std::string_view commands) override;
  Result<Reply> read_reply() override;
  Result<std::string> load_script(const std::string& script) override;

  // The masters of the current slot map: seeds for the next client if this one is lost.
  std::vector<Address> masters() const;

 private:
  struct Node;
  struct Request;
  // What a node will answer next: a request's reply, or that of a command sent ahead of it.
  struct Awaited {
    Request* request = nullptr;  // nullptr: ASKING or SCRIPT LOAD
    bool script_load = false;
  };

  ClusterConnection(ConnectionSettings settings, const std::atomic<bool>* abort);
  Status discover(const std::vector<Address>& seeds);
  Status read_slot_map(Connection& connection, const Address& queried);
  Node& node_at(const Address& address);
  Node* any_node();
  Status connect(Node& node);
  void send(Request& request, Node& node, bool reload_scripts = false);
  void flush_pipelines();
  void receive(Node& node);
  void deliver(Request& request, Reply reply);
  bool redirect(Request& request, const std::string& message);
  void fail_node(Node& node, const Error& error);
  void refresh_slot_map();
  std::vector<Node*> masters_of_map() const;

  ConnectionSettings settings_;
  const std::atomic<bool>* abort_;
  std::map<std::string, std::unique_ptr<Node>> nodes_;  // by "host:port"
  std::vector<Node*> slot_owner_;                       // nullptr: no master serves the slot
  // Per slot: commands without a final reply, and the node the first of them was sent to.
  std::vector<std::uint32_t> unanswered_;
  std::vector<Node*> sent_to_;
  std::deque<Request> requests_;  // in append order; the front is the next read_reply()
  std::map<std::string, std::string> scripts_;  // SHA-1 -> text
  bool refresh_due_ = false;
};

}  // namespace cdcd::redis
