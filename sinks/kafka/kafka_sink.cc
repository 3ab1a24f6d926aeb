#include "sinks/kafka/kafka_sink.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "daemon/format/format.h"
#include "sinks/kafka/topic_name.h"

namespace cdcd::kafka {

namespace {

using namespace std::chrono_literals;

// How long start() waits for the cluster's metadata before calling the brokers unreachable.
constexpr int kStartTimeoutMs = 10000;
// Admin requests (topic creation): request and operation timeouts.
constexpr int kAdminTimeoutMs = 10000;
constexpr auto kAdminTimeout = std::chrono::milliseconds(kAdminTimeoutMs);
// How long stop() lets purged messages report before it fails their batches itself.
constexpr auto kPurgeGrace = 5s;

template <auto Destroy>
struct Deleter {
  template <typename T>
  void operator()(T* pointer) const {
    Destroy(pointer);
  }
};
using AdminOptionsPtr =
    std::unique_ptr<rd_kafka_AdminOptions_t, Deleter<rd_kafka_AdminOptions_destroy>>;
using NewTopicPtr = std::unique_ptr<rd_kafka_NewTopic_t, Deleter<rd_kafka_NewTopic_destroy>>;
using QueuePtr = std::unique_ptr<rd_kafka_queue_t, Deleter<rd_kafka_queue_destroy>>;
using EventPtr = std::unique_ptr<rd_kafka_event_t, Deleter<rd_kafka_event_destroy>>;
using ErrorPtr = std::unique_ptr<rd_kafka_error_t, Deleter<rd_kafka_error_destroy>>;
using ConfPtr = std::unique_ptr<rd_kafka_conf_t, Deleter<rd_kafka_conf_destroy>>;

// The broker refuses a whole request's record batch as too large, not the one message at fault:
// dead-lettering every change of it would drop changes that fit. Only librdkafka's local check
// (message.max.bytes, at produce time) singles out one change.
bool is_batch_too_large(rd_kafka_resp_err_t err) {
  return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
         err == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE;
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct KafkaSink::PendingBatch {
  PendingBatch(BatchPtr b, AckFn a, bool transaction_records)
      : batch(std::move(b)), ack(std::move(a)), written_at(std::chrono::steady_clock::now()) {
    // Three messages per change at most (a key-changing update in the debezium format: delete,
    // tombstone, create), two more with transaction metadata (the END of one transaction, the
    // BEGIN of the next) and one END after the last: never reallocated, because librdkafka holds
    // pointers into it.
    refs.reserve(transaction_records ? batch->changes.size() * 5 + 1 : batch->changes.size() * 3);
  }

  void fail(std::string message) {
    std::lock_guard lock(mutex);
    if (!failure) failure = Error{std::move(message), false};
  }

  void reject(std::size_t index, std::string reason) {
    std::lock_guard lock(mutex);
    for (const auto& rejected_change : rejected) {
      if (rejected_change.index == index) return;
    }
    rejected.push_back(RejectedChange{index, std::move(reason)});
  }

  BatchPtr batch;
  AckFn ack;
  // Delivery latency is measured from here: a clock read per batch, not per message.
  const std::chrono::steady_clock::time_point written_at;
  // Every message of the batch carries this CreateTime (ms): librdkafka would otherwise read the
  // clock for each one.
  std::int64_t timestamp_ms = 0;
  // Messages without a delivery report, plus one held by write() until it has produced them all.
  std::atomic<std::size_t> outstanding{1};
  std::mutex mutex;
  std::optional<Error> failure;
  std::vector<RejectedChange> rejected;
  std::vector<MessageRef> refs;
};

KafkaSink::KafkaSink(KafkaSinkConfig config, SinkContext context)
    : config_(std::move(config)),
      context_(std::move(context)),
      log_(context_.log ? context_.log : spdlog::default_logger()),
      metrics_(context_.registry, context_.name, context_.metrics) {}

KafkaSink::~KafkaSink() { stop(); }

// ---- start-up ---------------------------------------------------------------------------------

Status KafkaSink::start() {
  std::unique_lock lock(producer_mutex_);
  if (stopping_) return fail(fmt::format("kafka sink '{}' is stopped", context_.name));
  if (producer_ == nullptr) {
    if (auto created = create_producer(); !created) return created;
    poller_ = std::thread([this] { poll_loop(); });
  }
  if (config_.format == Format::kDebezium && config_.debezium.heartbeat_interval.count() > 0 &&
      !heartbeat_thread_.joinable()) {
    if (!config_.debezium.topic_prefix.empty()) {
      std::lock_guard heartbeat_lock(heartbeat_mutex_);
      heartbeat_prefixes_.insert(config_.debezium.topic_prefix);
    }
    heartbeat_thread_ = std::thread([this] { heartbeat_loop(); });
  }
  lock.unlock();
  if (auto reachable = check_cluster(); !reachable) return reachable;
  if (config_.create_topics && config_.topic.is_constant()) {
    std::shared_lock shared(producer_mutex_);
    if (producer_ == nullptr) return fail(fmt::format("kafka sink '{}' is stopped", context_.name));
    if (auto handle = topic_handle(config_.topic.text()); !handle) {
      return tl::unexpected(handle.error());
    }
  }
  return ok();
}

Status KafkaSink::create_producer() {
  ConfPtr conf(rd_kafka_conf_new());
  char errstr[512];
  auto set = [&](const std::string& name, const std::string& value) -> Status {
    if (rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), errstr, sizeof errstr) !=
        RD_KAFKA_CONF_OK) {
      return fail(fmt::format("kafka sink '{}': property {}: {}", context_.name, name, errstr));
    }
    return ok();
  };
  if (auto status = set("bootstrap.servers", config_.brokers); !status) return status;
  if (!config_.properties.contains("client.id")) {
    if (auto status = set("client.id", "cdcd-" + context_.name); !status) return status;
  }
  for (const auto& [name, value] : config_.properties) {
    if (auto status = set(name, value); !status) return status;
  }
  rd_kafka_conf_set_opaque(conf.get(), this);
  rd_kafka_conf_set_dr_msg_cb(conf.get(), &KafkaSink::on_delivery);
  rd_kafka_conf_set_error_cb(conf.get(), &KafkaSink::on_error);
  rd_kafka_conf_set_stats_cb(conf.get(), &KafkaSink::on_statistics);
  rd_kafka_conf_set_log_cb(conf.get(), &KafkaSink::on_log);
  producer_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), errstr, sizeof errstr);
  if (producer_ == nullptr) {
    return fail(
        fmt::format("kafka sink '{}': cannot create the producer: {}", context_.name, errstr));
  }
  conf.release();  // owned by the producer now
  return ok();
}

