#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <librdkafka/rdkafka.h>

#include "daemon/format/debezium_transactions.h"
#include "daemon/plugin/registry.h"
#include "daemon/plugin/sink.h"
#include "sinks/kafka/kafka_metrics.h"
#include "sinks/kafka/kafka_sink_config.h"

namespace cdcd {

// Registers `type: kafka`.
void register_sink_kafka(PluginRegistry& registry);

namespace kafka {

// Writes changes to Kafka with librdkafka's idempotent producer (see docs/sinks/kafka.md).
//
// Threads: write() runs on the consumers' threads; a poller thread owned by the sink serves
// librdkafka's callbacks (delivery reports, errors, statistics), so acknowledgements fire on it.
// A batch is acknowledged when the last of its messages (tombstones included) has its delivery
// report: each message's opaque points at its batch's outstanding count. An update that changed the
// key is preceded by a tombstone for the old key (with `tombstones` on).
class KafkaSink final : public Sink {
 public:
  KafkaSink(KafkaSinkConfig config, SinkContext context);
  ~KafkaSink() override;
  KafkaSink(const KafkaSink&) = delete;
  KafkaSink& operator=(const KafkaSink&) = delete;

  Status start() override;
  void write(BatchPtr batch, AckFn ack) override;
  Status flush(Deadline deadline) override;
  void stop() override;
  bool healthy() const override;
  bool tracks_transactions() const override;

 private:
  struct PendingBatch;
  // Per-message opaque: which change of which batch a delivery report is about. A record that is
  // no change (a transaction's BEGIN/END, a heartbeat) has `record` set; a heartbeat belongs to no
  // batch.
  struct MessageRef {
    PendingBatch* batch;
    std::uint32_t index;
    bool tombstone;
    bool record = false;
  };
  // A topic the producer writes to; its address is the rd_kafka_topic_t's opaque.
  struct TopicHandle {
    std::string name;
    rd_kafka_topic_t* rkt = nullptr;
    KafkaMetrics::TopicCounters counters;
    // Acknowledged since the counters were last published (poller thread only).
    std::uint64_t unpublished_messages = 0;
    std::uint64_t unpublished_bytes = 0;
  };
  enum class Produced { kQueued, kRejected, kFailed };

  static void on_delivery(rd_kafka_t* rk, const rd_kafka_message_t* message, void* opaque);
  static void on_error(rd_kafka_t* rk, int err, const char* reason, void* opaque);
  static int on_statistics(rd_kafka_t* rk, char* json, size_t length, void* opaque);
  static void on_log(const rd_kafka_t* rk, int level, const char* facility, const char* text);

  Status create_producer();
  Status check_cluster();
  Result<TopicHandle*> topic_handle(const std::string& topic);
  Status create_topic(const std::string& topic);

  // Acknowledges a write() that comes after (or during) stop() with a failure.
  void fail_at_once(const AckFn& ack) const;
  void produce_batch(PendingBatch& pending);
  struct ExtraHeader {
    std::string_view name;
    std::string_view value;
  };
  Produced produce(PendingBatch& pending, TopicHandle& topic, std::uint32_t index,
                   std::string_view key, const std::string* value,
                   const ExtraHeader* extra = nullptr);
  Produced produce_key_change(PendingBatch& pending, TopicHandle& topic, std::uint32_t index,
                              const EncodeContext& encode_context,
                              DebeziumTransactions* transactions, std::string_view key,
                              std::string_view old_key);
  // Produces a record of the debezium format that is no change; `pending` null for a heartbeat,
  // which waits for no queue space (a full queue means the topics are not idle).
  Produced produce_record(PendingBatch* pending, const DebeziumRecord& record);
  // Produces and clears `records`; false when one failed (the batch failed with it).
  bool produce_records(PendingBatch& pending, std::vector<DebeziumRecord>& records);
  void heartbeat_loop();
  rd_kafka_headers_t* make_headers(const Change& change, const std::string& source) const;
  bool wait_for_queue_space();

  void deliver(rd_kafka_t* rk, const rd_kafka_message_t& message);
  void handle_error(rd_kafka_t* rk, rd_kafka_resp_err_t err, const char* reason);
  // Drops one reference to `pending`; the last one acknowledges it.
  void release(PendingBatch& pending);
  void complete(PendingBatch* pending);
  bool wait_until_idle(Deadline deadline);
  void poll_loop();
  void publish_delivery_tallies();
  void shutdown();

  std::string describe_failure(const std::string& topic, const Change& change, bool tombstone,
                               rd_kafka_resp_err_t err, const std::string& detail) const;
  // Records librdkafka's fatal error, if it has raised one; returns whether it has.
  bool note_fatal(rd_kafka_t* rk);
  std::string fatal_error_text() const;
  std::string last_error_text() const;

  const KafkaSinkConfig config_;
  const SinkContext context_;
  std::shared_ptr<spdlog::logger> log_;
  KafkaMetrics metrics_;

  // Held shared by write() while it uses the producer, exclusively by start() and stop().
  mutable std::shared_mutex producer_mutex_;
  rd_kafka_t* producer_ = nullptr;
  std::thread poller_;
  std::atomic<bool> poller_stop_{false};
  std::atomic<bool> stopping_{false};
  std::once_flag stop_once_;

  // Debezium transaction metadata, per consumer (each writes its batches from its one thread).
  DebeziumTransactionsByConsumer transactions_;

  // Heartbeats (debezium heartbeat.interval.ms): one per prefix known (topic.prefix, else the
  // sources seen in batches) every interval, from their own thread.
  std::thread heartbeat_thread_;
  std::mutex heartbeat_mutex_;
  std::condition_variable heartbeat_cv_;
  std::unordered_set<std::string> heartbeat_prefixes_;
  MessageRef heartbeat_ref_{nullptr, 0, false, true};

  std::mutex topics_mutex_;
  std::unordered_map<std::string, std::unique_ptr<TopicHandle>> topics_;

  // Batches not yet acknowledged; flush() waits for this to empty.
  std::mutex live_mutex_;
  std::condition_variable idle_cv_;
  std::unordered_set<PendingBatch*> live_;

  // write() waits here while the producer's queue is full; delivery reports wake it.
  std::mutex space_mutex_;
  std::condition_variable space_cv_;
  std::atomic<int> space_waiters_{0};
  std::uint64_t space_generation_ = 0;  // bumped by delivery reports while writers wait

  // Messages queued by writers. On its own cache line: the per-message path shares nothing that
  // the poller thread writes.
  alignas(64) std::atomic<std::int64_t> queued_{0};
  // Poller-thread state. Delivery reports and statistics run on that thread only (poll_loop is
  // the only caller of rd_kafka_poll), so these need no synchronisation; the metrics get them once
  // per poll round.
  alignas(64) std::int64_t reported_ = 0;  // delivery reports received
  // The time of the current poll round's first delivery report.
  std::optional<std::chrono::steady_clock::time_point> round_clock_;
  std::vector<TopicHandle*> tallied_topics_;
  KafkaMetrics::LatencyTally latencies_{metrics_};
  std::atomic<bool> failed_{false};
  std::atomic<bool> fatal_{false};
  std::atomic<bool> brokers_down_{false};
  mutable std::mutex error_mutex_;
  std::string fatal_error_;
  std::string last_error_;
  rd_kafka_resp_err_t last_error_code_ = RD_KAFKA_RESP_ERR_NO_ERROR;
};

}  // namespace kafka
}  // namespace cdcd
