#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "daemon/core/change.h"
#include "daemon/format/format.h"

namespace cdcd {

// A record of the `debezium` format that is not a change event: a transaction's BEGIN or END
// (provide.transaction.metadata) or a heartbeat. Encoded as the format writes it (with `schemas`,
// key and value in JsonConverter's {schema, payload} form).
struct DebeziumRecord {
  std::string topic;
  std::string key;
  std::string value;
};

// The topic of a source's transaction records: <prefix>.<topic.transaction>, the prefix being
// `topic.prefix` or else the source's config name (Debezium's default naming).
std::string debezium_transaction_topic(const DebeziumOptions& options,
                                       std::string_view source_name);

// A heartbeat (heartbeat.interval.ms) for the prefix: topic <topic.heartbeat.prefix>.<prefix>,
// key {"serverName": prefix}, value {"ts_ms": now}, as Debezium's PostgreSQL connector sends them.
DebeziumRecord debezium_heartbeat(const DebeziumOptions& options, std::string_view prefix,
                                  std::int64_t now_us);

// Debezium's transaction metadata for one writer's stream of batches: the BEGIN and END records
// and each change's `transaction` block (id, total_order, data_collection_order).
//
// A writer is a consumer: its batches come in log order and a transaction's changes are contiguous,
// so a change with another lsn than the one before starts a new transaction and ends the previous
// one. Whether the last transaction of a batch has ended is what Batch::transaction_ended_lsn says
// (a later batch may say it, possibly one without changes).
//
// Memory is bounded by the tables a transaction touches, not by its changes: END needs the event
// count of each table, so one counter per table of the open transaction is kept, however many
// batches the transaction spans. Snapshot rows belong to no transaction (as in Debezium: no block,
// not counted). Not thread-safe: one instance per writer.
class DebeziumTransactions {
 public:
  // For each change in order: appends the records due before it (the END of the transaction it
  // ends, the BEGIN of the one it starts) and returns its block, or null for a snapshot row. The
  // block stays valid until the next call.
  const TransactionBlock* next(const Change& change, const EncodeContext& context,
                               std::vector<DebeziumRecord>& records);

  // After the batch's changes: the END of the open transaction if the batch says it has ended.
  void finish(const Batch& batch, const EncodeContext& context,
              std::vector<DebeziumRecord>& records);

  // Whether a transaction is open (its BEGIN written, its END not yet).
  bool open() const { return open_; }

 private:
  void end(const EncodeContext& context, std::vector<DebeziumRecord>& records);
  void append_id(std::string& out, std::uint64_t lsn) const;

  bool open_ = false;
  std::uint64_t lsn_ = 0;
  std::optional<std::uint64_t> txid_;
  std::string id_;
  std::string source_name_;  // of the open transaction, for its END's topic
  std::int64_t timestamp_us_ = 0;
  std::uint64_t total_ = 0;
  // Event count per table, in the order the transaction first touched them.
  std::vector<std::pair<std::string, std::uint64_t>> collections_;
  std::unordered_map<std::string, std::size_t> collection_index_;
  std::string block_id_;
  TransactionBlock block_;
};

// The transaction state of each consumer writing to one sink (several consumers may share it).
class DebeziumTransactionsByConsumer {
 public:
  // Thread-safe; the state returned is the consumer's, used from its thread only.
  DebeziumTransactions& of(const std::string& consumer);

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::unique_ptr<DebeziumTransactions>> by_consumer_;
};

}  // namespace cdcd