Status KafkaSink::check_cluster() {
  const rd_kafka_metadata_t* metadata = nullptr;
  rd_kafka_resp_err_t err;
  {
    std::shared_lock lock(producer_mutex_);
    if (producer_ == nullptr) return fail(fmt::format("kafka sink '{}' is stopped", context_.name));
    err = rd_kafka_metadata(producer_, /*all_topics=*/0, nullptr, &metadata, kStartTimeoutMs);
  }
  if (metadata != nullptr) rd_kafka_metadata_destroy(metadata);
  if (fatal_) return fail(fatal_error_text());
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return ok();
  bool permanent;
  {
    std::lock_guard lock(error_mutex_);
    permanent = last_error_code_ == RD_KAFKA_RESP_ERR__AUTHENTICATION ||
                last_error_code_ == RD_KAFKA_RESP_ERR__SSL;
  }
  auto message = fmt::format("kafka sink '{}': cannot reach the brokers {}: {}{}", context_.name,
                             config_.brokers, rd_kafka_err2str(err), last_error_text());
  return permanent ? fail(message) : fail_retryable(message);
}

// ---- topics -----------------------------------------------------------------------------------

// Called with producer_mutex_ held (shared or exclusive).
Result<KafkaSink::TopicHandle*> KafkaSink::topic_handle(const std::string& topic) {
  {
    std::lock_guard lock(topics_mutex_);
    if (auto it = topics_.find(topic); it != topics_.end()) return it->second.get();
  }
  // Creation waits on the cluster: done outside the lock. Two writers may both ask; the second
  // gets TOPIC_ALREADY_EXISTS, which is success.
  if (config_.create_topics) {
    if (auto created = create_topic(topic); !created) return tl::unexpected(created.error());
  }
  std::lock_guard lock(topics_mutex_);
  if (auto it = topics_.find(topic); it != topics_.end()) return it->second.get();
  auto handle = std::make_unique<TopicHandle>();
  handle->name = topic;
  handle->counters = metrics_.topic(topic);
  rd_kafka_topic_conf_t* topic_conf = rd_kafka_default_topic_conf_dup(producer_);
  rd_kafka_topic_conf_set_opaque(topic_conf, handle.get());
  handle->rkt = rd_kafka_topic_new(producer_, topic.c_str(), topic_conf);
  if (handle->rkt == nullptr) {
    rd_kafka_topic_conf_destroy(topic_conf);
    return fail(fmt::format("kafka sink '{}': topic '{}': {}", context_.name, topic,
                            rd_kafka_err2str(rd_kafka_last_error())));
  }
  auto* result = handle.get();
  topics_.emplace(topic, std::move(handle));
  return result;
}

