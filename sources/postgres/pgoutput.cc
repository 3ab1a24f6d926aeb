#include "sources/postgres/pgoutput.h"

namespace cdcd::postgres {

bool ByteReader::have(std::size_t count) {
  if (ok_ && data_.size() - pos_ >= count) return true;
  ok_ = false;
  return false;
}

std::uint8_t ByteReader::u8() {
  if (!have(1)) return 0;
  return static_cast<std::uint8_t>(data_[pos_++]);
}

std::uint16_t ByteReader::u16() {
  std::uint16_t high = u8();
  return static_cast<std::uint16_t>((high << 8) | u8());
}

std::uint32_t ByteReader::u32() {
  std::uint32_t high = u16();
  return (high << 16) | u16();
}

std::uint64_t ByteReader::u64() {
  std::uint64_t high = u32();
  return (high << 32) | u32();
}

std::string_view ByteReader::cstring() {
  if (!ok_) return {};
  auto end = data_.find('\0', pos_);
  if (end == std::string_view::npos) {
    ok_ = false;
    return {};
  }
  std::string_view text = data_.substr(pos_, end - pos_);
  pos_ = end + 1;
  return text;
}

std::string_view ByteReader::bytes(std::size_t count) {
  if (!have(count)) return {};
  std::string_view view = data_.substr(pos_, count);
  pos_ += count;
  return view;
}

void put_u64(std::string& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((value >> shift) & 0xff);
}

std::optional<XLogData> parse_xlog_data(std::string_view copy_data) {
  ByteReader reader(copy_data);
  if (reader.u8() != 'w') return std::nullopt;
  XLogData data;
  data.start_lsn = reader.u64();
  data.wal_end = reader.u64();
  reader.u64();  // server clock
  if (!reader.ok()) return std::nullopt;
  data.message = copy_data.substr(25);
  return data;
}

std::optional<Keepalive> parse_keepalive(std::string_view copy_data) {
  ByteReader reader(copy_data);
  if (reader.u8() != 'k') return std::nullopt;
  Keepalive keepalive;
  keepalive.wal_end = reader.u64();
  reader.u64();  // server clock
  keepalive.reply_requested = reader.u8() != 0;
  if (!reader.ok()) return std::nullopt;
  return keepalive;
}

std::string standby_status_update(std::uint64_t write_lsn, std::uint64_t flush_lsn,
                                  std::uint64_t apply_lsn, std::int64_t now_unix_us,
                                  bool reply_requested) {
  std::string message;
  message.reserve(34);
  message += 'r';
  put_u64(message, write_lsn);
  put_u64(message, flush_lsn);
  put_u64(message, apply_lsn);
  put_u64(message, static_cast<std::uint64_t>(now_unix_us - kPostgresEpochUnixUs));
  message += static_cast<char>(reply_requested ? 1 : 0);
  return message;
}

std::optional<BeginMessage> parse_begin(std::string_view message) {
  ByteReader reader(message);
  reader.u8();
  BeginMessage begin;
  begin.final_lsn = reader.u64();
  begin.commit_time = reader.i64();
  begin.xid = reader.u32();
  if (!reader.ok()) return std::nullopt;
  return begin;
}

std::optional<CommitMessage> parse_commit(std::string_view message) {
  ByteReader reader(message);
  reader.u8();
  reader.u8();  // flags, unused
  CommitMessage commit;
  commit.commit_lsn = reader.u64();
  commit.end_lsn = reader.u64();
  commit.commit_time = reader.i64();
  if (!reader.ok()) return std::nullopt;
  return commit;
}

std::optional<RelationMessage> parse_relation(std::string_view message) {
  ByteReader reader(message);
  reader.u8();
  RelationMessage relation;
  relation.oid = reader.u32();
  relation.nspname = reader.cstring();
  relation.relname = reader.cstring();
  relation.replica_identity = static_cast<char>(reader.u8());
  std::uint16_t count = reader.u16();
  relation.columns.reserve(count);
  for (std::uint16_t i = 0; i < count && reader.ok(); ++i) {
    RelationColumn column;
    column.key = (reader.u8() & 1) != 0;
    column.name = reader.cstring();
    column.type_oid = reader.u32();
    column.type_modifier = static_cast<std::int32_t>(reader.u32());
    relation.columns.push_back(std::move(column));
  }
  if (!reader.ok()) return std::nullopt;
  // pg_catalog is sent as an empty namespace.
  if (relation.nspname.empty()) relation.nspname = "pg_catalog";
  return relation;
}

std::optional<TypeMessage> parse_type(std::string_view message) {
  ByteReader reader(message);
  reader.u8();
  TypeMessage type;
  type.oid = reader.u32();
  type.nspname = reader.cstring();
  type.name = reader.cstring();
  if (!reader.ok()) return std::nullopt;
  return type;
}

std::optional<TruncateMessage> parse_truncate(std::string_view message) {
  ByteReader reader(message);
  reader.u8();
  std::uint32_t count = reader.u32();
  reader.u8();  // options: CASCADE, RESTART IDENTITY
  TruncateMessage truncate;
  for (std::uint32_t i = 0; i < count && reader.ok(); ++i) {
    truncate.relation_oids.push_back(reader.u32());
  }
  if (!reader.ok()) return std::nullopt;
  return truncate;
}

bool parse_tuple(ByteReader& reader, std::vector<TupleValue>& values) {
  std::uint16_t count = reader.u16();
  values.resize(count);
  for (std::uint16_t i = 0; i < count && reader.ok(); ++i) {
    TupleValue& value = values[i];
    value.kind = static_cast<char>(reader.u8());
    value.data = {};
    if (value.kind == 't' || value.kind == 'b') {
      value.data = reader.bytes(reader.u32());
    } else if (value.kind != 'n' && value.kind != 'u') {
      return false;
    }
  }
  return reader.ok();
}

}  // namespace cdcd::postgres
