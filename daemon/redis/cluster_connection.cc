#include "daemon/redis/cluster_connection.h"

#include <strings.h>

#include <algorithm>
#include <charconv>
#include <stdexcept>

#include <hiredis/hiredis.h>

namespace cdcd::redis {

namespace {

// More redirections than this for one command means the cluster is reconfiguring faster than we
// follow it: give up on this client (a retryable Error) and let the caller start over.
constexpr int kMaxRedirects = 16;

std::string name_of(const ClusterConnection::Address& address) {
  return address.host + ":" + std::to_string(address.port);
}

struct Redirection {
  int slot = 0;
  ClusterConnection::Address address;
};

// "MOVED 3999 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381"; an empty host means the host of the
// node that answered (Redis Cluster specification).
std::optional<Redirection> parse_redirection(std::string_view message,
                                             const std::string& answering_host) {
  auto first = message.find(' ');
  if (first == std::string_view::npos) return std::nullopt;
  auto second = message.find(' ', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  std::string_view slot = message.substr(first + 1, second - first - 1);
  std::string_view endpoint = message.substr(second + 1);
  auto colon = endpoint.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  Redirection redirection;
  std::string_view port = endpoint.substr(colon + 1);
  auto [slot_end, slot_ec] =
      std::from_chars(slot.data(), slot.data() + slot.size(), redirection.slot);
  auto [port_end, port_ec] =
      std::from_chars(port.data(), port.data() + port.size(), redirection.address.port);
  if (slot_ec != std::errc() || port_ec != std::errc() || redirection.slot < 0 ||
      redirection.slot >= kClusterSlots) {
    return std::nullopt;
  }
  redirection.address.host = std::string(endpoint.substr(0, colon));
  if (redirection.address.host.empty()) redirection.address.host = answering_host;
  return redirection;
}

}  // namespace

struct ClusterConnection::Node {
  Address address;
  std::unique_ptr<Connection> connection;
  std::optional<Error> failure;  // why `connection` is gone; sticky for this client
  std::deque<Awaited> awaited;   // in the order the node will answer
  bool script_load_queued = false;
};

struct ClusterConnection::Request {
  Command command;
  int slot = -1;  // -1: a command without a key, sent to any node
  Node* node = nullptr;
  Reply reply;  // the final reply, once read
  std::optional<Error> failure;
  int redirects = 0;
  bool asking = false;  // sent behind ASKING (after an ASK redirection)
};

ClusterConnection::ClusterConnection(ConnectionSettings settings, const std::atomic<bool>* abort)
    : settings_(std::move(settings)),
      abort_(abort),
      slot_owner_(kClusterSlots, nullptr),
      unanswered_(kClusterSlots, 0),
      sent_to_(kClusterSlots, nullptr) {}

ClusterConnection::~ClusterConnection() = default;

Result<std::unique_ptr<ClusterConnection>> ClusterConnection::open(
    const ConnectionSettings& settings, const std::vector<Address>& seeds,
    const std::atomic<bool>* abort) {
  std::unique_ptr<ClusterConnection> cluster(new ClusterConnection(settings, abort));
  if (auto discovered = cluster->discover(seeds); !discovered) {
    return tl::unexpected(discovered.error());
  }
  return cluster;
}

Status ClusterConnection::discover(const std::vector<Address>& seeds) {
  std::optional<Error> last_error;
  bool found = false;
  for (const auto& seed : seeds) {
    ConnectionSettings seed_settings = settings_;
    seed_settings.host = seed.host;
    seed_settings.port = seed.port;
    auto opened = Connection::open(seed_settings, abort_);
    if (opened) {
      if (auto read = read_slot_map(**opened, seed); read) {
        Node& node = node_at(seed);
        node.connection = std::move(*opened);
        found = true;
        break;
      } else {
        last_error = read.error();
      }
    } else {
      last_error = opened.error();
    }
    // A refused AUTH or a server without cluster mode will not change by trying another node.
    if (!last_error->retryable) return tl::unexpected(*last_error);
  }
  if (!found) {
    return tl::unexpected(
        last_error.value_or(Error{"Redis cluster: no node to start from", false}));
  }
  for (Node* owner : slot_owner_) {
    if (owner != nullptr && owner->connection == nullptr && !owner->failure) {
      (void)connect(*owner);  // a failure is kept in the node and reported with its commands
    }
  }
  return ok();
}

Status ClusterConnection::read_slot_map(Connection& connection, const Address& queried) {
  auto reply = connection.call({"CLUSTER", "SLOTS"});
  if (!reply) return tl::unexpected(reply.error());
  const redisReply& slots = **reply;
  const std::string where = "Redis " + connection.settings().describe();
  if (is_error(slots)) {
    const std::string message = reply_text(slots);
    return tl::unexpected(
        Error{where + ": CLUSTER SLOTS refused (is it a cluster node?): " + message,
              classify_error(message) == ReplyErrorKind::kRetryable});
  }
  if (slots.type != REDIS_REPLY_ARRAY) return fail_retryable(where + ": CLUSTER SLOTS: bad reply");
  std::vector<Node*> owners(kClusterSlots, nullptr);
  for (std::size_t i = 0; i < slots.elements; ++i) {
    const redisReply& range = *slots.element[i];
    if (range.type != REDIS_REPLY_ARRAY || range.elements < 3 ||
        range.element[0]->type != REDIS_REPLY_INTEGER ||
        range.element[1]->type != REDIS_REPLY_INTEGER ||
        range.element[2]->type != REDIS_REPLY_ARRAY || range.element[2]->elements < 2 ||
        range.element[2]->element[1]->type != REDIS_REPLY_INTEGER) {
      return fail_retryable(where + ": CLUSTER SLOTS: bad slot range");
    }
    const long long first = range.element[0]->integer;
    const long long last = range.element[1]->integer;
    const redisReply& master = *range.element[2];
    Address address{reply_text(*master.element[0]), static_cast<int>(master.element[1]->integer)};
    // "" stands for the node that answered; "?" for an endpoint it does not know.
    if (address.host == "?") continue;
    if (address.host.empty()) address.host = queried.host;
    if (first < 0 || last >= kClusterSlots || first > last) {
      return fail_retryable(where + ": CLUSTER SLOTS: slot range out of bounds");
    }
    Node* owner = &node_at(address);
    for (long long slot = first; slot <= last; ++slot)
      owners[static_cast<std::size_t>(slot)] = owner;
  }
  slot_owner_ = std::move(owners);
  return ok();
}

ClusterConnection::Node& ClusterConnection::node_at(const Address& address) {
  auto& node = nodes_[name_of(address)];
  if (node == nullptr) {
    node = std::make_unique<Node>();
    node->address = address;
  }
  return *node;
}

ClusterConnection::Node* ClusterConnection::any_node() {
  Node* fallback = nullptr;
  for (auto& [name, node] : nodes_) {
    if (node->connection != nullptr) return node.get();
    if (fallback == nullptr) fallback = node.get();
  }
  return fallback;
}

Status ClusterConnection::connect(Node& node) {
  ConnectionSettings node_settings = settings_;
  node_settings.host = node.address.host;
  node_settings.port = node.address.port;
  auto opened = Connection::open(node_settings, abort_);
  if (!opened) {
    node.failure = opened.error();
    return tl::unexpected(opened.error());
  }
  // A node met for the first time (after a MOVED, or restarted) may lack our scripts.
  for (const auto& [sha, script] : scripts_) {
    if (auto loaded = (*opened)->load_script(script); !loaded) {
      node.failure = loaded.error();
      return tl::unexpected(loaded.error());
    }
  }
  node.connection = std::move(*opened);
  node.failure.reset();
  return ok();
}

void ClusterConnection::append(const Command& command) {
  // The map is re-read only while no reply is owed: every node is idle then.
  if (requests_.empty() && refresh_due_) refresh_slot_map();
  Request& request = requests_.emplace_back();
  request.command = command;
  Node* node = nullptr;
  if (auto key = routing_key(command)) {
    request.slot = key_slot(*key);
    const auto slot = static_cast<std::size_t>(request.slot);
    // A slot no master serves goes to any node: it answers MOVED or CLUSTERDOWN.
    if (unanswered_[slot]++ == 0) {
      sent_to_[slot] = slot_owner_[slot] ? slot_owner_[slot] : any_node();
    }
    node = sent_to_[slot];
  } else {
    node = any_node();
  }
  if (node == nullptr) {
    request.failure = Error{"Redis cluster: no node known", true};
    return;
  }
  send(request, *node);
}

void ClusterConnection::append_formatted(std::string_view commands) {
  std::unique_ptr<redisReader, decltype(&redisReaderFree)> reader(redisReaderCreate(),
                                                                  redisReaderFree);
  if (reader == nullptr ||
      redisReaderFeed(reader.get(), commands.data(), commands.size()) != REDIS_OK) {
    throw std::bad_alloc();
  }
  while (true) {
    void* parsed = nullptr;
    // The caller formatted these commands itself: malformed RESP is a bug, not a server's fault.
    if (redisReaderGetReply(reader.get(), &parsed) != REDIS_OK) {
      throw std::logic_error("append_formatted: malformed RESP");
    }
    if (parsed == nullptr) return;
    Reply array(static_cast<redisReply*>(parsed));
    if (array->type != REDIS_REPLY_ARRAY) throw std::logic_error("append_formatted: not a command");
    Command command;
    command.reserve(array->elements);
    for (std::size_t i = 0; i < array->elements; ++i)
      command.push_back(reply_text(*array->element[i]));
    append(command);
  }
}

void ClusterConnection::send(Request& request, Node& node, bool reload_scripts) {
  request.node = &node;
  if (node.connection == nullptr && !node.failure) (void)connect(node);
  if (node.connection == nullptr) {
    request.failure = node.failure.value_or(Error{"Redis cluster: node lost", true});
    return;
  }
  if (reload_scripts && !node.script_load_queued && !scripts_.empty()) {
    for (const auto& [sha, script] : scripts_) {
      node.connection->append({"SCRIPT", "LOAD", script});
      node.awaited.push_back({nullptr, false});
    }
    node.awaited.back().script_load = true;
    node.script_load_queued = true;
  }
  if (request.asking) {
    node.connection->append({"ASKING"});
    node.awaited.push_back({nullptr, false});
  }
  node.connection->append(request.command);
  node.awaited.push_back({&request, false});
}

void ClusterConnection::flush_pipelines() {
  for (auto& [name, node] : nodes_) {
    if (node->connection == nullptr || node->connection->buffered_bytes() == 0) continue;
    if (auto sent = node->connection->send_buffered(); !sent) fail_node(*node, sent.error());
  }
}

Result<Reply> ClusterConnection::read_reply() {
  if (requests_.empty()) return fail("Redis cluster: a reply was read for no command");
  Request& front = requests_.front();
  while (front.reply == nullptr && !front.failure) {
    // Every node's pipeline is started before waiting on one of them.
    flush_pipelines();
    if (front.reply != nullptr || front.failure) break;
    receive(*front.node);
  }
  Request done = std::move(front);
  requests_.pop_front();
  if (done.slot >= 0) --unanswered_[static_cast<std::size_t>(done.slot)];
  if (done.failure) return tl::unexpected(*done.failure);
  return std::move(done.reply);
}

void ClusterConnection::receive(Node& node) {
  auto reply = node.connection->read_reply();
  if (!reply) {
    fail_node(node, reply.error());
    return;
  }
  Awaited awaited = node.awaited.front();
  node.awaited.pop_front();
  if (awaited.script_load) node.script_load_queued = false;
  // ASKING and SCRIPT LOAD: had they failed, the command behind them says so in its own reply.
  if (awaited.request == nullptr) return;
  deliver(*awaited.request, std::move(*reply));
}

void ClusterConnection::deliver(Request& request, Reply reply) {
  if (is_error(*reply) && redirect(request, reply_text(*reply))) return;
  request.reply = std::move(reply);
}

bool ClusterConnection::redirect(Request& request, const std::string& message) {
  const ReplyErrorKind kind = classify_error(message);
  if (kind == ReplyErrorKind::kNoScript) {
    // Only our own scripts can be loaded again; another's NOSCRIPT goes to the caller.
    if (::strcasecmp(request.command[0].c_str(), "EVALSHA") != 0 || request.command.size() < 2 ||
        !scripts_.contains(request.command[1])) {
      return false;
    }
  } else if (kind != ReplyErrorKind::kMoved && kind != ReplyErrorKind::kAsk) {
    return false;
  }
  if (++request.redirects > kMaxRedirects) {
    request.failure = Error{"Redis cluster: " + request.command[0] + " redirected more than " +
                                std::to_string(kMaxRedirects) + " times (last: " + message + ")",
                            true};
    return true;
  }
  if (kind == ReplyErrorKind::kNoScript) {
    send(request, *request.node, /*reload_scripts=*/true);
    return true;
  }
  auto target = parse_redirection(message, request.node->address.host);
  if (!target) return false;
  Node& node = node_at(target->address);
  if (kind == ReplyErrorKind::kMoved) {
    slot_owner_[static_cast<std::size_t>(target->slot)] = &node;
    refresh_due_ = true;  // one slot moved seldom moves alone
    request.asking = false;
  } else {
    request.asking = true;
  }
  send(request, node);
  return true;
}

void ClusterConnection::fail_node(Node& node, const Error& error) {
  node.connection.reset();
  node.failure = error;
  for (const auto& awaited : node.awaited) {
    if (awaited.request != nullptr) awaited.request->failure = error;
  }
  node.awaited.clear();
  node.script_load_queued = false;
}

void ClusterConnection::refresh_slot_map() {
  for (auto& [name, node] : nodes_) {
    if (node->connection == nullptr) continue;
    if (auto read = read_slot_map(*node->connection, node->address); read) {
      refresh_due_ = false;
      return;
    } else if (read.error().retryable) {
      fail_node(*node, read.error());
    }
  }
}

Result<std::string> ClusterConnection::load_script(const std::string& script) {
  if (!requests_.empty()) return fail("Redis cluster: load_script() while replies are owed");
  std::optional<std::string> sha;
  std::optional<Error> last_error;
  for (Node* node : masters_of_map()) {
    if (node->connection == nullptr) {
      if (auto connected = connect(*node); !connected) {
        last_error = connected.error();
        continue;  // loaded when a later client connects to it
      }
    }
    auto loaded = node->connection->load_script(script);
    if (!loaded) {
      if (!loaded.error().retryable) return loaded;
      fail_node(*node, loaded.error());
      last_error = loaded.error();
      continue;
    }
    sha = *loaded;
  }
  if (!sha) return tl::unexpected(last_error.value_or(Error{"Redis cluster: no master", true}));
  scripts_[*sha] = script;
  return *sha;
}

std::vector<ClusterConnection::Node*> ClusterConnection::masters_of_map() const {
  std::vector<Node*> masters;
  for (Node* owner : slot_owner_) {
    if (owner != nullptr && std::find(masters.begin(), masters.end(), owner) == masters.end()) {
      masters.push_back(owner);
    }
  }
  return masters;
}

std::vector<ClusterConnection::Address> ClusterConnection::masters() const {
  std::vector<Address> addresses;
  for (const Node* node : masters_of_map()) addresses.push_back(node->address);
  return addresses;
}

}  // namespace cdcd::redis