Status KafkaSink::create_topic(const std::string& topic) {
  char errstr[512];
  const auto& creation = *config_.create_topics;
  NewTopicPtr new_topic(rd_kafka_NewTopic_new(topic.c_str(), creation.partitions,
                                              creation.replication_factor, errstr, sizeof errstr));
  if (!new_topic) {
    return fail(
        fmt::format("kafka sink '{}': cannot create topic '{}': {}", context_.name, topic, errstr));
  }
  AdminOptionsPtr options(rd_kafka_AdminOptions_new(producer_, RD_KAFKA_ADMIN_OP_CREATETOPICS));
  rd_kafka_AdminOptions_set_request_timeout(options.get(), kAdminTimeoutMs, errstr, sizeof errstr);
  rd_kafka_AdminOptions_set_operation_timeout(options.get(), kAdminTimeoutMs, errstr,
                                              sizeof errstr);
  QueuePtr queue(rd_kafka_queue_new(producer_));
  rd_kafka_NewTopic_t* topics[] = {new_topic.get()};
  rd_kafka_CreateTopics(producer_, topics, 1, options.get(), queue.get());
  // Polled in slices: stop() must not wait for the cluster's answer.
  EventPtr event;
  const auto give_up = std::chrono::steady_clock::now() + 2 * kAdminTimeout;
  while (!event && !stopping_ && std::chrono::steady_clock::now() < give_up) {
    event.reset(rd_kafka_queue_poll(queue.get(), 100));
  }
  auto failure = [&](const std::string& why) {
    return fail(
        fmt::format("kafka sink '{}': cannot create topic '{}': {}", context_.name, topic, why));
  };
  if (!event) return failure(stopping_ ? "the sink is stopping" : "no answer from the cluster");
  if (rd_kafka_event_error(event.get())) return failure(rd_kafka_event_error_string(event.get()));
  size_t count = 0;
  const rd_kafka_topic_result_t** results =
      rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event.get()), &count);
  for (size_t i = 0; i < count; ++i) {
    auto err = rd_kafka_topic_result_error(results[i]);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
      continue;
    const char* detail = rd_kafka_topic_result_error_string(results[i]);
    return failure(detail != nullptr ? detail : rd_kafka_err2str(err));
  }
  log_->info("kafka sink '{}': topic '{}' ready ({} partitions, replication factor {})",
             context_.name, topic, creation.partitions, creation.replication_factor);
  return ok();
}

// ---- writing ----------------------------------------------------------------------------------

void KafkaSink::write(BatchPtr batch, AckFn ack) {
  // Checked before the lock too: writers arriving while stop() waits for the lock must not keep
  // taking it.
  if (stopping_) return fail_at_once(ack);
  // A batch lives in live_ only while write() holds the lock shared, or while messages of it await
  // their delivery reports: shutdown(), holding it exclusively, may then complete and free every
  // batch left in live_ without pulling one out from under a writer.
  std::shared_lock lock(producer_mutex_);
  if (producer_ == nullptr || stopping_) return fail_at_once(ack);
  if (heartbeat_thread_.joinable() && config_.debezium.topic_prefix.empty()) {
    // Without topic.prefix a heartbeat's prefix is a source's name, known from its batches.
    std::lock_guard heartbeat_lock(heartbeat_mutex_);
    heartbeat_prefixes_.insert(batch->source_name);
  }
  auto* pending = new PendingBatch(std::move(batch), std::move(ack), tracks_transactions());
  {
    std::lock_guard live_lock(live_mutex_);
    live_.insert(pending);
  }
  if (fatal_) {
    pending->fail(fatal_error_text());
  } else {
    produce_batch(*pending);
  }
  release(*pending);
}

void KafkaSink::fail_at_once(const AckFn& ack) const {
  ack(DeliveryReport{Error{fmt::format("kafka sink '{}' is not running", context_.name), false},
                     {}});
}

bool KafkaSink::tracks_transactions() const {
  return config_.format == Format::kDebezium && config_.debezium.transaction_metadata;
}

