#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/test_util.h"

namespace cdcd::test {

// One record read back from the cluster by the independent client.
struct KafkaRecord {
  std::string topic;
  int partition = 0;
  std::int64_t offset = 0;
  std::optional<std::string> key;
  std::optional<std::string> value;  // nullopt for a tombstone
  std::vector<std::pair<std::string, std::string>> headers;
  // The partition the Java client's murmur2 partitioner picks for `key` (computed in Python).
  int murmur2_partition = -1;
  // Kafka's timestamp type (1 = CreateTime, 2 = LogAppendTime) and value, as the consumer sees
  // them.
  int timestamp_type = 0;
  std::int64_t timestamp_ms = 0;

  // The first header named `name`, or nullopt.
  std::optional<std::string> header(const std::string& name) const;
};

// librdkafka's mock cluster (three brokers on loopback ports) hosted by the kafka_mock_cluster tool
// in its own process, with fault injection through the tool's control port. Reading back goes
// through python3-confluent-kafka (/usr/bin/python3), never through cdcd's code.
class KafkaMockCluster {
 public:
  // Starts the cluster; throws std::runtime_error if it does not come up within 15 s.
  explicit KafkaMockCluster(const std::string& work_dir, int brokers = 3);
  ~KafkaMockCluster();
  KafkaMockCluster(const KafkaMockCluster&) = delete;
  KafkaMockCluster& operator=(const KafkaMockCluster&) = delete;

  const std::string& bootstrap() const { return bootstrap_; }

  // Sends one control command (see the tool's header); returns its reply: "ok" or "error: ...".
  std::string control(const std::string& command);
  // The same, throwing std::runtime_error unless the reply is "ok".
  void must(const std::string& command);

  void broker_down(int broker_id) { must("down " + std::to_string(broker_id)); }
  void broker_up(int broker_id) { must("up " + std::to_string(broker_id)); }
  void create_topic(const std::string& topic, int partitions, int replication_factor = 3);

  // Every record of `topics`, from the beginning to each partition's end, in partition then offset
  // order. Throws std::runtime_error if the reader fails or times out.
  std::vector<KafkaRecord> read_all(const std::vector<std::string>& topics,
                                    std::chrono::seconds timeout = std::chrono::seconds(60));
  // Sum of the high watermarks of a topic's partitions (0 for a topic that does not exist).
  std::int64_t message_count(const std::string& topic);
  // Topic name → partition count, as the cluster's metadata reports them.
  std::map<std::string, int> topics();
  // Whether the metadata names one of the brokers as controller. librdkafka 2.0's mock names
  // broker 0, which does not exist, so admin requests (CreateTopics) cannot succeed against it.
  bool advertises_controller();

 private:
  std::string run_python(const std::vector<std::string>& args, std::chrono::seconds timeout);

  std::string work_dir_;
  std::string script_path_;
  std::unique_ptr<ChildProcess> process_;
  std::string bootstrap_;
  int control_fd_ = -1;
};

}  // namespace cdcd::test
