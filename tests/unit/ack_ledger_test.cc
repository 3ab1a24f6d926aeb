#include "daemon/pipeline/ack_ledger.h"

#include <algorithm>
#include <random>
#include <vector>

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

// A consumer that filters most changes out sees one delivery per many transactions: their ends
// must not each take memory while that delivery is unacknowledged.
TEST(AckLedgerTest, EndsBetweenDeliveriesCoalesceIntoTheLatest) {
  AckLedger ledger;
  auto stuck = ledger.add_delivery(1, 10);
  for (std::uint64_t lsn = 1; lsn <= 100'000; ++lsn) ledger.add_transaction_end(end_of(lsn));
  EXPECT_EQ(ledger.size(), 1u) << "the ends after a delivery take no room of their own";
  EXPECT_FALSE(ledger.advance().has_value());
  auto next = ledger.add_delivery(1, 20);
  for (std::uint64_t lsn = 100'001; lsn <= 200'000; ++lsn) ledger.add_transaction_end(end_of(lsn));
  EXPECT_EQ(ledger.size(), 2u);
  ledger.acknowledge(stuck);
  EXPECT_EQ(frontier_lsn(ledger), 100'000u) << "the latest end before the next delivery";
  EXPECT_EQ(ledger.frontier()->offset, 100'000u * 100);
  ledger.acknowledge(next);
  EXPECT_EQ(frontier_lsn(ledger), 200'000u);
  EXPECT_TRUE(ledger.empty());
}

TEST(AckLedgerTest, EndsWithNothingOutstandingTakeNoRoom) {
  AckLedger ledger;
  for (std::uint64_t lsn = 1; lsn <= 1000; ++lsn) ledger.add_transaction_end(end_of(lsn));
  EXPECT_TRUE(ledger.empty());
  EXPECT_EQ(ledger.size(), 0u);
  ASSERT_TRUE(ledger.frontier().has_value());
  EXPECT_EQ(ledger.frontier()->lsn, 1000u);
}

TEST(AckLedgerTest, FullAtItsCapacityUntilTheOldestIsAcknowledged) {
  AckLedger ledger(std::nullopt, 3);
  auto b1 = ledger.add_delivery(1, 10);
  ledger.add_transaction_end(end_of(1));
  auto b2 = ledger.add_delivery(1, 20);
  ledger.add_transaction_end(end_of(2));
  EXPECT_FALSE(ledger.full());
  auto b3 = ledger.add_delivery(1, 30);
  ledger.add_transaction_end(end_of(3));
  EXPECT_TRUE(ledger.full());
  // Acknowledged behind the unacknowledged oldest: still held, still full.
  ledger.acknowledge(b2);
  ledger.acknowledge(b3);
  ledger.advance();
  EXPECT_TRUE(ledger.full());
  EXPECT_EQ(ledger.size(), 3u);
  EXPECT_EQ(ledger.deliveries_in_flight(), 1u);
  ledger.acknowledge(b1);
  EXPECT_EQ(frontier_lsn(ledger), 3u);
  EXPECT_FALSE(ledger.full());
  EXPECT_TRUE(ledger.empty());
}

// Deliveries are found by id arithmetic: check it against a plain model over many random
// interleavings of deliveries, ends, acknowledgements in any order, and pops.
TEST(AckLedgerTest, AgreesWithAModelUnderRandomAcknowledgementOrder) {
  std::mt19937 random(12345);
  for (int round = 0; round < 50; ++round) {
    AckLedger ledger;
    struct Modelled {
      AckLedger::EntryId id;
      std::size_t owed;
      std::uint64_t end_lsn;  // latest end added after it, 0 when none
    };
    std::vector<Modelled> model;  // every delivery ever added, in order
    std::uint64_t lsn = 0;
    std::uint64_t expected_frontier = 0;
    std::vector<AckLedger::EntryId> owed_acks;
    for (int step = 0; step < 400; ++step) {
      switch (random() % 4) {
        case 0: {
          const std::size_t acks = 1 + random() % 3;
          model.push_back({ledger.add_delivery(acks, step), acks, 0});
          for (std::size_t i = 0; i < acks; ++i) owed_acks.push_back(model.back().id);
          break;
        }
        case 1:
          ledger.add_transaction_end(end_of(++lsn));
          if (model.empty()) {
            expected_frontier = lsn;
          } else {
            model.back().end_lsn = lsn;
          }
          break;
        default:
          if (owed_acks.empty()) break;
          std::swap(owed_acks[random() % owed_acks.size()], owed_acks.back());
          const auto id = owed_acks.back();
          owed_acks.pop_back();
          ledger.acknowledge(id);
          for (auto& delivery : model) {
            if (delivery.id == id) --delivery.owed;
          }
      }
      // The model's frontier: the last end of the longest fully acknowledged prefix.
      std::uint64_t frontier = expected_frontier;
      for (const auto& delivery : model) {
        if (delivery.owed > 0) break;
        frontier = std::max(frontier, delivery.end_lsn);
      }
      ASSERT_EQ(frontier_lsn(ledger), frontier) << "round " << round << " step " << step;
      ASSERT_EQ(ledger.deliveries_in_flight(),
                static_cast<std::size_t>(
                    std::count_if(model.begin(), model.end(), [](auto& d) { return d.owed > 0; })));
    }
  }
}

}  // namespace
}  // namespace cdcd