void KafkaSink::produce_batch(PendingBatch& pending) {
  const Batch& batch = *pending.batch;
  EncodeContext encode_context{batch.source_name, batch.connector, now_us(), &config_.debezium};
  pending.timestamp_ms = encode_context.processed_at_us / 1000;
  DebeziumTransactions* transactions =
      tracks_transactions() ? &transactions_.of(batch.consumer) : nullptr;
  std::vector<DebeziumRecord> records;
  const bool constant_topic = config_.topic.is_constant();
  std::string topic_name = constant_topic ? config_.topic.text() : std::string();
  std::string rendered_key, rendered_old_key, value;
  TopicHandle* topic = nullptr;
  for (std::uint32_t index = 0; index < batch.changes.size(); ++index) {
    const Change& change = batch.changes[index];
    if (transactions != nullptr) {
      // Counted even if the change is then rejected: it goes to the dead-letter queue, not away.
      encode_context.transaction = transactions->next(change, encode_context, records);
      if (!produce_records(pending, records)) return;
    }
    if (!constant_topic) {
      topic_name.clear();
      // A topic template reads no row image: rendering it cannot fail.
      (void)config_.topic.render(TemplateInput(change, batch.source_name), topic_name);
    }
    // A handle exists only for a valid name: the name is checked when the topic changes.
    if (topic == nullptr || topic->name != topic_name) {
      if (auto problem = topic_name_problem(topic_name)) {
        pending.reject(index, fmt::format("kafka sink '{}': the change at lsn {} routes to no "
                                          "valid topic: {}",
                                          context_.name, change.lsn, *problem));
        continue;
      }
      auto handle = topic_handle(topic_name);
      if (!handle) {
        pending.fail(
            fmt::format("{} (for the change at lsn {})", handle.error().message, change.lsn));
        return;
      }
      topic = *handle;
    }
    std::string_view key = change.key.empty() ? std::string_view("{}") : change.key;
    if (!config_.key && config_.format == Format::kDebezium) {
      rendered_key.clear();
      encode_key(config_.format, change, change.key, encode_context, rendered_key);
      key = rendered_key;
    }
    if (config_.key) {
      rendered_key.clear();
      if (auto rendered =
              config_.key->render_required(TemplateInput(change, batch.source_name), rendered_key);
          !rendered) {
        pending.reject(index, fmt::format("kafka sink '{}': cannot build the key of the change at "
                                          "lsn {}: {}",
                                          context_.name, change.lsn, rendered.error().message));
        continue;
      }
      key = rendered_key;
    }
    // An update that changed the key: a tombstone for the old key goes first, as Debezium sends
    // it, so that log compaction drops the row under the key it no longer has.
    const bool tombstone_old_key =
        config_.tombstones && change.operation == Operation::kUpdate && !change.old_key.empty();
    // Debezium's PostgreSQL connector sends such an update as a delete of the old key and a
    // create of the new one, each naming the other key in a header.
    const bool split_key_change = config_.format == Format::kDebezium &&
                                  change.operation == Operation::kUpdate && !change.old_key.empty();
    std::string_view old_key = change.old_key;
    if (split_key_change && !config_.key) {
      rendered_old_key.clear();
      encode_key(config_.format, change, change.old_key, encode_context, rendered_old_key);
      old_key = rendered_old_key;
    }
    if ((tombstone_old_key || split_key_change) && config_.key) {
      rendered_old_key.clear();
      if (auto rendered = config_.key->render_required(
              TemplateInput(change, batch.source_name, change.old_key), rendered_old_key);
          !rendered) {
        pending.reject(index, fmt::format("kafka sink '{}': cannot build the old key of the "
                                          "change at lsn {}: {}",
                                          context_.name, change.lsn, rendered.error().message));
        continue;
      }
      old_key = rendered_old_key;
    }
    if (split_key_change && old_key != key) {
      if (produce_key_change(pending, *topic, index, encode_context, transactions, key, old_key) ==
          Produced::kFailed) {
        return;
      }
      continue;
    }
    value.clear();
    encode_change(config_.format, change, encode_context, value);
    // A key template may render both keys the same (it ignores the column that changed).
    if (tombstone_old_key && old_key != key) {
      Produced produced = produce(pending, *topic, index, old_key, nullptr);
      if (produced == Produced::kFailed) return;
      if (produced == Produced::kRejected) continue;
    }
    Produced produced = produce(pending, *topic, index, key, &value);
    if (produced == Produced::kFailed) return;
    // A rejected delete is dead-lettered or stops the consumer: its tombstone must not go out.
    if (produced == Produced::kQueued && change.operation == Operation::kDelete &&
        config_.tombstones) {
      if (produce(pending, *topic, index, key, nullptr) == Produced::kFailed) return;
    }
  }
  if (transactions != nullptr) {
    transactions->finish(batch, encode_context, records);
    produce_records(pending, records);
  }
}

bool KafkaSink::produce_records(PendingBatch& pending, std::vector<DebeziumRecord>& records) {
  bool queued = true;
  for (const auto& record : records) {
    if (produce_record(&pending, record) != Produced::kQueued) {
      queued = false;
      break;
    }
  }
  records.clear();
  return queued;
}

