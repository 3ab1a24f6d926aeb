#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>

#include "daemon/plugin/checkpoint.h"

namespace cdcd {

// The in-order record of what a consumer has handed to its sinks, from which the checkpoint
// frontier follows: the end of the latest transaction such that it, and everything before it,
// has been acknowledged by every sink. A transaction may span batches and a batch may hold many
// transactions; the frontier only ever moves to a transaction's end, and only forward.
// Used by the consumer thread only.
class AckLedger {
 public:
  using EntryId = std::uint64_t;

  explicit AckLedger(std::optional<Checkpoint> initial = std::nullopt) : frontier_(initial) {}

  // A unit of delivery (a batch, a dead letter) that `acks` acknowledgements will complete.
  // `oldest_timestamp_us` is the commit time of its oldest change (for lag).
  EntryId add_delivery(std::size_t acks, std::int64_t oldest_timestamp_us);
  // More acknowledgements owed by an existing delivery (e.g. a dead letter for a rejected change).
  void expect_more(EntryId id, std::size_t acks);
  void acknowledge(EntryId id);

  // A transaction ended here: every change of it was added before this call.
  void add_transaction_end(const Checkpoint& end);

  // Pops the completed prefix; returns the frontier (nullopt before the first completed
  // transaction).
  const std::optional<Checkpoint>& advance();
  const std::optional<Checkpoint>& frontier() const { return frontier_; }

  // Commit time of the oldest change not yet acknowledged by every sink.
  std::optional<std::int64_t> oldest_unacknowledged_timestamp() const;
  std::size_t deliveries_in_flight() const { return deliveries_in_flight_; }
  bool empty() const { return entries_.empty(); }

 private:
  struct Entry {
    bool is_transaction_end = false;
    EntryId id = 0;
    std::size_t acks_owed = 0;
    std::int64_t oldest_timestamp_us = 0;
    Checkpoint end;
  };

  Entry* find(EntryId id);

  std::deque<Entry> entries_;
  EntryId next_id_ = 1;
  std::size_t deliveries_in_flight_ = 0;
  std::optional<Checkpoint> frontier_;
};

}  // namespace cdcd
