#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/test_util.h"

namespace cdcd::test {

// Helpers for tests that run the real `cdcd` binary on a config written into a TempDir.

// Scales a wait for slow builds (sanitizers): the factor comes from CDCD_TEST_TIME_SCALE (default
// 1).
std::chrono::milliseconds scaled(std::chrono::milliseconds timeout);

// Writes `yaml` to DIR/NAME and returns the path.
std::string write_config(const TempDir& dir, const std::string& yaml,
                         const std::string& name = "cdcd.yaml");

// Runs bench/generate_changelog.py: `count` changes in transactions of 1-5, lsn strictly increasing
// between transactions, one millisecond of commit time per transaction from `start_time_us`.
void generate_changelog(const std::string& path, int count, int keys, int seed = 7,
                        std::int64_t start_time_us = 1763719200000000);

// One line of a native-format change log (the jsonl source's input, a native sink's output).
struct NativeChange {
  std::uint64_t lsn = 0;
  std::uint32_t seq = 0;
  std::int64_t timestamp_us = 0;
  std::string entity;
  std::string key;  // compact JSON
  std::string operation;
  nlohmann::json old_row;    // null when absent
  nlohmann::json new_row;    // null when absent
  std::uint64_t offset = 0;  // byte offset of the line in its file
  std::uint64_t end = 0;     // byte offset just past its '\n'

  // The same change: position, entity, key, operation and row images.
  bool same_change(const NativeChange& other) const;
  std::string describe() const;
};

struct NativeFile {
  std::vector<NativeChange> changes;
  // Lines that are not a valid change, with their 1-based line numbers ("12: text").
  std::vector<std::string> unparsed;
  bool ends_with_newline = true;
};

NativeFile read_native_file(const std::string& path);

// `{"lsn":N,"commit":true}` and its '\n': ends transaction N of a followed jsonl log at once (else
// it ends when a greater lsn follows).
std::string commit_marker_line(std::uint64_t lsn);
// The last change of the transaction that ends at or after the middle of `changes`: a followed log
// written in two parts split there can end each part with a commit marker for a whole transaction.
const NativeChange& last_change_of_middle_transaction(const std::vector<NativeChange>& changes);
std::uint64_t file_size(const std::string& path);

// The JSON written by the file checkpoint store.
struct CheckpointFile {
  std::uint64_t lsn = 0;
  std::uint64_t offset = 0;
  std::int64_t commit_time_us = 0;
};

// nullopt when the file does not exist or is not a checkpoint.
std::optional<CheckpointFile> read_checkpoint_file(const std::string& path);
// Waits until the checkpoint in `path` reaches `lsn`.
bool wait_for_checkpoint(const std::string& path, std::uint64_t lsn,
                         std::chrono::milliseconds timeout);

struct CommandResult {
  std::optional<int> exit_code;  // nullopt: timed out (the process was killed)
  std::string out;
  std::string err;
};

// Runs `cdcd ARGS...` to completion.
CommandResult run_cdcd(const std::vector<std::string>& args,
                       std::chrono::milliseconds timeout = std::chrono::seconds(120));

// `cdcd run --config CONFIG`, restartable; killed with SIGKILL on destruction if still running.
class DaemonProcess {
 public:
  DaemonProcess(std::string config_path, std::string log_dir);

  void start();
  // Starts it with its stdout redirected to `path` (e.g. a FIFO nobody reads) instead of a file.
  void start_with_stdout(const std::string& path);
  bool running();
  pid_t pid() const;
  // SIGKILL and reap.
  void kill();
  // SIGTERM and wait; the exit code, or nullopt if it did not exit in time (it is then killed).
  std::optional<int> stop(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // Stderr of the current (or last) run.
  std::string stderr_text() const;

 private:
  std::string config_path_;
  std::string log_dir_;
  std::unique_ptr<ChildProcess> child_;
};

// A TCP server on a free loopback port that accepts connections (the kernel completes the
// handshake) but never answers: a server stuck before its first reply.
class SilentTcpServer {
 public:
  SilentTcpServer();
  ~SilentTcpServer();
  SilentTcpServer(const SilentTcpServer&) = delete;
  SilentTcpServer& operator=(const SilentTcpServer&) = delete;

  int port() const { return port_; }
  // Whether a client connected (and waits in the accept queue).
  bool has_waiting_client() const;

 private:
  int fd_ = -1;
  int port_ = 0;
};

// A FIFO at `path` held open for reading and never read: a writer blocks once its buffer is full.
class UnreadFifo {
 public:
  explicit UnreadFifo(std::string path);
  ~UnreadFifo();
  UnreadFifo(const UnreadFifo&) = delete;
  UnreadFifo& operator=(const UnreadFifo&) = delete;

  const std::string& path() const { return path_; }
  // Bytes written and not read so far.
  int buffered_bytes() const;

 private:
  std::string path_;
  int fd_ = -1;
};

// One sample of a Prometheus text exposition.
struct MetricSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

std::vector<MetricSample> parse_metrics(const std::string& exposition);
// The value of the sample called `name` whose labels include `labels`; nullopt when none matches.
std::optional<double> metric_value(const std::vector<MetricSample>& samples,
                                   const std::string& name,
                                   const std::map<std::string, std::string>& labels = {});
// Sum over every sample called `name` whose labels include `labels`.
double metric_sum(const std::vector<MetricSample>& samples, const std::string& name,
                  const std::map<std::string, std::string>& labels = {});

// GET /metrics, parsed; empty when the daemon does not answer.
std::vector<MetricSample> scrape(int port);

}  // namespace cdcd::test
