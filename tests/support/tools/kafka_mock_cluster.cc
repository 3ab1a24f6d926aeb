// Hosts librdkafka's mock Kafka cluster for other processes (cdcd, kcat, python clients).
//
//   kafka_mock_cluster [--brokers N]
//
// Prints two lines on stdout, then serves until SIGTERM or SIGINT:
//   bootstrap=127.0.0.1:PORT,127.0.0.1:PORT,...
//   control=PORT
// The control port (127.0.0.1) takes one command per line and answers "ok" or "error: MESSAGE",
// so that a test can inject faults mid-stream and know they are in effect:
//   ping
//   down BROKER_ID | up BROKER_ID          take a broker off the network / back
//   rtt BROKER_ID MS                       delay every response of a broker
//   push_errors API ERR [ERR ...]          the next requests of API (e.g. Produce) fail with ERRs
//   clear_errors API
//   topic_error TOPIC ERR                  metadata for TOPIC reports ERR (NO_ERROR clears)
//   create_topic TOPIC PARTITIONS REPLICATION_FACTOR
//   leader TOPIC PARTITION BROKER_ID       move a partition's leadership
// API is a Kafka API name (Produce, Metadata, InitProducerId, ...) or its number; ERR is a
// librdkafka error name with or without the RD_KAFKA_RESP_ERR_ prefix, or its number.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

namespace {

int signal_pipe[2] = {-1, -1};

void on_signal(int) {
  char byte = 1;
  // Nothing useful can be done if the pipe is full: a wake-up is already pending.
  [[maybe_unused]] auto written = ::write(signal_pipe[1], &byte, 1);
}

std::optional<long> parse_number(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (*end != '\0') return std::nullopt;
  return value;
}

std::optional<int16_t> parse_api(const std::string& name) {
  static const std::map<std::string, int16_t> kApis = {
      {"Produce", 0},          {"Fetch", 1},
      {"ListOffsets", 2},      {"Metadata", 3},
      {"OffsetCommit", 8},     {"OffsetFetch", 9},
      {"FindCoordinator", 10}, {"JoinGroup", 11},
      {"Heartbeat", 12},       {"SyncGroup", 14},
      {"ApiVersions", 18},     {"CreateTopics", 19},
      {"InitProducerId", 22},  {"AddPartitionsToTxn", 24},
      {"EndTxn", 26},
  };
  if (auto it = kApis.find(name); it != kApis.end()) return it->second;
  if (auto number = parse_number(name)) return static_cast<int16_t>(*number);
  return std::nullopt;
}

std::optional<rd_kafka_resp_err_t> parse_error(std::string name) {
  if (auto number = parse_number(name)) return static_cast<rd_kafka_resp_err_t>(*number);
  const std::string prefix = "RD_KAFKA_RESP_ERR_";
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  const rd_kafka_err_desc* descs = nullptr;
  size_t count = 0;
  rd_kafka_get_err_descs(&descs, &count);
  for (size_t i = 0; i < count; ++i) {
    if (descs[i].name != nullptr && name == descs[i].name) return descs[i].code;
  }
  return std::nullopt;
}

std::string describe(rd_kafka_resp_err_t err) {
  return err ? std::string("error: ") + rd_kafka_err2name(err) : "ok";
}

// Runs one control command against the cluster; returns the reply line.
std::string run_command(rd_kafka_mock_cluster_t* cluster, const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string word; in >> word;) words.push_back(word);
  if (words.empty()) return "error: empty command";
  const std::string& verb = words[0];
  auto arg_count_is = [&](size_t n) { return words.size() == n + 1; };