KafkaSink::Produced KafkaSink::produce_record(PendingBatch* pending, const DebeziumRecord& record) {
  auto failure = [&](const std::string& message) {
    if (pending != nullptr) {
      pending->fail(message);
    } else {
      log_->warn("{}", message);
    }
    return Produced::kFailed;
  };
  if (auto problem = topic_name_problem(record.topic)) {
    return failure(fmt::format("kafka sink '{}': '{}' is no valid topic: {}", context_.name,
                               record.topic, *problem));
  }
  auto topic = topic_handle(record.topic);
  if (!topic) return failure(topic.error().message);
  MessageRef* ref = &heartbeat_ref_;
  if (pending != nullptr) ref = &pending->refs.emplace_back(MessageRef{pending, 0, false, true});
  rd_kafka_vu_t fields[6];
  fields[0].vtype = RD_KAFKA_VTYPE_RKT;
  fields[0].u.rkt = (*topic)->rkt;
  fields[1].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
  fields[1].u.i = RD_KAFKA_MSG_F_COPY;
  fields[2].vtype = RD_KAFKA_VTYPE_KEY;
  fields[2].u.mem.ptr = const_cast<char*>(record.key.data());
  fields[2].u.mem.size = record.key.size();
  fields[3].vtype = RD_KAFKA_VTYPE_VALUE;
  fields[3].u.mem.ptr = const_cast<char*>(record.value.data());
  fields[3].u.mem.size = record.value.size();
  fields[4].vtype = RD_KAFKA_VTYPE_OPAQUE;
  fields[4].u.ptr = ref;
  fields[5].vtype = RD_KAFKA_VTYPE_TIMESTAMP;
  fields[5].u.i64 = pending != nullptr ? pending->timestamp_ms : now_us() / 1000;
  if (pending != nullptr) pending->outstanding.fetch_add(1);
  while (true) {
    ErrorPtr error(rd_kafka_produceva(producer_, fields, 6));
    if (!error) {
      queued_.fetch_add(1, std::memory_order_relaxed);
      return Produced::kQueued;
    }
    auto err = rd_kafka_error_code(error.get());
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && pending != nullptr && wait_for_queue_space()) {
      continue;
    }
    if (pending != nullptr) pending->outstanding.fetch_sub(1);
    // A full queue means the topics are busy: a heartbeat is not needed then.
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && pending == nullptr) return Produced::kFailed;
    metrics_.count_error();
    return failure(
        fmt::format("kafka sink '{}': topic '{}': producing the {} record failed: {} ({})",
                    context_.name, record.topic, pending != nullptr ? "transaction" : "heartbeat",
                    rd_kafka_err2str(err), rd_kafka_err2name(err)));
  }
}

void KafkaSink::heartbeat_loop() {
  std::unique_lock lock(heartbeat_mutex_);
  while (!stopping_) {
    heartbeat_cv_.wait_for(lock, config_.debezium.heartbeat_interval,
                           [this] { return stopping_.load(); });
    if (stopping_) break;
    std::vector<std::string> prefixes(heartbeat_prefixes_.begin(), heartbeat_prefixes_.end());
    lock.unlock();
    {
      std::shared_lock producer_lock(producer_mutex_);
      if (producer_ != nullptr && !stopping_) {
        const std::int64_t now = now_us();
        for (const auto& prefix : prefixes) {
          (void)produce_record(nullptr, debezium_heartbeat(config_.debezium, prefix, now));
        }
      }
    }
    lock.lock();
  }
}

// Debezium's three records for an update that changed the key: a delete under the old key
// (header __debezium.newkey), its tombstone when tombstones are on, and a create under the new
// key (header __debezium.oldkey).
KafkaSink::Produced KafkaSink::produce_key_change(PendingBatch& pending, TopicHandle& topic,
                                                  std::uint32_t index,
                                                  const EncodeContext& encode_context,
                                                  DebeziumTransactions* transactions,
                                                  std::string_view key, std::string_view old_key) {
  const Change& change = pending.batch->changes[index];
  std::string value;
  Change as_delete = change;
  as_delete.operation = Operation::kDelete;
  as_delete.new_row.clear();
  as_delete.unchanged_columns.clear();
  encode_change(config_.format, as_delete, encode_context, value);
  const ExtraHeader new_key_header{"__debezium.newkey", key};
  Produced produced = produce(pending, topic, index, old_key, &value, &new_key_header);
  if (produced != Produced::kQueued) return produced;
  if (config_.tombstones) {
    produced = produce(pending, topic, index, old_key, nullptr);
    if (produced != Produced::kQueued) return produced;
  }
  Change as_create = change;
  as_create.operation = Operation::kInsert;
  as_create.old_row.clear();
  value.clear();
  // Two events of the transaction, as in Debezium: the create has the next position.
  EncodeContext create_context = encode_context;
  if (transactions != nullptr) {
    std::vector<DebeziumRecord> none;  // same transaction: no BEGIN or END between them
    create_context.transaction = transactions->next(change, encode_context, none);
  }
  encode_change(config_.format, as_create, create_context, value);
  const ExtraHeader old_key_header{"__debezium.oldkey", old_key};
  return produce(pending, topic, index, key, &value, &old_key_header);
}

