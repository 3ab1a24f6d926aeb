#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cdcd {

// A consumer's durable position: the end of transaction `lsn`, every change of which (and of every
// earlier transaction) has been acknowledged by all sinks of the consumer.
struct Checkpoint {
  std::uint64_t lsn = 0;
  std::uint64_t offset = 0;         // source-defined resume offset just after that transaction
  std::int64_t commit_time_us = 0;  // commit time of that transaction
  std::int64_t saved_at_us = 0;     // wall-clock time the checkpoint was written
  // Source-defined identity of the log file `offset` points into (the JSONL source: its inode),
  // so that a restart after rotation finds the file the consumer was reading; 0 when unknown.
  std::uint64_t segment = 0;
};

// What one consumer needs from its source.
struct ConsumerStart {
  std::string consumer;
  std::uint64_t first_lsn = 0;           // changes with lsn >= first_lsn are wanted
  std::int64_t first_timestamp_us = 0;   // and committed at or after this (`start: {timestamp}`)
  std::optional<Checkpoint> checkpoint;  // the consumer's checkpoint, when it has one
};

// Where a source must start: the lowest position any of its consumers still needs.
struct StartPosition {
  std::uint64_t first_lsn = 0;  // changes with lsn >= first_lsn are wanted
  // When set, a previous run checkpointed here (first_lsn == resume->lsn + 1): the source may seek
  // to resume->offset instead of scanning, after verifying that the offset still fits its log.
  bool has_resume = false;
  Checkpoint resume;
  // Each consumer's own need (empty when the caller is not the daemon, e.g. a test or the CLI).
  // A source that cannot serve every position (a PostgreSQL slot keeps only what follows its
  // confirmed position) uses it to refuse a start that would lose a consumer's changes, naming the
  // consumer, and to know whether any consumer's checkpoint depends on what it still holds.
  std::vector<ConsumerStart> consumers;
};

}  // namespace cdcd
