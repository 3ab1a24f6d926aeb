#include "daemon/format/debezium_transactions.h"

#include "daemon/format/encoders.h"
#include "daemon/format/json_writer.h"

namespace cdcd {

namespace {

const DebeziumOptions kDefaultOptions;

const DebeziumOptions& options_of(const EncodeContext& context) {
  return context.debezium ? *context.debezium : kDefaultOptions;
}

std::string_view prefix_of(const DebeziumOptions& options, std::string_view source_name) {
  return options.topic_prefix.empty() ? source_name : std::string_view(options.topic_prefix);
}

// The schemas of Debezium's TransactionStructMaker and Heartbeat (io.debezium.connector.common).
constexpr std::string_view kTransactionKeySchema =
    "{\"type\":\"struct\",\"fields\":[{\"type\":\"string\",\"optional\":false,\"field\":\"id\"}],"
    "\"optional\":false,\"name\":\"io.debezium.connector.common.TransactionMetadataKey\","
    "\"version\":1}";
constexpr std::string_view kTransactionValueSchema =
    "{\"type\":\"struct\",\"fields\":["
    "{\"type\":\"string\",\"optional\":false,\"field\":\"status\"},"
    "{\"type\":\"string\",\"optional\":false,\"field\":\"id\"},"
    "{\"type\":\"int64\",\"optional\":true,\"field\":\"event_count\"},"
    "{\"type\":\"array\",\"items\":{\"type\":\"struct\",\"fields\":["
    "{\"type\":\"string\",\"optional\":false,\"field\":\"data_collection\"},"
    "{\"type\":\"int64\",\"optional\":false,\"field\":\"event_count\"}],\"optional\":false},"
    "\"optional\":true,\"field\":\"data_collections\"},"
    "{\"type\":\"int64\",\"optional\":false,\"field\":\"ts_ms\"}],"
    "\"optional\":false,\"name\":\"io.debezium.connector.common.TransactionMetadataValue\","
    "\"version\":1}";
constexpr std::string_view kHeartbeatKeySchema =
    "{\"type\":\"struct\",\"fields\":["
    "{\"type\":\"string\",\"optional\":false,\"field\":\"serverName\"}],"
    "\"optional\":false,\"name\":\"io.debezium.connector.common.ServerNameKey\",\"version\":1}";
constexpr std::string_view kHeartbeatValueSchema =
    "{\"type\":\"struct\",\"fields\":[{\"type\":\"int64\",\"optional\":false,\"field\":\"ts_ms\"}],"
    "\"optional\":false,\"name\":\"io.debezium.connector.common.Heartbeat\",\"version\":1}";

void open_wrapper(std::string& out, bool schemas, std::string_view schema) {
  if (!schemas) return;
  out += "{\"schema\":";
  out += schema;
  out += ",\"payload\":";
}

void close_wrapper(std::string& out, bool schemas) {
  if (schemas) out += '}';
}

// Debezium keys transaction records by the transaction's id.
void append_transaction_key(std::string& out, const DebeziumOptions& options, std::string_view id) {
  open_wrapper(out, options.schemas, kTransactionKeySchema);
  out += "{\"id\":";
  json::append_string(out, id);
  out += '}';
  close_wrapper(out, options.schemas);
}

}  // namespace

std::string debezium_transaction_topic(const DebeziumOptions& options,
                                       std::string_view source_name) {
  std::string topic(prefix_of(options, source_name));
  topic += '.';
  topic += options.transaction_topic;
  return topic;
}

DebeziumRecord debezium_heartbeat(const DebeziumOptions& options, std::string_view prefix,
                                  std::int64_t now_us) {
  DebeziumRecord record;
  record.topic = options.heartbeat_topic_prefix;
  record.topic += '.';
  record.topic += prefix;
  open_wrapper(record.key, options.schemas, kHeartbeatKeySchema);
  record.key += "{\"serverName\":";
  json::append_string(record.key, prefix);
  record.key += '}';
  close_wrapper(record.key, options.schemas);
  open_wrapper(record.value, options.schemas, kHeartbeatValueSchema);
  record.value += "{\"ts_ms\":";
  json::append_integer(record.value, format_internal::floor_div(now_us, 1000));
  record.value += '}';
  close_wrapper(record.value, options.schemas);
  return record;
}

const TransactionBlock* DebeziumTransactions::next(const Change& change,
                                                   const EncodeContext& context,
                                                   std::vector<DebeziumRecord>& records) {
  if (open_ && change.lsn != lsn_) end(context, records);
  if (change.operation == Operation::kRead) return nullptr;
  if (!open_) {
    open_ = true;
    lsn_ = change.lsn;
    timestamp_us_ = change.timestamp_us;
    source_name_ = context.source_name;
    txid_ = change.txid;
    id_.clear();
    append_id(id_, change.begin_lsn != 0 ? change.begin_lsn : change.lsn);
    total_ = 0;
    collections_.clear();
    collection_index_.clear();
    const DebeziumOptions& options = options_of(context);
    DebeziumRecord& begin = records.emplace_back();
    begin.topic = debezium_transaction_topic(options, source_name_);
    append_transaction_key(begin.key, options, id_);
    open_wrapper(begin.value, options.schemas, kTransactionValueSchema);
    begin.value += "{\"status\":\"BEGIN\",\"id\":";
    json::append_string(begin.value, id_);
    begin.value += ",\"event_count\":null,\"data_collections\":null,\"ts_ms\":";
    json::append_integer(begin.value, format_internal::floor_div(timestamp_us_, 1000));
    begin.value += '}';
    close_wrapper(begin.value, options.schemas);
  }
  auto [it, added] = collection_index_.try_emplace(change.entity, collections_.size());
  if (added) collections_.emplace_back(change.entity, 0);
  block_id_.clear();
  append_id(block_id_, change.event_lsn != 0 ? change.event_lsn : lsn_);
  block_.id = block_id_;
  block_.total_order = ++total_;
  block_.data_collection_order = ++collections_[it->second].second;
  return &block_;
}

void DebeziumTransactions::finish(const Batch& batch, const EncodeContext& context,
                                  std::vector<DebeziumRecord>& records) {
  if (open_ && batch.transaction_ended_lsn == lsn_) end(context, records);
}

// Debezium's PostgreSQL connector: "txId:LSN", the LSN being the position of the record the id
// is written in (the BEGIN's, each change's own, the END's), as its PostgresTransactionMonitor
// takes it from the offset at each record. Sources without transaction ids: the LSN alone.
void DebeziumTransactions::append_id(std::string& out, std::uint64_t lsn) const {
  if (txid_) {
    json::append_integer(out, *txid_);
    out += ':';
  }
  json::append_integer(out, lsn);
}

void DebeziumTransactions::end(const EncodeContext& context, std::vector<DebeziumRecord>& records) {
  open_ = false;
  id_.clear();
  append_id(id_, lsn_);
  const DebeziumOptions& options = options_of(context);
  DebeziumRecord& record = records.emplace_back();
  record.topic = debezium_transaction_topic(options, source_name_);
  append_transaction_key(record.key, options, id_);
  open_wrapper(record.value, options.schemas, kTransactionValueSchema);
  record.value += "{\"status\":\"END\",\"id\":";
  json::append_string(record.value, id_);
  record.value += ",\"event_count\":";
  json::append_integer(record.value, total_);
  record.value += ",\"data_collections\":[";
  bool first = true;
  for (const auto& [collection, count] : collections_) {
    if (!first) record.value += ',';
    first = false;
    record.value += "{\"data_collection\":";
    json::append_string(record.value, collection);
    record.value += ",\"event_count\":";
    json::append_integer(record.value, count);
    record.value += '}';
  }
  record.value += "],\"ts_ms\":";
  json::append_integer(record.value, format_internal::floor_div(timestamp_us_, 1000));
  record.value += '}';
  close_wrapper(record.value, options.schemas);
}

DebeziumTransactions& DebeziumTransactionsByConsumer::of(const std::string& consumer) {
  std::lock_guard lock(mutex_);
  auto& transactions = by_consumer_[consumer];
  if (!transactions) transactions = std::make_unique<DebeziumTransactions>();
  return *transactions;
}

}  // namespace cdcd