KafkaSink::Produced KafkaSink::produce(PendingBatch& pending, TopicHandle& topic,
                                       std::uint32_t index, std::string_view key,
                                       const std::string* value, const ExtraHeader* extra) {
  const Change& change = pending.batch->changes[index];
  MessageRef& ref = pending.refs.emplace_back(MessageRef{&pending, index, value == nullptr});
  rd_kafka_headers_t* headers =
      config_.headers ? make_headers(change, pending.batch->source_name) : nullptr;
  if (extra != nullptr) {
    if (headers == nullptr) headers = rd_kafka_headers_new(1);
    rd_kafka_header_add(headers, extra->name.data(), static_cast<ssize_t>(extra->name.size()),
                        extra->value.data(), static_cast<ssize_t>(extra->value.size()));
  }

  rd_kafka_vu_t fields[7];
  size_t count = 0;
  fields[count].vtype = RD_KAFKA_VTYPE_RKT;
  fields[count++].u.rkt = topic.rkt;
  fields[count].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
  fields[count++].u.i = RD_KAFKA_MSG_F_COPY;
  fields[count].vtype = RD_KAFKA_VTYPE_KEY;
  fields[count].u.mem.ptr = const_cast<char*>(key.data());
  fields[count++].u.mem.size = key.size();
  fields[count].vtype = RD_KAFKA_VTYPE_VALUE;
  fields[count].u.mem.ptr = value != nullptr ? const_cast<char*>(value->data()) : nullptr;
  fields[count++].u.mem.size = value != nullptr ? value->size() : 0;
  fields[count].vtype = RD_KAFKA_VTYPE_OPAQUE;
  fields[count++].u.ptr = &ref;
  fields[count].vtype = RD_KAFKA_VTYPE_TIMESTAMP;
  fields[count++].u.i64 = pending.timestamp_ms;
  if (headers != nullptr) {
    fields[count].vtype = RD_KAFKA_VTYPE_HEADERS;
    fields[count++].u.headers = headers;
  }

  pending.outstanding.fetch_add(1);
  while (true) {
    ErrorPtr error(rd_kafka_produceva(producer_, fields, count));
    if (!error) {
      queued_.fetch_add(1, std::memory_order_relaxed);
      return Produced::kQueued;
    }
    auto err = rd_kafka_error_code(error.get());
    // A full local queue is backpressure, not an error: wait for delivery reports to drain it.
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && wait_for_queue_space()) continue;

    // Not queued: librdkafka kept neither the message nor the headers.
    pending.outstanding.fetch_sub(1);
    if (headers != nullptr) rd_kafka_headers_destroy(headers);
    if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
      metrics_.count_error();
      auto size = key.size() + (value != nullptr ? value->size() : 0);
      pending.reject(index, describe_failure(topic.name, change, value == nullptr, err,
                                             fmt::format("{} bytes, more than the producer's "
                                                         "message.max.bytes",
                                                         size)));
      return Produced::kRejected;
    }
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      pending.fail(
          fmt::format("kafka sink '{}' stopped while waiting for queue space for the "
                      "change at lsn {}",
                      context_.name, change.lsn));
    } else {
      metrics_.count_error();
      std::string detail = note_fatal(producer_) ? fatal_error_text() : "";
      pending.fail(describe_failure(topic.name, change, value == nullptr, err, detail));
    }
    return Produced::kFailed;
  }
}

rd_kafka_headers_t* KafkaSink::make_headers(const Change& change, const std::string& source) const {
  rd_kafka_headers_t* headers = rd_kafka_headers_new(4);
  char lsn[24];
  auto lsn_end = std::to_chars(lsn, lsn + sizeof lsn, change.lsn).ptr;
  auto operation = to_string(change.operation);
  rd_kafka_header_add(headers, "cdcd-lsn", -1, lsn, lsn_end - lsn);
  rd_kafka_header_add(headers, "cdcd-operation", -1, operation.data(), operation.size());
  rd_kafka_header_add(headers, "cdcd-entity", -1, change.entity.data(), change.entity.size());
  rd_kafka_header_add(headers, "cdcd-source", -1, source.data(), source.size());
  return headers;
}

bool KafkaSink::wait_for_queue_space() {
  std::unique_lock lock(space_mutex_);
  ++space_waiters_;
  auto seen = space_generation_;
  // Timed: a report racing with this wait must not leave the writer asleep for long.
  space_cv_.wait_for(lock, 20ms, [&] { return stopping_.load() || space_generation_ != seen; });
  --space_waiters_;
  return !stopping_;
}

Status KafkaSink::flush(Deadline deadline) {
  if (wait_until_idle(deadline)) return ok();
  std::size_t pending;
  {
    std::lock_guard lock(live_mutex_);
    pending = live_.size();
  }
  return fail_retryable(fmt::format("kafka sink '{}': {} batches still await delivery reports{}",
                                    context_.name, pending, last_error_text()));
}

bool KafkaSink::wait_until_idle(Deadline deadline) {
  std::unique_lock lock(live_mutex_);
  return idle_cv_.wait_until(lock, deadline, [this] { return live_.empty(); });
}

// ---- delivery reports -------------------------------------------------------------------------

