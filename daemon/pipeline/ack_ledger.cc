#include "daemon/pipeline/ack_ledger.h"

namespace cdcd {

AckLedger::EntryId AckLedger::add_delivery(std::size_t acks, std::int64_t oldest_timestamp_us) {
  Entry entry;
  entry.id = next_id_++;
  entry.acks_owed = acks;
  entry.oldest_timestamp_us = oldest_timestamp_us;
  entries_.push_back(entry);
  if (acks > 0) ++deliveries_in_flight_;
  return entry.id;
}

AckLedger::Entry* AckLedger::find(EntryId id) {
  // Entries are sorted by id and acknowledgements mostly concern the oldest ones.
  for (auto& entry : entries_) {
    if (!entry.is_transaction_end && entry.id == id) return &entry;
  }
  return nullptr;
}

void AckLedger::expect_more(EntryId id, std::size_t acks) {
  if (Entry* entry = find(id)) {
    if (entry->acks_owed == 0 && acks > 0) ++deliveries_in_flight_;
    entry->acks_owed += acks;
  }
}

void AckLedger::acknowledge(EntryId id) {
  Entry* entry = find(id);
  if (entry == nullptr || entry->acks_owed == 0) return;
  if (--entry->acks_owed == 0) --deliveries_in_flight_;
}

void AckLedger::add_transaction_end(const Checkpoint& end) {
  if (frontier_ && end.lsn <= frontier_->lsn) return;
  Entry entry;
  entry.is_transaction_end = true;
  entry.end = end;
  entries_.push_back(entry);
}

const std::optional<Checkpoint>& AckLedger::advance() {
  while (!entries_.empty()) {
    const Entry& front = entries_.front();
    if (front.is_transaction_end) {
      if (!frontier_ || front.end.lsn > frontier_->lsn) frontier_ = front.end;
    } else if (front.acks_owed > 0) {
      break;
    }
    entries_.pop_front();
  }
  return frontier_;
}

std::optional<std::int64_t> AckLedger::oldest_unacknowledged_timestamp() const {
  for (const auto& entry : entries_) {
    if (!entry.is_transaction_end && entry.acks_owed > 0) return entry.oldest_timestamp_us;
  }
  return std::nullopt;
}

}  // namespace cdcd
