#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "daemon/config/node.h"
#include "daemon/plugin/registry.h"
#include "daemon/plugin/source.h"
#include "sources/jsonl/line_splitter.h"

namespace cdcd {

struct JsonlSourceOptions {
  std::string path;  // as configured; relative paths resolve against the working directory
  bool follow = false;
  std::chrono::milliseconds poll_interval{100};
  std::uint64_t max_line_bytes = 16 << 20;
  // Glob naming the files a rotation renames `path` to; empty: "<path>.*".
  std::string rotated;
};

// Reads a JSONL change log (docs/sources/jsonl.md): one change per line, changes sharing an lsn
// form a transaction, which ends when a greater lsn or a commit marker follows (or at the end of
// the file without `follow`). Replays the file to its end, or with `follow` tails it, surviving
// truncation and rotation. Resumes at a checkpoint's byte offset after checking that it still ends
// the checkpointed line, in the rotated file holding it if the log was rotated since.
class JsonlSource final : public Source {
 public:
  JsonlSource(JsonlSourceOptions options, SourceContext context);
  ~JsonlSource() override;
  JsonlSource(const JsonlSource&) = delete;
  JsonlSource& operator=(const JsonlSource&) = delete;

  Status start(const StartPosition& from) override;
  Result<PollOutcome> poll(Emitter& out, Deadline deadline) override;
  void stop() override;
  std::uint64_t bytes_behind(std::uint64_t lsn, std::uint64_t offset) const override;
  bool connected() const override { return connected_.load(); }

  // An open log file (defined in the .cc).
  struct LogFile;

 private:
  enum class Step { kProgress, kIdle };

  Status open_file();
  void close_file();
  void adopt(LogFile&& file);
  void position_at_start();
  bool resume_in_a_rotated_file();
  void scan_from_the_oldest_file_needed();
  void read_from(std::uint64_t offset);
  std::vector<LogFile> rotated_files(ino_t also_excluded);
  std::optional<LogFile> next_rotated_file();
  Result<Step> step();
  Result<Step> at_end_of_data();
  Result<Step> follow_file_changes();
  Result<Step> reread_truncated_file();
  Result<Step> switch_to_next_file();
  void handle_line(const RawLine& line);
  // `event` holds a Change.
  void handle_change(SourceEvent&& event, std::string_view raw, std::uint64_t end_offset);
  void handle_commit_marker(std::uint64_t lsn, std::string_view raw, std::uint64_t end_offset);
  bool continues_the_checkpoint(std::uint64_t lsn);
  void reach_first();
  void before_first();
  void report_bad(std::string_view raw, std::string reason, std::uint64_t end_offset);
  void close_transaction();
  void push(SourceEvent&& event);
  bool flush_pending();
  PollOutcome held_back();
  void refresh_file_size_when_due(std::chrono::steady_clock::time_point now);
  void refresh_file_size(std::chrono::steady_clock::time_point now);
  void refresh_head();
  void set_head_lsn(std::uint64_t lsn);
  std::string location();
  spdlog::logger& log() const;

  JsonlSourceOptions options_;
  SourceContext context_;
  StartPosition from_;
  LineSplitter lines_;

  int fd_ = -1;
  std::string file_name_;  // the file being read: the path, or a rotated file
  dev_t device_ = 0;
  ino_t inode_ = 0;
  std::uint64_t read_start_ = 0;                     // offset the current file was first read from
  std::uint64_t lines_read_ = 0;                     // lines consumed since read_start_
  std::optional<std::uint64_t> lines_before_start_;  // counted only when a report needs it
  bool positioned_ = false;  // start position applied (the file may appear only later)
  bool ended_ = false;
  // Set when the checkpointed position could not be found: the first change read must not lie
  // beyond it, or the changes in between are missing.
  bool must_continue_checkpoint_ = false;
  std::optional<Error> failure_;  // stops the source (and so its consumers)

  // Transactions and ordering.
  bool have_lsn_ = false;
  std::uint64_t last_lsn_ = 0;  // lsn of the latest transaction, emitted or skipped
  bool last_closed_ = false;    // that transaction has ended: its lsn may not come again
  bool txn_open_ = false;       // changes of last_lsn_ emitted, TransactionEnd not yet
  std::uint64_t txn_end_offset_ = 0;
  std::uint64_t txn_segment_ = 0;
  std::int64_t txn_timestamp_us_ = 0;
  bool reached_first_ = true;  // false while skipping what precedes from_.first_lsn
  // Bad records met while skipping: reported unless a change below the start follows them.
  std::vector<BadRecord> held_bad_;
  std::uint64_t read_lsn_ = 0;
  std::uint64_t head_lsn_ = 0;

  // Events not yet taken by a backpressured emitter.
  Emitter* out_ = nullptr;
  std::vector<SourceEvent> pending_;
  std::size_t pending_head_ = 0;

  std::chrono::steady_clock::time_point last_stat_{};
  std::uint64_t head_checked_size_ = 0;
  std::atomic<std::uint64_t> file_size_{0};
  std::atomic<bool> connected_{false};
};

// The `jsonl` factory: reads and checks the options, reports problems to the config's
// diagnostics and returns nullptr after any. No I/O.
std::unique_ptr<Source> make_jsonl_source(config::Node& options, const SourceContext& context);

void register_source_jsonl(PluginRegistry& registry);

}  // namespace cdcd
