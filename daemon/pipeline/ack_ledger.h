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
//
// Memory depends on deliveries only, not on transactions: the ends of transactions that follow
// one delivery collapse into the latest of them (nothing between them needs acknowledging, so
// they complete together), and ends with no delivery outstanding move the frontier at once.
// Used by the consumer thread only.
class AckLedger {
 public:
  using EntryId = std::uint64_t;

  // The default bound on deliveries held (see full()): ~64 bytes each, so at most 1 MiB.
  static constexpr std::size_t kDefaultCapacity = 16384;

  explicit AckLedger(std::optional<Checkpoint> initial = std::nullopt,
                     std::size_t capacity = kDefaultCapacity)
      : frontier_(initial), capacity_(capacity == 0 ? 1 : capacity) {}

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
  // Deliveries held: unacknowledged, or acknowledged behind one that is not.
  std::size_t size() const { return deliveries_.size(); }
  // At its bound: add no delivery until advance() has popped one. Transaction ends are always
  // welcome (they take no room).
  bool full() const { return deliveries_.size() >= capacity_; }
  bool empty() const { return deliveries_.empty(); }

 private:
  struct Delivery {
    std::size_t acks_owed = 0;
    std::int64_t oldest_timestamp_us = 0;
    // The latest transaction end added after this delivery and before the next one.
    std::optional<Checkpoint> end_after;
  };

  // Ids are consecutive, so the delivery of an id is found by its distance from the front.
  Delivery* find(EntryId id);
  bool behind_frontier(const Checkpoint& end) const;

  std::deque<Delivery> deliveries_;
  EntryId front_id_ = 1;  // id of deliveries_.front()
  std::size_t deliveries_in_flight_ = 0;
  std::optional<Checkpoint> frontier_;
  std::size_t capacity_;
};

}  // namespace cdcd