void KafkaSink::on_delivery(rd_kafka_t* rk, const rd_kafka_message_t* message, void* opaque) {
  static_cast<KafkaSink*>(opaque)->deliver(rk, *message);
}

void KafkaSink::deliver(rd_kafka_t* rk, const rd_kafka_message_t& message) {
  auto* ref = static_cast<MessageRef*>(message._private);
  auto* topic = static_cast<TopicHandle*>(rd_kafka_topic_opaque(message.rkt));
  ++reported_;
  if (message.err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (topic->unpublished_messages++ == 0) tallied_topics_.push_back(topic);
    topic->unpublished_bytes += message.len + message.key_len;
    // Reports arrive in bursts (one per produce request): one clock read serves the burst.
    if (!round_clock_) round_clock_ = std::chrono::steady_clock::now();
    if (ref->batch != nullptr) {
      latencies_.add(std::chrono::duration<double>(*round_clock_ - ref->batch->written_at).count());
    }
    if (brokers_down_.load(std::memory_order_relaxed)) brokers_down_ = false;
  } else if (ref->record) {
    metrics_.count_error();
    std::string what =
        fmt::format("kafka sink '{}': topic '{}': delivery of a {} record failed: {} ({})",
                    context_.name, topic->name, ref->batch != nullptr ? "transaction" : "heartbeat",
                    rd_kafka_err2str(message.err), rd_kafka_err2name(message.err));
    if (ref->batch != nullptr) {
      ref->batch->fail(std::move(what));
    } else {
      log_->warn("{}", what);  // nothing waits for a heartbeat: the next one may pass
    }
  } else {
    PendingBatch& pending = *ref->batch;
    metrics_.count_error();
    const Change& change = pending.batch->changes[ref->index];
    // The fatal error's own report may come after this one: ask librdkafka directly.
    std::string detail = note_fatal(rk) ? fatal_error_text() : "";
    if (is_batch_too_large(message.err)) {
      detail =
          "the broker refused the request's record batch; set properties.message.max.bytes to at "
          "most the topic's max.message.bytes so that an oversized change is rejected alone";
    }
    pending.fail(describe_failure(topic->name, change, ref->tombstone, message.err, detail));
  }
  if (ref->batch != nullptr) release(*ref->batch);
  if (space_waiters_ > 0) {
    {
      std::lock_guard lock(space_mutex_);
      ++space_generation_;
    }
    space_cv_.notify_all();
  }
}

void KafkaSink::release(PendingBatch& pending) {
  if (pending.outstanding.fetch_sub(1) == 1) complete(&pending);
}

void KafkaSink::complete(PendingBatch* pending) {
  DeliveryReport report;
  {
    std::lock_guard lock(pending->mutex);
    report.failure = std::move(pending->failure);
    if (!report.failure) report.rejected = std::move(pending->rejected);
  }
  std::sort(report.rejected.begin(), report.rejected.end(),
            [](const RejectedChange& a, const RejectedChange& b) { return a.index < b.index; });
  if (report.failure && !stopping_) {
    failed_ = true;
    log_->error("{}", report.failure->message);
  }
  AckFn ack = std::move(pending->ack);
  ack(std::move(report));
  {
    std::lock_guard lock(live_mutex_);
    live_.erase(pending);
  }
  idle_cv_.notify_all();
  delete pending;
}

// ---- librdkafka's other callbacks -------------------------------------------------------------

void KafkaSink::on_error(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
  static_cast<KafkaSink*>(opaque)->handle_error(rk, static_cast<rd_kafka_resp_err_t>(err), reason);
}

void KafkaSink::handle_error(rd_kafka_t* rk, rd_kafka_resp_err_t err, const char* reason) {
  metrics_.count_error();
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    note_fatal(rk);
    log_->critical("{}", fatal_error_text());
    return;
  }
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) brokers_down_ = true;
  {
    std::lock_guard lock(error_mutex_);
    last_error_ = reason;
    last_error_code_ = err;
  }
  log_->warn("kafka sink '{}': {} ({})", context_.name, reason, rd_kafka_err2name(err));
}

int KafkaSink::on_statistics(rd_kafka_t*, char* json, size_t length, void* opaque) {
  auto* self = static_cast<KafkaSink*>(opaque);
  if (self->metrics_.on_statistics(std::string_view(json, length), self->reported_)) {
    self->brokers_down_ = false;
  }
  return 0;  // librdkafka frees the JSON
}

void KafkaSink::on_log(const rd_kafka_t* rk, int level, const char* facility, const char* text) {
  auto* self = static_cast<KafkaSink*>(rd_kafka_opaque(rk));
  // syslog levels: 0-2 critical, 3 error, 4 warning, 5-6 info, 7 debug.
  auto spd_level = level <= 2   ? spdlog::level::critical
                   : level == 3 ? spdlog::level::err
                   : level == 4 ? spdlog::level::warn
                   : level <= 6 ? spdlog::level::info
                                : spdlog::level::debug;
  self->log_->log(spd_level, "kafka sink '{}': librdkafka {}: {}", self->context_.name, facility,
                  text);
}

