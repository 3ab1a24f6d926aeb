#include "tests/support/redis_server.h"

#include <signal.h>

#include <optional>
#include <sstream>
#include <stdexcept>

namespace cdcd::test {

namespace {

// A free port whose cluster bus port (+10000) is valid too.
int free_cluster_port() {
  for (int attempt = 0; attempt < 100; ++attempt) {
    int port = free_port();
    if (port <= 55535) return port;
  }
  throw std::runtime_error("no free port <= 55535 for a cluster node");
}

// A throwaway self-signed certificate for 127.0.0.1: DIR/cert.pem and DIR/key.pem.
void make_certificate(const TempDir& dir) {
  std::string output;
  int code = run_command({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                          "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                          "-keyout", dir.file("key.pem"), "-out", dir.file("cert.pem")},
                         &output);
  if (code != 0) throw std::runtime_error("openssl req failed: " + output);
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

}  // namespace

RedisServer::RedisServer(RedisServerOptions options) : options_(std::move(options)) {
  port_ = options_.cluster_node ? free_cluster_port() : free_port();
  if (options_.tls && options_.certificate_dir.empty()) make_certificate(dir_);
  start();
}

RedisServer::~RedisServer() {
  if (process_ != nullptr) {
    process_->signal(SIGCONT);
    process_->signal(SIGKILL);
    process_->wait(std::chrono::seconds(10));
  }
}

std::string RedisServer::url() const {
  std::string auth = options_.password ? ":" + *options_.password + "@" : "";
  return std::string(options_.tls ? "rediss://" : "redis://") + auth +
         "127.0.0.1:" + std::to_string(port_);
}

std::vector<std::string> RedisServer::cli_prefix() const {
  std::vector<std::string> argv{"redis-cli", "-h", "127.0.0.1", "-p", std::to_string(port_)};
  if (options_.tls) {
    argv.insert(argv.end(), {"--tls", "--cacert", ca_file()});
  }
  if (options_.password) argv.insert(argv.end(), {"--no-auth-warning", "-a", *options_.password});
  return argv;
}

std::string RedisServer::cli(const std::vector<std::string>& args) const {
  auto argv = cli_prefix();
  argv.insert(argv.end(), args.begin(), args.end());
  TempDir scratch;
  ChildProcess child(argv, scratch.path());
  auto code = child.wait(std::chrono::seconds(60));
  if (!code || *code != 0) {
    throw std::runtime_error("redis-cli failed: " + child.stdout_text() + child.stderr_text());
  }
  return trimmed(child.stdout_text());
}

void RedisServer::start() {
  std::vector<std::string> argv{"redis-server",        "--bind", "127.0.0.1", "--dir",
                                dir_.path(),           "--save", "",          "--logfile",
                                dir_.file("redis.log")};
  if (options_.tls) {
    argv.insert(argv.end(), {"--port", "0", "--tls-port", std::to_string(port_), "--tls-cert-file",
                             ca_file(), "--tls-key-file", certificate_dir() + "/key.pem",
                             "--tls-ca-cert-file", ca_file(), "--tls-auth-clients", "no"});
    if (options_.cluster_node) argv.insert(argv.end(), {"--tls-cluster", "yes"});
  } else {
    argv.insert(argv.end(), {"--port", std::to_string(port_)});
  }
  if (options_.persistent) {
    argv.insert(argv.end(), {"--appendonly", "yes", "--appendfsync", "always"});
  } else {
    argv.insert(argv.end(), {"--appendonly", "no"});
  }
  if (options_.password) argv.insert(argv.end(), {"--requirepass", *options_.password});
  if (options_.cluster_node) {
    argv.insert(argv.end(), {"--cluster-enabled", "yes", "--cluster-config-file",
                             dir_.file("nodes.conf"), "--cluster-node-timeout", "5000"});
  }
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  process_ = std::make_unique<ChildProcess>(argv, dir_.path());
  bool up = wait_until(
      [&] {
        if (!process_->running()) return false;
        std::string output;
        auto ping = cli_prefix();
        ping.push_back("PING");
        return run_command(ping, &output, std::chrono::seconds(5)) == 0 &&
               output.find("PONG") != std::string::npos;
      },
      std::chrono::seconds(30));
  if (!up) throw std::runtime_error("redis-server did not start: " + log());
}

void RedisServer::kill() {
  if (process_ == nullptr) return;
  process_->signal(SIGCONT);
  process_->signal(SIGKILL);
  process_->wait(std::chrono::seconds(10));
  process_.reset();
}

void RedisServer::stop() {
  if (process_ == nullptr) return;
  process_->signal(SIGCONT);
  process_->signal(SIGTERM);
  if (!process_->wait(std::chrono::seconds(30))) {
    process_->signal(SIGKILL);
    process_->wait(std::chrono::seconds(10));
  }
  process_.reset();
}

void RedisServer::pause() {
  if (process_ != nullptr) process_->signal(SIGSTOP);
}

void RedisServer::resume() {
  if (process_ != nullptr) process_->signal(SIGCONT);
}

std::string RedisServer::log() const {
  try {
    return read_file(dir_.file("redis.log"));
  } catch (const std::exception&) {
    return "(no log)";
  }
}

RedisCluster::RedisCluster(RedisClusterOptions options) : options_(std::move(options)) {
  options_.node.cluster_node = true;
  if (options_.node.tls) {
    make_certificate(certificates_);
    options_.node.certificate_dir = certificates_.path();
  }
  for (int i = 0; i < 3; ++i) nodes_.push_back(std::make_unique<RedisServer>(options_.node));
  if (options_.all_slots_on_first_node) {
    create_on_first_node();
  } else {
    create_with_redis_cli();
  }
  wait_until_healthy();
}

void RedisCluster::create_with_redis_cli() {
  std::vector<std::string> create{"redis-cli", "--cluster", "create"};
  for (auto& node : nodes_) create.push_back("127.0.0.1:" + std::to_string(node->port()));
  if (options_.node.tls) create.insert(create.end(), {"--tls", "--cacert", nodes_[0]->ca_file()});
  if (options_.node.password) {
    create.insert(create.end(), {"--no-auth-warning", "-a", *options_.node.password});
  }
  create.insert(create.end(), {"--cluster-replicas", "0", "--cluster-yes"});
  std::string output;
  if (run_command(create, &output, std::chrono::seconds(120)) != 0) {
    throw std::runtime_error("redis-cli --cluster create failed: " + output);
  }
}

void RedisCluster::create_on_first_node() {
  nodes_.front()->cli({"CLUSTER", "ADDSLOTSRANGE", "0", std::to_string(16383)});
  for (std::size_t i = 1; i < nodes_.size(); ++i) {
    nodes_[i]->cli({"CLUSTER", "MEET", "127.0.0.1", std::to_string(nodes_.front()->port())});
  }
}

void RedisCluster::wait_until_healthy(std::chrono::seconds timeout) {
  bool healthy = wait_until(
      [&] {
        std::optional<std::string> slots;
        for (auto& node : nodes_) {
          if (!node->running()) continue;
          std::string info;
          try {
            info = node->cli({"CLUSTER", "INFO"});
          } catch (const std::exception&) {
            return false;
          }
          if (info.find("cluster_state:ok") == std::string::npos ||
              info.find("cluster_known_nodes:" + std::to_string(nodes_.size())) ==
                  std::string::npos) {
            return false;
          }
          std::string map = node->cli({"CLUSTER", "SLOTS"});
          // Node ids and endpoints only: the order of the ranges may differ.
          if (slots && *slots != map) return false;
          slots = map;
        }
        return true;
      },
      timeout);
  if (!healthy) throw std::runtime_error("the cluster did not become healthy");
}

RedisCluster::~RedisCluster() = default;

std::string RedisCluster::cli(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{"-c"};
  argv.insert(argv.end(), args.begin(), args.end());
  return nodes_.front()->cli(argv);
}

std::string RedisCluster::node_id(int index) { return node(index).cli({"CLUSTER", "MYID"}); }

int RedisCluster::owner_of(int slot) {
  int asked = 0;
  while (asked + 1 < size() && !node(asked).running()) ++asked;
  // CLUSTER SLOTS as redis-cli prints it: start, end, then host, port, id per node, one a line.
  std::istringstream lines(node(asked).cli({"CLUSTER", "SLOTS"}));
  std::vector<std::string> fields;
  for (std::string line; std::getline(lines, line);) fields.push_back(line);
  for (std::size_t i = 0; i + 4 < fields.size();) {
    const int first = std::stoi(fields[i]);
    const int last = std::stoi(fields[i + 1]);
    const int port = std::stoi(fields[i + 3]);
    if (slot >= first && slot <= last) {
      for (int n = 0; n < size(); ++n) {
        if (node(n).port() == port) return n;
      }
    }
    i += 5;
    // Skip the hostname metadata redis-cli may print after the id.
    while (i < fields.size() &&
           (fields[i].empty() || fields[i].find_first_not_of("0123456789") != std::string::npos)) {
      ++i;
    }
  }
  throw std::runtime_error("no node serves slot " + std::to_string(slot));
}

void RedisCluster::begin_slot_migration(int slot, int from, int to) {
  const std::string s = std::to_string(slot);
  node(to).cli({"CLUSTER", "SETSLOT", s, "IMPORTING", node_id(from)});
  node(from).cli({"CLUSTER", "SETSLOT", s, "MIGRATING", node_id(to)});
}

void RedisCluster::migrate_keys(int from, int to, const std::vector<std::string>& keys) {
  if (keys.empty()) return;
  std::vector<std::string> migrate{"MIGRATE", "127.0.0.1", std::to_string(node(to).port()), "", "0",
                                   "5000",    "KEYS"};
  migrate.insert(migrate.end(), keys.begin(), keys.end());
  std::string reply = node(from).cli(migrate);
  if (reply != "OK" && reply != "NOKEY") throw std::runtime_error("MIGRATE: " + reply);
}

void RedisCluster::finish_slot_migration(int slot, int from, int to) {
  const std::string s = std::to_string(slot);
  while (true) {
    std::istringstream lines(node(from).cli({"CLUSTER", "GETKEYSINSLOT", s, "1000"}));
    std::vector<std::string> keys;
    for (std::string key; std::getline(lines, key);) {
      if (!key.empty()) keys.push_back(key);
    }
    if (keys.empty()) break;
    migrate_keys(from, to, keys);
  }
  const std::string target = node_id(to);
  node(to).cli({"CLUSTER", "SETSLOT", s, "NODE", target});
  node(from).cli({"CLUSTER", "SETSLOT", s, "NODE", target});
  for (int n = 0; n < size(); ++n) {
    if (n != from && n != to) node(n).cli({"CLUSTER", "SETSLOT", s, "NODE", target});
  }
}

}  // namespace cdcd::test