  if (verb == "ping" && arg_count_is(0)) return "ok";
  if ((verb == "down" || verb == "up") && arg_count_is(1)) {
    auto id = parse_number(words[1]);
    if (!id) return "error: bad broker id";
    return describe(verb == "down" ? rd_kafka_mock_broker_set_down(cluster, *id)
                                   : rd_kafka_mock_broker_set_up(cluster, *id));
  }
  if (verb == "rtt" && arg_count_is(2)) {
    auto id = parse_number(words[1]);
    auto ms = parse_number(words[2]);
    if (!id || !ms) return "error: usage: rtt BROKER_ID MS";
    return describe(rd_kafka_mock_broker_set_rtt(cluster, *id, static_cast<int>(*ms)));
  }
  if (verb == "push_errors" && words.size() >= 3) {
    auto api = parse_api(words[1]);
    if (!api) return "error: unknown api " + words[1];
    std::vector<rd_kafka_resp_err_t> errors;
    for (size_t i = 2; i < words.size(); ++i) {
      auto err = parse_error(words[i]);
      if (!err) return "error: unknown error " + words[i];
      errors.push_back(*err);
    }
    rd_kafka_mock_push_request_errors_array(cluster, *api, errors.size(), errors.data());
    return "ok";
  }
  if (verb == "clear_errors" && arg_count_is(1)) {
    auto api = parse_api(words[1]);
    if (!api) return "error: unknown api " + words[1];
    rd_kafka_mock_clear_request_errors(cluster, *api);
    return "ok";
  }
  if (verb == "topic_error" && arg_count_is(2)) {
    auto err = parse_error(words[2]);
    if (!err) return "error: unknown error " + words[2];
    rd_kafka_mock_topic_set_error(cluster, words[1].c_str(), *err);
    return "ok";
  }
  if (verb == "create_topic" && arg_count_is(3)) {
    auto partitions = parse_number(words[2]);
    auto replication = parse_number(words[3]);
    if (!partitions || !replication) return "error: usage: create_topic TOPIC PARTITIONS RF";
    return describe(rd_kafka_mock_topic_create(
        cluster, words[1].c_str(), static_cast<int>(*partitions), static_cast<int>(*replication)));
  }
  if (verb == "leader" && arg_count_is(3)) {
    auto partition = parse_number(words[2]);
    auto id = parse_number(words[3]);
    if (!partition || !id) return "error: usage: leader TOPIC PARTITION BROKER_ID";
    return describe(rd_kafka_mock_partition_set_leader(
        cluster, words[1].c_str(), static_cast<int32_t>(*partition), static_cast<int32_t>(*id)));
  }
  return "error: unknown command or wrong arguments: " + line;
}

int listen_on_loopback() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 8) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int port_of(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

// One control connection: bytes received but not yet a full line.
struct Client {
  int fd;
  std::string pending;
};

// Reads what is available; answers every complete line. Returns false when the peer is gone.
bool serve_client(rd_kafka_mock_cluster_t* cluster, Client& client) {
  char buffer[4096];
  ssize_t n = ::read(client.fd, buffer, sizeof buffer);
  if (n <= 0) return false;
  client.pending.append(buffer, static_cast<size_t>(n));
  size_t newline;
  while ((newline = client.pending.find('\n')) != std::string::npos) {
    std::string line = client.pending.substr(0, newline);
    client.pending.erase(0, newline + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string reply = run_command(cluster, line) + "\n";
    if (::send(client.fd, reply.data(), reply.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(reply.size())) {
      return false;
    }
  }
  return true;
}

void serve(rd_kafka_mock_cluster_t* cluster, int listen_fd) {
  std::vector<Client> clients;
  while (true) {
    std::vector<pollfd> fds = {{signal_pipe[0], POLLIN, 0}, {listen_fd, POLLIN, 0}};
    for (const auto& client : clients) fds.push_back({client.fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      std::perror("poll");
      return;
    }
    if (fds[0].revents) return;
    if (fds[1].revents & POLLIN) {
      int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) clients.push_back({fd, ""});
    }
    for (size_t i = 2; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      auto& client = clients[i - 2];
      if (!serve_client(cluster, client)) {
        ::close(client.fd);
        client.fd = -1;
      }
    }
    std::erase_if(clients, [](const Client& client) { return client.fd < 0; });
  }
}

}  // namespace

int main(int argc, char** argv) {
  int brokers = 3;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--brokers" && i + 1 < argc) {
      brokers = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--brokers N]\n", argv[0]);
      return 2;
    }
  }

  if (::pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return 1;
  struct sigaction action {};
  action.sa_handler = on_signal;
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);

  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // The handle only hosts the cluster; it never connects anywhere itself.
  rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (rk == nullptr) {
    std::fprintf(stderr, "rd_kafka_new: %s\n", errstr);
    return 1;
  }
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(rk, brokers);
  if (cluster == nullptr) {
    std::fprintf(stderr, "rd_kafka_mock_cluster_new failed\n");
    rd_kafka_destroy(rk);
    return 1;
  }
  int listen_fd = listen_on_loopback();
  if (listen_fd < 0) {
    std::perror("control socket");
    rd_kafka_mock_cluster_destroy(cluster);
    rd_kafka_destroy(rk);
    return 1;
  }

  std::printf("bootstrap=%s\ncontrol=%d\n", rd_kafka_mock_cluster_bootstraps(cluster),
              port_of(listen_fd));
  std::fflush(stdout);

  serve(cluster, listen_fd);

  ::close(listen_fd);
  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(rk);
  return 0;
}
