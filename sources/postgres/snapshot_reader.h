#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <spdlog/logger.h>

#include "daemon/core/result.h"
#include "daemon/plugin/source.h"
#include "sources/postgres/pg_connection.h"
#include "sources/postgres/relation_cache.h"

namespace cdcd::postgres {

struct SnapshotTable {
  std::uint32_t oid = 0;
  std::string schema;
  std::string name;
};

// Key columns of a table as pgoutput's Relation message flags them: the primary key for DEFAULT
// identity, the index's columns for USING INDEX, every column for FULL, none for NOTHING.
Result<std::vector<std::string>> identity_key_columns(PgConnection& conn, std::uint32_t oid);
// The primary-key columns of a table (empty when it has none).
Result<std::vector<std::string>> primary_key_columns(PgConnection& conn, std::uint32_t oid);

// Reads every table of the initial snapshot through a cursor, chunk by chunk, and emits each row
// as a `read` change. `conn` must be in a transaction that imported the slot's exported snapshot.
class SnapshotReader {
 public:
  struct Position {
    std::uint64_t lsn = 0;  // every row carries it (just before the slot's consistent point)
    std::int64_t timestamp_us = 0;  // when the snapshot was taken
    std::string source;             // database name
  };
  using RowCounter = std::function<prometheus::Counter*(const std::string& table)>;

  SnapshotReader(PgConnection conn, std::vector<SnapshotTable> tables, Position position,
                 std::shared_ptr<spdlog::logger> log, RowCounter counter);

  // Emits rows while out.wants_more() and before the deadline. True once every table is read;
  // the caller then emits the TransactionEnd.
  Result<bool> step(Emitter& out, Deadline deadline);

  std::uint64_t rows() const { return total_rows_; }

 private:
  Status open_table();
  Status fetch_chunk();
  Status close_table();
  void hold(Emitter& out, Change change);

  PgConnection conn_;
  std::vector<SnapshotTable> tables_;
  Position position_;
  std::shared_ptr<spdlog::logger> log_;
  RowCounter counter_;

  std::size_t table_index_ = 0;
  bool cursor_open_ = false;
  Relation relation_;
  prometheus::Counter* table_rows_metric_ = nullptr;
  PgResult chunk_;
  int chunk_row_ = 0;
  std::uint64_t table_rows_ = 0;
  std::uint64_t total_rows_ = 0;
  std::uint32_t seq_ = 0;
  std::vector<TupleValue> values_;
  std::optional<Change> held_;
};

}  // namespace cdcd::postgres