// ---- shutdown ---------------------------------------------------------------------------------

void KafkaSink::poll_loop() {
  while (!poller_stop_) {
    round_clock_.reset();
    rd_kafka_poll(producer_, 50);
    publish_delivery_tallies();
  }
}

void KafkaSink::publish_delivery_tallies() {
  for (TopicHandle* topic : tallied_topics_) {
    topic->counters.messages->Increment(static_cast<double>(topic->unpublished_messages));
    topic->counters.bytes->Increment(static_cast<double>(topic->unpublished_bytes));
    topic->unpublished_messages = topic->unpublished_bytes = 0;
  }
  tallied_topics_.clear();
  latencies_.publish();
  // A report may be counted before its writer counted the message as queued.
  metrics_.set_in_flight(std::max<std::int64_t>(0, queued_.load() - reported_));
}

bool KafkaSink::healthy() const { return !failed_ && !fatal_ && !brokers_down_; }

void KafkaSink::stop() {
  std::call_once(stop_once_, [this] { shutdown(); });
}

void KafkaSink::shutdown() {
  stopping_ = true;
  space_cv_.notify_all();
  {
    std::lock_guard lock(heartbeat_mutex_);  // so that the heartbeat thread cannot miss it
  }
  heartbeat_cv_.notify_all();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  std::unique_lock lock(producer_mutex_);  // waits for writers to leave
  if (producer_ != nullptr) {
    // Whatever is still queued fails its batch now, so the pipeline checkpoints none of it.
    rd_kafka_purge(producer_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    wait_until_idle(std::chrono::steady_clock::now() + kPurgeGrace);
    poller_stop_ = true;
    // Ends the poller's current wait now rather than at its timeout.
    QueuePtr main_queue(rd_kafka_queue_get_main(producer_));
    rd_kafka_queue_yield(main_queue.get());
    poller_.join();
    for (auto& [name, topic] : topics_) rd_kafka_topic_destroy(topic->rkt);
    topics_.clear();
    rd_kafka_destroy(producer_);
    producer_ = nullptr;
  }
  // Reports that will never come now: fail those batches so that every ack fires once.
  std::vector<PendingBatch*> orphans;
  {
    std::lock_guard live_lock(live_mutex_);
    orphans.assign(live_.begin(), live_.end());
  }
  for (auto* pending : orphans) {
    pending->fail(
        fmt::format("kafka sink '{}' stopped before Kafka confirmed delivery", context_.name));
    complete(pending);
  }
}

// ---- error texts ------------------------------------------------------------------------------

std::string KafkaSink::describe_failure(const std::string& topic, const Change& change,
                                        bool tombstone, rd_kafka_resp_err_t err,
                                        const std::string& detail) const {
  return fmt::format(
      "kafka sink '{}': topic '{}': {} the change at lsn {} ({}, seq {}) failed: "
      "{} ({}){}{}",
      context_.name, topic,
      !tombstone                               ? "delivery of"
      : change.operation == Operation::kDelete ? "the tombstone after"
                                               : "the old key's tombstone before",
      change.lsn, change.entity, change.seq, rd_kafka_err2str(err), rd_kafka_err2name(err),
      detail.empty() ? "" : "; ", detail);
}

bool KafkaSink::note_fatal(rd_kafka_t* rk) {
  char detail[512];
  auto code = rd_kafka_fatal_error(rk, detail, sizeof detail);
  if (code == RD_KAFKA_RESP_ERR_NO_ERROR) return false;
  {
    std::lock_guard lock(error_mutex_);
    fatal_error_ = fmt::format("kafka sink '{}': fatal producer error {}: {}", context_.name,
                               rd_kafka_err2name(code), detail);
  }
  fatal_ = true;
  return true;
}

std::string KafkaSink::fatal_error_text() const {
  std::lock_guard lock(error_mutex_);
  return fatal_error_.empty() ? fmt::format("kafka sink '{}': fatal producer error", context_.name)
                              : fatal_error_;
}

std::string KafkaSink::last_error_text() const {
  std::lock_guard lock(error_mutex_);
  return last_error_.empty() ? "" : " (last error: " + last_error_ + ")";
}

}  // namespace cdcd::kafka

namespace cdcd {

void register_sink_kafka(PluginRegistry& registry) {
  registry.add_sink("kafka", [](config::Node& options, const SinkContext& context) {
    auto config = kafka::parse_kafka_sink_config(options);
    if (!config) return std::unique_ptr<Sink>();
    return std::unique_ptr<Sink>(std::make_unique<kafka::KafkaSink>(std::move(*config), context));
  });
}

}  // namespace cdcd
