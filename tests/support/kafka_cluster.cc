#include "tests/support/kafka_cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace cdcd::test {

namespace {

// The independent reader. Java's murmur2 is re-implemented here from the Kafka client's
// Utils.murmur2 so that the partition a key lands on can be checked against what a Java producer
// would pick.
constexpr const char* kReaderScript = R"PY(
import json, sys, time, uuid
from confluent_kafka import Consumer, TopicPartition

def murmur2(data):
    m, r = 0x5bd1e995, 24
    length = len(data)
    h = (0x9747b28c ^ length) & 0xffffffff
    for i in range(length // 4):
        k = data[4*i] | (data[4*i+1] << 8) | (data[4*i+2] << 16) | (data[4*i+3] << 24)
        k = (k * m) & 0xffffffff
        k ^= k >> r
        k = (k * m) & 0xffffffff
        h = (h * m) & 0xffffffff
        h ^= k
    tail, rest = length & ~3, length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xffffffff
    h ^= h >> 13
    h = (h * m) & 0xffffffff
    h ^= h >> 15
    return h

def consumer(bootstrap):
    return Consumer({'bootstrap.servers': bootstrap, 'group.id': 'reader-' + uuid.uuid4().hex,
                     'enable.auto.commit': False, 'auto.offset.reset': 'earliest',
                     'enable.partition.eof': False, 'log_level': 3})

def partitions(c, topic, deadline):
    while time.time() < deadline:
        md = c.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and t.partitions:
            return sorted(t.partitions.keys())
        if t is not None and t.error is not None and t.error.code() == 3:  # unknown topic
            return []
        time.sleep(0.1)
    raise SystemExit('no metadata for ' + topic)

def watermarks(c, topic, deadline):
    return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in partitions(c, topic, deadline)}

def cmd_read(bootstrap, timeout, topics):
    deadline = time.time() + timeout
    c = consumer(bootstrap)
    ends, starts, counts = {}, [], {}
    for topic in topics:
        marks = watermarks(c, topic, deadline)
        counts[topic] = len(marks)
        for p, (low, high) in marks.items():
            if high > low:
                ends[(topic, p)] = high
                starts.append(TopicPartition(topic, p, low))
    records = []
    if starts:
        c.assign(starts)
        while ends and time.time() < deadline:
            for msg in c.consume(num_messages=1000, timeout=0.5):
                if msg.error():
                    raise SystemExit('consume error: ' + str(msg.error()))
                tp = (msg.topic(), msg.partition())
                key = msg.key()
                records.append({
                    'topic': msg.topic(), 'partition': msg.partition(), 'offset': msg.offset(),
                    'key': None if key is None else key.decode('utf-8'),
                    'value': None if msg.value() is None else msg.value().decode('utf-8'),
                    'headers': [[k, v.decode('utf-8')] for k, v in (msg.headers() or [])],
                    'timestamp_type': msg.timestamp()[0], 'timestamp_ms': msg.timestamp()[1],
                    'murmur2_partition': -1 if key is None
                        else (murmur2(key) & 0x7fffffff) % counts[msg.topic()]})
                if tp in ends and msg.offset() + 1 >= ends[tp]:
                    del ends[tp]
        if ends:
            raise SystemExit('timed out reading; unfinished partitions: ' + repr(sorted(ends)))
    c.close()
    records.sort(key=lambda r: (r['topic'], r['partition'], r['offset']))
    for r in records:
        print(json.dumps(r))

def cmd_count(bootstrap, timeout, topic):
    c = consumer(bootstrap)
    marks = watermarks(c, topic, time.time() + timeout)
    print(sum(high for low, high in marks.values()))
    c.close()

def cmd_metadata(bootstrap, timeout):
    c = consumer(bootstrap)
    md = c.list_topics(timeout=timeout)
    print(json.dumps({'controller': md.controller_id, 'brokers': sorted(md.brokers.keys()),
                      'topics': {name: len(t.partitions) for name, t in md.topics.items()}}))
    c.close()

command, bootstrap, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
if command == 'read':
    cmd_read(bootstrap, timeout, sys.argv[4:])
elif command == 'count':
    cmd_count(bootstrap, timeout, sys.argv[4])
elif command == 'metadata':
    cmd_metadata(bootstrap, timeout)
else:
    raise SystemExit('unknown command ' + command)
)PY";

std::string line_value(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "=", 0) == 0) return line.substr(name.size() + 1);
  }
  return "";
}

int connect_loopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

std::optional<std::string> KafkaRecord::header(const std::string& name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return std::nullopt;
}

