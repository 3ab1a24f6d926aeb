#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "daemon/core/entity_schema.h"

namespace cdcd {

enum class Operation : std::uint8_t { kInsert, kUpdate, kDelete, kTruncate, kRead };

inline constexpr Operation kAllOperations[] = {Operation::kInsert, Operation::kUpdate,
                                               Operation::kDelete, Operation::kTruncate,
                                               Operation::kRead};

std::string_view to_string(Operation op);
std::optional<Operation> parse_operation(std::string_view name);

// Where a snapshot row stands in the snapshot (Debezium's source.snapshot markers).
enum class SnapshotMark : std::uint8_t {
  kNone,               // not a snapshot row, or a row in the middle of one
  kFirst,              // the first row of the whole snapshot
  kFirstInCollection,  // the first row of a table other than the first
  kLastInCollection,   // the last row of a table other than the last
  kLast,               // the last row of the whole snapshot
};

// One row change. Changes sharing an lsn form one transaction; `seq` orders them inside it.
// Row images are kept as compact JSON text, not as a DOM: most changes are only re-serialized,
// and a parsed tree would cost several allocations per field on the hot path.
struct Change {
  std::uint64_t lsn = 0;
  std::uint32_t seq = 0;
  std::int64_t timestamp_us = 0;  // commit time, microseconds since the Unix epoch
  std::optional<std::uint64_t> txid;
  std::string source;  // name of the originating database/log, may be empty
  std::string entity;  // e.g. "public.orders"
  Operation operation = Operation::kInsert;
  std::string key;  // JSON object of the identifying columns ("{}" when none)
  // An update that changed the identifying columns: the JSON object of the old ones (key-based
  // sinks drop the old key); empty otherwise.
  std::string old_key;
  std::string old_row;  // JSON object, or empty for null
  std::string new_row;  // JSON object, or empty for null
  // Columns whose value did not change and was not sent by the database (PostgreSQL's unchanged
  // TOAST values); they are absent from new_row, and sinks must not read absence as "set to null".
  std::vector<std::string> unchanged_columns;
  // Source-defined resume offset just after this change (byte offset for the JSONL source).
  std::uint64_t offset = 0;
  // The position of this change's own record in the log (0: the source does not know it). `lsn`
  // stays the transaction's commit position, which checkpoints use.
  std::uint64_t event_lsn = 0;
  // The commit position of the transaction before this one (0: unknown), Debezium's
  // "last committed LSN".
  std::uint64_t previous_commit_lsn = 0;
  // The position of the record that begins this change's transaction (0: unknown), which
  // Debezium's PostgreSQL connector puts in the id of the transaction's BEGIN record.
  std::uint64_t begin_lsn = 0;
  SnapshotMark snapshot_mark = SnapshotMark::kNone;
  // The column types of the entity, shared by its changes; null when the source has none.
  std::shared_ptr<const EntitySchema> schema;

  // Approximate memory held by this change; drives the byte-bounded queues.
  std::size_t byte_size() const;
};

// The end of a transaction: every change with this lsn has been emitted before it.
struct TransactionEnd {
  std::uint64_t lsn = 0;
  std::uint64_t offset = 0;  // resume offset just after the transaction
  std::int64_t timestamp_us = 0;
  std::uint64_t segment = 0;  // source-defined identity of the log file `offset` points into
};

// A record the source could not turn into a change (malformed line, lsn going backwards).
// Each consumer applies its own on_error policy: stop, or dead-letter and go on.
struct BadRecord {
  std::string raw;
  std::string reason;
  std::string location;        // e.g. "changes.jsonl:57"
  std::uint64_t last_lsn = 0;  // lsn of the last good change before it
  std::uint64_t offset = 0;    // resume offset just after the record

  std::size_t byte_size() const { return sizeof(BadRecord) + raw.size() + reason.size(); }
};

using SourceEvent = std::variant<Change, TransactionEnd, BadRecord>;

std::size_t byte_size(const SourceEvent& event);

// A batch a consumer hands to its sinks. Immutable once built; shared by all sinks of the consumer.
struct Batch {
  std::uint64_t id = 0;  // increasing per consumer
  std::string consumer;
  std::string source_name;  // the consumer's source, as named in the config
  std::string connector;    // the source's type, e.g. "jsonl", "postgres"
  std::vector<Change> changes;
  std::size_t bytes = 0;
  // The lsn of the last transaction the consumer saw end while the batch was open (0: none): every
  // change of it is in this batch or an earlier one. Sinks that write transaction metadata
  // (Sink::tracks_transactions) close it with it; for them the consumer writes a batch without
  // changes when a transaction ends after its last change went out in an earlier batch.
  std::uint64_t transaction_ended_lsn = 0;
};

using BatchPtr = std::shared_ptr<const Batch>;

}  // namespace cdcd
