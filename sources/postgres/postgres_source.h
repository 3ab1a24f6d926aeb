#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "daemon/plugin/source.h"
#include "sources/postgres/pg_connection.h"
#include "sources/postgres/relation_cache.h"
#include "sources/postgres/slot_budget.h"
#include "sources/postgres/slot_plan.h"
#include "sources/postgres/snapshot_reader.h"
#include "sources/postgres/transaction_buffer.h"

namespace cdcd::postgres {

struct PostgresSourceOptions {
  std::string dsn;
  std::string slot;
  std::string publication;
  bool create_slot = true;
  bool create_publication = true;
  std::vector<std::string> tables;  // empty: all tables
  bool initial_snapshot = false;
  std::chrono::milliseconds heartbeat{10000};  // 0: no heartbeats
  std::chrono::milliseconds status_interval{10000};
  std::uint64_t max_transaction_bytes = 64ull << 20;
  std::string spill_dir;  // empty: $TMPDIR or /tmp
  // How long start() waits for a slot held by a vanished walsender to become free.
  std::chrono::milliseconds slot_busy_grace{10000};
};

// `type: postgres`: logical replication from a slot with pgoutput (protocol version 1).
//
// The stream is read on the source thread. Each transaction's messages are buffered (in memory up
// to max_transaction_bytes, beyond in a spill file) until its Commit gives the commit LSN that
// every change carries; then they are decoded and emitted in order, resumably when the pipeline
// pushes back. While the pipeline is full nothing more is read, but status updates keep going out
// every status_interval so the server does not time the connection out.
class PostgresSource : public Source {
 public:
  PostgresSource(PostgresSourceOptions options, SourceContext context);
  ~PostgresSource() override;

  Status start(const StartPosition& from) override;
  Result<PollOutcome> poll(Emitter& out, Deadline deadline) override;
  void commit(std::uint64_t lsn) override;
  void stop() override;
  std::uint64_t bytes_behind(std::uint64_t lsn, std::uint64_t offset) const override;
  bool connected() const override { return connected_.load(); }
  void interrupt() override { interrupted_ = true; }
  bool can_rewind() const override { return false; }
  bool emits_reads() const override { return options_.initial_snapshot; }

 private:
  using Clock = std::chrono::steady_clock;

  struct PendingTransaction {
    bool active = false;
    bool skip = false;
    std::uint64_t lsn = 0;
    std::int64_t timestamp_us = 0;
    std::uint32_t xid = 0;
    std::uint64_t begin_lsn = 0;  // where its Begin message is in the WAL
    std::uint32_t seq = 0;
  };

  // start() steps.
  Status check_server();
  Result<std::vector<SnapshotTable>> resolve_tables();
  Status ensure_publication(const std::vector<SnapshotTable>& tables);
  Result<SlotFacts> inspect_slot();
  Status drop_slot(const SlotFacts& slot, std::uint64_t first_lsn);
  Status create_slot_and_snapshot();
  Result<std::vector<SnapshotTable>> published_tables(PgConnection& conn);

  Status connect_replication();
  Status start_streaming(bool slot_busy_is_permanent);
  Result<PgConnection*> sql();
  // Makes the connection's statements end when interrupt() is called.
  PgConnection interruptible(PgConnection conn);

  // poll() parts.
  Result<PollOutcome> poll_disconnected(Emitter& out, Deadline deadline);
  Result<PollOutcome> poll_snapshot(Emitter& out, Deadline deadline);
  Result<PollOutcome> poll_stream(Emitter& out, Deadline deadline);
  Status handle_copy_data(std::string_view data);
  Status handle_message(std::string_view message);
  // Emits the committed transaction; false when the pipeline pushed back before its end.
  Result<bool> emit_pending(Emitter& out);
  Status maintain(Clock::time_point now);
  Status send_status(bool reply_requested);
  void monitor();
  Result<PollOutcome> disconnected(const Error& error);

  PostgresSourceOptions options_;
  SourceContext context_;
  std::shared_ptr<spdlog::logger> log_;
  std::string where_;  // host/port/dbname, for logs
  prometheus::Gauge* retained_wal_ = nullptr;
  std::unique_ptr<SlotBudgetMetrics> slot_budget_;
  prometheus::Family<prometheus::Counter>* snapshot_rows_ = nullptr;

  PgConnection sql_;   // catalog lookups, metrics, heartbeats
  PgConnection repl_;  // replication=database, in COPY BOTH while streaming
  bool streaming_ = false;
  std::string database_;
  int server_version_ = 0;  // server_version_num
  std::unique_ptr<SnapshotReader> snapshot_;
  SnapshotReader::Position snapshot_position_;

  ChangeDecoder decoder_;
  TransactionBuffer buffer_;
  bool in_transaction_ = false;
  std::uint32_t begin_xid_ = 0;
  std::uint64_t begin_lsn_ = 0;
  PendingTransaction pending_;
  std::vector<Change> decoded_;
  // A message of the pending transaction whose decoding failed for now, to decode again first.
  std::optional<std::string> undecoded_;

  std::uint64_t next_lsn_ = 0;  // transactions committed before it are not delivered again
  std::atomic<std::uint64_t> committed_lsn_{0};
  std::uint64_t sent_flush_lsn_ = 0;
  std::uint64_t received_lsn_ = 0;
  std::uint64_t message_lsn_ = 0;  // WAL position of the message being handled
  std::atomic<std::uint64_t> head_lsn_{0};
  std::atomic<bool> connected_{false};
  // Set by interrupt(): the connections' statements are cancelled, and start() and poll() return.
  std::atomic<bool> interrupted_{false};

  Clock::time_point next_status_{};
  Clock::time_point next_monitor_{};
  Clock::time_point last_activity_{};
  Clock::time_point next_reconnect_{};
  std::chrono::milliseconds backoff_{0};
  std::string last_error_;
  std::minstd_rand jitter_{std::random_device{}()};
  Clock::time_point next_monitor_warning_{};
};

}  // namespace cdcd::postgres
