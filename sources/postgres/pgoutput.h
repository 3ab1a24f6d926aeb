#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cdcd::postgres {

// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
inline constexpr std::int64_t kPostgresEpochUnixUs = 946684800LL * 1000000;

// Reads big-endian fields of a replication or pgoutput message. After a read past the end,
// every read returns zero and ok() is false.
class ByteReader {
 public:
  explicit ByteReader(std::string_view data) : data_(data) {}

  std::uint8_t u8();
  std::uint16_t u16();
  std::uint32_t u32();
  std::uint64_t u64();
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
  // A NUL-terminated string.
  std::string_view cstring();
  std::string_view bytes(std::size_t count);

  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == data_.size(); }

 private:
  bool have(std::size_t count);

  std::string_view data_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

void put_u64(std::string& out, std::uint64_t value);

// Streaming replication protocol (CopyData payloads).
struct XLogData {
  std::uint64_t start_lsn = 0;
  std::uint64_t wal_end = 0;
  std::string_view message;  // the pgoutput message
};
struct Keepalive {
  std::uint64_t wal_end = 0;
  bool reply_requested = false;
};
std::optional<XLogData> parse_xlog_data(std::string_view copy_data);
std::optional<Keepalive> parse_keepalive(std::string_view copy_data);
// A Standby Status Update ('r'): written, flushed and applied positions.
std::string standby_status_update(std::uint64_t write_lsn, std::uint64_t flush_lsn,
                                  std::uint64_t apply_lsn, std::int64_t now_unix_us,
                                  bool reply_requested);

// pgoutput messages (protocol version 1).
struct BeginMessage {
  std::uint64_t final_lsn = 0;
  std::int64_t commit_time = 0;  // µs since 2000-01-01
  std::uint32_t xid = 0;
};
struct CommitMessage {
  std::uint64_t commit_lsn = 0;
  std::uint64_t end_lsn = 0;
  std::int64_t commit_time = 0;
};
struct RelationColumn {
  bool key = false;
  std::string name;
  std::uint32_t type_oid = 0;
  std::int32_t type_modifier = -1;
};
struct RelationMessage {
  std::uint32_t oid = 0;
  std::string nspname;
  std::string relname;
  char replica_identity = 'd';
  std::vector<RelationColumn> columns;
};
struct TypeMessage {
  std::uint32_t oid = 0;
  std::string nspname;
  std::string name;
};
// One column of a TupleData: 'n' NULL, 'u' unchanged TOAST, 't' text, 'b' binary.
struct TupleValue {
  char kind = 'n';
  std::string_view data;
};
struct TruncateMessage {
  std::vector<std::uint32_t> relation_oids;
};

std::optional<BeginMessage> parse_begin(std::string_view message);
std::optional<CommitMessage> parse_commit(std::string_view message);
std::optional<RelationMessage> parse_relation(std::string_view message);
std::optional<TypeMessage> parse_type(std::string_view message);
std::optional<TruncateMessage> parse_truncate(std::string_view message);
// Reads a TupleData into `values` (reused to avoid allocations); views point into the message.
bool parse_tuple(ByteReader& reader, std::vector<TupleValue>& values);

}  // namespace cdcd::postgres
