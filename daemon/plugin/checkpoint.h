#pragma once

#include <cstdint>

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

// Where a source must start: the lowest position any of its consumers still needs.
struct StartPosition {
  std::uint64_t first_lsn = 0;  // changes with lsn >= first_lsn are wanted
  // When set, a previous run checkpointed here (first_lsn == resume->lsn + 1): the source may seek
  // to resume->offset instead of scanning, after verifying that the offset still fits its log.
  bool has_resume = false;
  Checkpoint resume;
};

}  // namespace cdcd
