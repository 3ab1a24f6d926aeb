#include "daemon/pipeline/ack_ledger.h"

namespace cdcd {

AckLedger::EntryId AckLedger::add_delivery(std::size_t acks, std::int64_t oldest_timestamp_us) {
  deliveries_.push_back(Delivery{acks, oldest_timestamp_us, std::nullopt});
  if (acks > 0) ++deliveries_in_flight_;
  return front_id_ + deliveries_.size() - 1;
}

AckLedger::Delivery* AckLedger::find(EntryId id) {
  if (id < front_id_ || id - front_id_ >= deliveries_.size()) return nullptr;
  return &deliveries_[id - front_id_];
}

void AckLedger::expect_more(EntryId id, std::size_t acks) {
  if (Delivery* delivery = find(id)) {
    if (delivery->acks_owed == 0 && acks > 0) ++deliveries_in_flight_;
    delivery->acks_owed += acks;
  }
}

void AckLedger::acknowledge(EntryId id) {
  Delivery* delivery = find(id);
  if (delivery == nullptr || delivery->acks_owed == 0) return;
  if (--delivery->acks_owed == 0) --deliveries_in_flight_;
}

bool AckLedger::behind_frontier(const Checkpoint& end) const {
  return frontier_ && end.lsn <= frontier_->lsn;
}

void AckLedger::add_transaction_end(const Checkpoint& end) {
  if (behind_frontier(end)) return;
  if (deliveries_.empty()) {
    frontier_ = end;
    return;
  }
  auto& end_after = deliveries_.back().end_after;
  if (!end_after || end.lsn > end_after->lsn) end_after = end;
}

const std::optional<Checkpoint>& AckLedger::advance() {
  while (!deliveries_.empty() && deliveries_.front().acks_owed == 0) {
    const auto& end = deliveries_.front().end_after;
    if (end && !behind_frontier(*end)) frontier_ = end;
    deliveries_.pop_front();
    ++front_id_;
  }
  return frontier_;
}

std::optional<std::int64_t> AckLedger::oldest_unacknowledged_timestamp() const {
  for (const auto& delivery : deliveries_) {
    if (delivery.acks_owed > 0) return delivery.oldest_timestamp_us;
  }
  return std::nullopt;
}

}  // namespace cdcd
