#include "sources/postgres/snapshot_reader.h"

#include <algorithm>
#include <cstdlib>

#include "sources/postgres/type_catalog.h"

namespace cdcd::postgres {

namespace {

constexpr int kChunkRows = 5000;

Result<std::vector<std::string>> column_names(PgConnection& conn, const std::string& sql,
                                              std::uint32_t oid) {
  auto result = conn.exec_params(sql, {std::to_string(oid)});
  if (!result) return tl::unexpected(result.error());
  std::vector<std::string> names;
  for (int row = 0; row < PQntuples(result->get()); ++row) {
    names.emplace_back(PQgetvalue(result->get(), row, 0));
  }
  return names;
}

// pgoutput leaves out generated columns; so does the snapshot, to give rows the same shape.
constexpr char kColumnsSql[] =
    "SELECT a.attname, a.atttypid, a.atttypmod, t.typname FROM pg_attribute a JOIN pg_type t ON "
    "t.oid = a.atttypid WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped AND "
    "a.attgenerated = '' ORDER BY a.attnum";

}  // namespace

Result<std::vector<std::string>> primary_key_columns(PgConnection& conn, std::uint32_t oid) {
  return column_names(conn,
                      "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = "
                      "i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::oid AND "
                      "i.indisprimary ORDER BY a.attnum",
                      oid);
}

Result<std::vector<std::string>> identity_key_columns(PgConnection& conn, std::uint32_t oid) {
  auto identity = conn.exec_params("SELECT relreplident::text FROM pg_class WHERE oid = $1::oid",
                                   {std::to_string(oid)});
  if (!identity) return tl::unexpected(identity.error());
  std::string kind = first_value(identity->get()).value_or("d");
  if (kind == "n") return std::vector<std::string>{};
  if (kind == "i") {
    return column_names(conn,
                        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = "
                        "i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::oid AND "
                        "i.indisreplident ORDER BY a.attnum",
                        oid);
  }
  if (kind == "f") return column_names(conn, kColumnsSql, oid);
  return primary_key_columns(conn, oid);
}

SnapshotReader::SnapshotReader(PgConnection conn, std::vector<SnapshotTable> tables,
                               Position position, std::shared_ptr<spdlog::logger> log,
                               RowCounter counter)
    : conn_(std::move(conn)),
      tables_(std::move(tables)),
      position_(std::move(position)),
      log_(std::move(log)),
      counter_(std::move(counter)) {}

Status SnapshotReader::open_table() {
  const SnapshotTable& table = tables_[table_index_];
  relation_ = Relation{};
  relation_.entity = table.schema + "." + table.name;
  auto columns = conn_.exec_params(kColumnsSql, {std::to_string(table.oid)});
  if (!columns) return tl::unexpected(columns.error());
  auto key = identity_key_columns(conn_, table.oid);
  if (!key) return tl::unexpected(key.error());
  std::string select_list;
  std::vector<DeclaredColumn> declared_columns;
  CustomTypes custom_types;  // read in the snapshot's transaction, as the stream reads them
  for (int row = 0; row < PQntuples(columns->get()); ++row) {
    std::string name = PQgetvalue(columns->get(), row, 0);
    const auto type_oid =
        static_cast<std::uint32_t>(std::strtoul(PQgetvalue(columns->get(), row, 1), nullptr, 10));
    // Mapped by OID like the stream's columns, so that a snapshot row and a streamed change of
    // the same row look alike.
    const TypeInfo& type = type_of_oid(type_oid);
    if (!is_builtin_type(type_oid) && !custom_types.contains(type_oid)) {
      auto custom = look_up_type(conn_, type_oid);
      if (!custom) return tl::unexpected(custom.error());
      custom_types.emplace(type_oid, std::move(*custom));
    }
    const bool key_column = std::find(key->begin(), key->end(), name) != key->end();
    if (key_column) relation_.key_columns.push_back(relation_.columns.size());
    declared_columns.push_back(
        {name, type_oid,
         static_cast<std::int32_t>(std::strtol(PQgetvalue(columns->get(), row, 2), nullptr, 10)),
         key_column, PQgetvalue(columns->get(), row, 3)});
    if (!select_list.empty()) select_list += ", ";
    select_list += conn_.quote_identifier(name);
    std::string json_name;
    append_json_string(json_name, name);
    json_name += ':';
    relation_.columns.push_back(Column{name, std::move(json_name), &type});
  }
  relation_.schema = make_entity_schema(relation_.entity, declared_columns, custom_types);
  if (select_list.empty()) select_list = "NULL";
  std::string from =
      conn_.quote_identifier(table.schema) + "." + conn_.quote_identifier(table.name);
  auto declared = conn_.exec("DECLARE cdcd_snapshot NO SCROLL CURSOR FOR SELECT " + select_list +
                             " FROM ONLY " + from);
  if (!declared) return tl::unexpected(declared.error());
  cursor_open_ = true;
  table_rows_ = 0;
  table_rows_metric_ = counter_ ? counter_(relation_.entity) : nullptr;
  log_->info("snapshot: reading table {} ({} of {})", relation_.entity, table_index_ + 1,
             tables_.size());
  return ok();
}

// Each row is emitted when the next one is read (or the table or snapshot ends), so that the last
// row of a table and of the snapshot can carry Debezium's markers.
void SnapshotReader::hold(Emitter& out, Change change) {
  if (held_) out.emit(std::move(*held_));
  held_ = std::move(change);
}

Status SnapshotReader::fetch_chunk() {
  auto chunk = conn_.exec("FETCH FORWARD " + std::to_string(kChunkRows) + " FROM cdcd_snapshot");
  if (!chunk) return tl::unexpected(chunk.error());
  chunk_ = std::move(*chunk);
  chunk_row_ = 0;
  return ok();
}

Status SnapshotReader::close_table() {
  if (held_ && held_->entity == relation_.entity && held_->snapshot_mark == SnapshotMark::kNone) {
    held_->snapshot_mark = SnapshotMark::kLastInCollection;
  }
  auto closed = conn_.exec("CLOSE cdcd_snapshot");
  if (!closed) return tl::unexpected(closed.error());
  cursor_open_ = false;
  chunk_.reset();
  log_->info("snapshot: table {} done, {} rows", relation_.entity, table_rows_);
  ++table_index_;
  return ok();
}

Result<bool> SnapshotReader::step(Emitter& out, Deadline deadline) {
  while (true) {
    if (!chunk_) {
      if (table_index_ >= tables_.size()) {
        log_->info("snapshot: complete, {} rows from {} tables", total_rows_, tables_.size());
        if (held_) {
          if (held_->snapshot_mark != SnapshotMark::kFirst) {
            held_->snapshot_mark = SnapshotMark::kLast;
          }
          out.emit(std::move(*held_));
          held_.reset();
        }
        auto committed = conn_.exec("COMMIT");
        if (!committed) return tl::unexpected(committed.error());
        conn_.close();
        return true;
      }
      if (!cursor_open_) {
        if (auto opened = open_table(); !opened) return tl::unexpected(opened.error());
      }
      if (auto fetched = fetch_chunk(); !fetched) return tl::unexpected(fetched.error());
      if (PQntuples(chunk_.get()) == 0) {
        if (auto closed = close_table(); !closed) return tl::unexpected(closed.error());
      }
      continue;
    }
    const int rows = PQntuples(chunk_.get());
    const int width = PQnfields(chunk_.get());
    values_.resize(static_cast<std::size_t>(relation_.columns.size()));
    while (chunk_row_ < rows) {
      if (!out.wants_more() || std::chrono::steady_clock::now() >= deadline) return false;
      for (int column = 0; column < width && column < static_cast<int>(values_.size()); ++column) {
        bool null = PQgetisnull(chunk_.get(), chunk_row_, column);
        values_[column].kind = null ? 'n' : 't';
        values_[column].data =
            null ? std::string_view()
                 : std::string_view(PQgetvalue(chunk_.get(), chunk_row_, column),
                                    PQgetlength(chunk_.get(), chunk_row_, column));
      }
      Change change;
      change.lsn = position_.lsn;
      change.seq = seq_++;
      change.timestamp_us = position_.timestamp_us;
      change.source = position_.source;
      change.entity = relation_.entity;
      change.operation = Operation::kRead;
      change.event_lsn = position_.lsn;
      change.schema = relation_.schema;
      append_row(change.key, relation_, values_, &relation_.key_columns, nullptr);
      append_row(change.new_row, relation_, values_, nullptr, nullptr);
      if (total_rows_ == 0) {
        change.snapshot_mark = SnapshotMark::kFirst;
      } else if (table_rows_ == 0) {
        change.snapshot_mark = SnapshotMark::kFirstInCollection;
      }
      hold(out, std::move(change));
      ++chunk_row_;
      ++table_rows_;
      ++total_rows_;
      if (table_rows_metric_) table_rows_metric_->Increment();
    }
    chunk_.reset();
  }
}

}  // namespace cdcd::postgres
