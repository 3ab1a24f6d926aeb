#include "daemon/pipeline/ack_ledger.h"

#include <gtest/gtest.h>

namespace cdcd {
namespace {

Checkpoint end_of(std::uint64_t lsn) {
  return Checkpoint{lsn, lsn * 100, static_cast<std::int64_t>(lsn) * 1000, 0};
}

// Pops what is complete, as the consumer does before reading the frontier.
std::uint64_t frontier_lsn(AckLedger& ledger) {
  const auto& frontier = ledger.advance();
  return frontier ? frontier->lsn : 0;
}

TEST(AckLedgerTest, NoFrontierBeforeAnyTransactionEnds) {
  AckLedger ledger;
  auto batch = ledger.add_delivery(1, 10);
  ledger.acknowledge(batch);
  EXPECT_FALSE(ledger.advance().has_value());
  EXPECT_FALSE(ledger.frontier().has_value());
}

TEST(AckLedgerTest, FrontierMovesOnlyToTransactionEnds) {
  AckLedger ledger;
  // Transaction 5 spans two batches; its end comes after the second.
  auto first = ledger.add_delivery(1, 10);
  ledger.acknowledge(first);
  EXPECT_FALSE(ledger.advance().has_value()) << "half a transaction is not a checkpoint";
  auto second = ledger.add_delivery(1, 11);
  ledger.add_transaction_end(end_of(5));
  EXPECT_FALSE(ledger.advance().has_value()) << "second half not acknowledged yet";
  ledger.acknowledge(second);
  ASSERT_TRUE(ledger.advance().has_value());
  EXPECT_EQ(ledger.frontier()->lsn, 5u);
  EXPECT_EQ(ledger.frontier()->offset, 500u);
  EXPECT_EQ(ledger.frontier()->commit_time_us, 5000);
  EXPECT_TRUE(ledger.empty());
}

TEST(AckLedgerTest, FrontierNeedsEverySinkOfADelivery) {
  AckLedger ledger;
  auto batch = ledger.add_delivery(3, 10);
  ledger.add_transaction_end(end_of(1));
  ledger.acknowledge(batch);
  ledger.acknowledge(batch);
  EXPECT_FALSE(ledger.advance().has_value());
  EXPECT_EQ(ledger.deliveries_in_flight(), 1u);
  ledger.acknowledge(batch);
  EXPECT_EQ(frontier_lsn(ledger), 1u);
  EXPECT_EQ(ledger.deliveries_in_flight(), 0u);
}

TEST(AckLedgerTest, OutOfOrderAcknowledgementsWaitForTheContiguousPrefix) {
  AckLedger ledger;
  auto b1 = ledger.add_delivery(1, 10);
  ledger.add_transaction_end(end_of(1));
  auto b2 = ledger.add_delivery(1, 20);
  ledger.add_transaction_end(end_of(2));
  auto b3 = ledger.add_delivery(1, 30);
  ledger.add_transaction_end(end_of(3));

  ledger.acknowledge(b3);
  ledger.acknowledge(b2);
  EXPECT_FALSE(ledger.advance().has_value()) << "batch 1 still unacknowledged";
  EXPECT_EQ(ledger.deliveries_in_flight(), 1u);
  ledger.acknowledge(b1);
  EXPECT_EQ(frontier_lsn(ledger), 3u);
  EXPECT_TRUE(ledger.empty());
}

TEST(AckLedgerTest, StopsAtTheFirstUnacknowledgedDelivery) {
  AckLedger ledger;
  auto b1 = ledger.add_delivery(1, 10);
  ledger.add_transaction_end(end_of(1));
  auto b2 = ledger.add_delivery(1, 20);
  ledger.add_transaction_end(end_of(2));
  auto b3 = ledger.add_delivery(1, 30);
  ledger.add_transaction_end(end_of(3));
  ledger.acknowledge(b1);
  ledger.acknowledge(b3);
  EXPECT_EQ(frontier_lsn(ledger), 1u);
  ledger.acknowledge(b2);
  EXPECT_EQ(frontier_lsn(ledger), 3u);
}

TEST(AckLedgerTest, ManyTransactionsInOneBatch) {
  AckLedger ledger;
  auto batch = ledger.add_delivery(1, 10);
  ledger.add_transaction_end(end_of(1));
  ledger.add_transaction_end(end_of(2));
  ledger.add_transaction_end(end_of(3));
  EXPECT_FALSE(ledger.advance().has_value());
  ledger.acknowledge(batch);
  EXPECT_EQ(frontier_lsn(ledger), 3u);
}

TEST(AckLedgerTest, ExpectMoreHoldsTheFrontierUntilTheDeadLetterIsAcknowledged) {
  AckLedger ledger;
  auto batch = ledger.add_delivery(1, 10);
  ledger.add_transaction_end(end_of(1));
  // The sink rejected a change of the batch: a dead letter is owed before the batch is done.
  ledger.expect_more(batch, 1);
  ledger.acknowledge(batch);  // the sink's own acknowledgement
  EXPECT_FALSE(ledger.advance().has_value());
  EXPECT_EQ(ledger.deliveries_in_flight(), 1u);
  ledger.acknowledge(batch);  // the dead-letter sink's
  EXPECT_EQ(frontier_lsn(ledger), 1u);
  EXPECT_EQ(ledger.deliveries_in_flight(), 0u);
}

TEST(AckLedgerTest, ExpectMoreAfterFullAcknowledgementCountsInFlightAgain) {
  AckLedger ledger;
  auto batch = ledger.add_delivery(1, 10);
  auto later = ledger.add_delivery(1, 20);
  ledger.add_transaction_end(end_of(1));
  ledger.acknowledge(batch);
  ledger.expect_more(batch, 1);
  EXPECT_EQ(ledger.deliveries_in_flight(), 2u);
  ledger.acknowledge(later);
  EXPECT_FALSE(ledger.advance().has_value());
  ledger.acknowledge(batch);
  EXPECT_EQ(frontier_lsn(ledger), 1u);
}

TEST(AckLedgerTest, FilteredTransactionsAdvanceTheFrontier) {
  AckLedger ledger;
  // Transactions 1..3 had no change this consumer wants: only their ends are recorded.
  ledger.add_transaction_end(end_of(1));
  ledger.add_transaction_end(end_of(2));
  EXPECT_EQ(frontier_lsn(ledger), 2u);
  auto batch = ledger.add_delivery(1, 40);
  ledger.add_transaction_end(end_of(4));
  ledger.add_transaction_end(end_of(5));
  EXPECT_EQ(frontier_lsn(ledger), 2u);
  ledger.acknowledge(batch);
  EXPECT_EQ(frontier_lsn(ledger), 5u);
}

TEST(AckLedgerTest, NeverMovesBackwards) {
  AckLedger ledger(end_of(10));
  EXPECT_EQ(frontier_lsn(ledger), 10u);
  // Ends at or before the loaded checkpoint (e.g. re-read after a restart) are ignored.
  ledger.add_transaction_end(end_of(9));
  ledger.add_transaction_end(end_of(10));
  EXPECT_EQ(frontier_lsn(ledger), 10u);
  EXPECT_TRUE(ledger.empty());
  ledger.add_transaction_end(end_of(12));
  EXPECT_EQ(frontier_lsn(ledger), 12u);
  ledger.add_transaction_end(end_of(11));
  EXPECT_EQ(frontier_lsn(ledger), 12u);
  EXPECT_EQ(ledger.frontier()->offset, 1200u);
}

TEST(AckLedgerTest, DuplicateAndUnknownAcknowledgementsAreHarmless) {
  AckLedger ledger;
  auto b1 = ledger.add_delivery(1, 10);
  ledger.add_transaction_end(end_of(1));
  auto b2 = ledger.add_delivery(1, 20);
  ledger.add_transaction_end(end_of(2));
  ledger.acknowledge(b1);
  ledger.acknowledge(b1);
  ledger.acknowledge(12345);
  EXPECT_EQ(frontier_lsn(ledger), 1u);
  EXPECT_EQ(ledger.deliveries_in_flight(), 1u);
  ledger.acknowledge(b2);
  EXPECT_EQ(frontier_lsn(ledger), 2u);
}

TEST(AckLedgerTest, DeliveryOwingNothingIsNotInFlight) {
  AckLedger ledger;
  ledger.add_delivery(0, 10);
  ledger.add_transaction_end(end_of(1));
  EXPECT_EQ(ledger.deliveries_in_flight(), 0u);
  EXPECT_EQ(frontier_lsn(ledger), 1u);
}

TEST(AckLedgerTest, OldestUnacknowledgedTimestamp) {
  AckLedger ledger;
  EXPECT_FALSE(ledger.oldest_unacknowledged_timestamp().has_value());
  auto b1 = ledger.add_delivery(1, 100);
  ledger.add_transaction_end(end_of(1));
  auto b2 = ledger.add_delivery(1, 200);
  ledger.add_transaction_end(end_of(2));
  EXPECT_EQ(ledger.oldest_unacknowledged_timestamp(), 100);
  // Acknowledged but not yet popped (b2 is not the prefix): b1 no longer counts.
  ledger.acknowledge(b1);
  EXPECT_EQ(ledger.oldest_unacknowledged_timestamp(), 200);
  ledger.acknowledge(b2);
  EXPECT_FALSE(ledger.oldest_unacknowledged_timestamp().has_value());
  ledger.advance();
  EXPECT_FALSE(ledger.oldest_unacknowledged_timestamp().has_value());
}

TEST(AckLedgerTest, OldestUnacknowledgedSkipsAcknowledgedPrefixOutOfOrder) {
  AckLedger ledger;
  auto b1 = ledger.add_delivery(1, 100);
  auto b2 = ledger.add_delivery(1, 200);
  ledger.acknowledge(b2);
  EXPECT_EQ(ledger.oldest_unacknowledged_timestamp(), 100);
  ledger.acknowledge(b1);
  EXPECT_FALSE(ledger.oldest_unacknowledged_timestamp().has_value());
}

}  // namespace
}  // namespace cdcd