KafkaMockCluster::KafkaMockCluster(const std::string& work_dir, int brokers)
    : work_dir_(work_dir), script_path_(work_dir + "/kafka_reader.py") {
  write_file(script_path_, kReaderScript);
  process_ =
      std::make_unique<ChildProcess>(std::vector<std::string>{tool_binary("kafka_mock_cluster"),
                                                              "--brokers", std::to_string(brokers)},
                                     work_dir);
  std::string control_port;
  bool up = wait_until(
      [&] {
        auto out = process_->stdout_text();
        bootstrap_ = line_value(out, "bootstrap");
        control_port = line_value(out, "control");
        return !control_port.empty() || !process_->running();
      },
      std::chrono::seconds(15));
  if (!up || control_port.empty()) {
    throw std::runtime_error("kafka_mock_cluster did not start: " + process_->stderr_text());
  }
  control_fd_ = connect_loopback(std::stoi(control_port));
  if (control_fd_ < 0)
    throw std::runtime_error("cannot connect to kafka_mock_cluster's control port");
}

KafkaMockCluster::~KafkaMockCluster() {
  if (control_fd_ >= 0) ::close(control_fd_);
  process_->signal(SIGTERM);
  if (!process_->wait(std::chrono::seconds(10))) process_->signal(SIGKILL);
}

std::string KafkaMockCluster::control(const std::string& command) {
  std::string line = command + "\n";
  if (::send(control_fd_, line.data(), line.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(line.size())) {
    return "error: control connection lost";
  }
  std::string reply;
  char c;
  while (::recv(control_fd_, &c, 1, 0) == 1) {
    if (c == '\n') return reply;
    reply += c;
  }
  return "error: no reply from kafka_mock_cluster";
}

void KafkaMockCluster::must(const std::string& command) {
  auto reply = control(command);
  if (reply != "ok") throw std::runtime_error("kafka_mock_cluster: " + command + ": " + reply);
}

void KafkaMockCluster::create_topic(const std::string& topic, int partitions,
                                    int replication_factor) {
  must("create_topic " + topic + " " + std::to_string(partitions) + " " +
       std::to_string(replication_factor));
}

std::string KafkaMockCluster::run_python(const std::vector<std::string>& args,
                                         std::chrono::seconds timeout) {
  std::vector<std::string> argv = {"/usr/bin/python3", script_path_, args.at(0), bootstrap_,
                                   std::to_string(timeout.count())};
  argv.insert(argv.end(), args.begin() + 1, args.end());
  ChildProcess reader(argv, work_dir_);
  auto code = reader.wait(timeout + std::chrono::seconds(30));
  if (code != 0) {
    throw std::runtime_error("kafka reader " + args.at(0) + " failed (exit " +
                             (code ? std::to_string(*code) : "timeout") +
                             "): " + reader.stderr_text());
  }
  return reader.stdout_text();
}

std::vector<KafkaRecord> KafkaMockCluster::read_all(const std::vector<std::string>& topics,
                                                    std::chrono::seconds timeout) {
  std::vector<std::string> args = {"read"};
  args.insert(args.end(), topics.begin(), topics.end());
  std::istringstream out(run_python(args, timeout));
  std::vector<KafkaRecord> records;
  for (std::string line; std::getline(out, line);) {
    if (line.empty()) continue;
    auto json = nlohmann::json::parse(line);
    KafkaRecord record;
    record.topic = json.at("topic").get<std::string>();
    record.partition = json.at("partition").get<int>();
    record.offset = json.at("offset").get<std::int64_t>();
    if (!json.at("key").is_null()) record.key = json.at("key").get<std::string>();
    if (!json.at("value").is_null()) record.value = json.at("value").get<std::string>();
    for (const auto& header : json.at("headers")) {
      record.headers.emplace_back(header.at(0).get<std::string>(), header.at(1).get<std::string>());
    }
    record.murmur2_partition = json.at("murmur2_partition").get<int>();
    record.timestamp_type = json.at("timestamp_type").get<int>();
    record.timestamp_ms = json.at("timestamp_ms").get<std::int64_t>();
    records.push_back(std::move(record));
  }
  return records;
}

std::int64_t KafkaMockCluster::message_count(const std::string& topic) {
  return std::stoll(run_python({"count", topic}, std::chrono::seconds(30)));
}

std::map<std::string, int> KafkaMockCluster::topics() {
  auto json = nlohmann::json::parse(run_python({"metadata"}, std::chrono::seconds(30)));
  std::map<std::string, int> result;
  for (const auto& [name, partitions] : json.at("topics").items()) {
    result[name] = partitions.get<int>();
  }
  return result;
}

bool KafkaMockCluster::advertises_controller() {
  auto json = nlohmann::json::parse(run_python({"metadata"}, std::chrono::seconds(30)));
  auto brokers = json.at("brokers").get<std::vector<int>>();
  return std::find(brokers.begin(), brokers.end(), json.at("controller").get<int>()) !=
         brokers.end();
}

}  // namespace cdcd::test
