#include "tests/support/redis_server.h"

#include <signal.h>

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

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

}  // namespace

RedisServer::RedisServer(RedisServerOptions options) : options_(std::move(options)) {
  port_ = options_.cluster_node ? free_cluster_port() : free_port();
  if (options_.tls) make_certificate();
  start();
}

RedisServer::~RedisServer() {
  if (process_ != nullptr) {
    process_->signal(SIGCONT);
    process_->signal(SIGKILL);
    process_->wait(std::chrono::seconds(10));
  }
}

void RedisServer::make_certificate() {
  std::string output;
  int code = run_command({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                          "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                          "-keyout", dir_.file("key.pem"), "-out", dir_.file("cert.pem")},
                         &output);
  if (code != 0) throw std::runtime_error("openssl req failed: " + output);
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
    argv.insert(argv.end(),
                {"--port", "0", "--tls-port", std::to_string(port_), "--tls-cert-file",
                 dir_.file("cert.pem"), "--tls-key-file", dir_.file("key.pem"),
                 "--tls-ca-cert-file", dir_.file("cert.pem"), "--tls-auth-clients", "no"});
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

RedisCluster::RedisCluster() {
  std::vector<std::string> create{"redis-cli", "--cluster", "create"};
  for (int i = 0; i < 3; ++i) {
    RedisServerOptions options;
    options.cluster_node = true;
    nodes_.push_back(std::make_unique<RedisServer>(options));
    create.push_back("127.0.0.1:" + std::to_string(nodes_.back()->port()));
  }
  create.insert(create.end(), {"--cluster-replicas", "0", "--cluster-yes"});
  std::string output;
  if (run_command(create, &output, std::chrono::seconds(120)) != 0) {
    throw std::runtime_error("redis-cli --cluster create failed: " + output);
  }
  bool ok = wait_until(
      [&] {
        for (auto& node : nodes_) {
          if (node->cli({"CLUSTER", "INFO"}).find("cluster_state:ok") == std::string::npos) {
            return false;
          }
        }
        return true;
      },
      std::chrono::seconds(60));
  if (!ok) throw std::runtime_error("the cluster did not reach cluster_state:ok");
}

RedisCluster::~RedisCluster() = default;

std::string RedisCluster::cli(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{"-c"};
  argv.insert(argv.end(), args.begin(), args.end());
  return nodes_.front()->cli(argv);
}

}  // namespace cdcd::test
