#include "daemon/pipeline/source_runner.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/fakes.h"
#include "tests/support/test_util.h"

namespace cdcd {
namespace {

using std::chrono::milliseconds;
using test::AckMode;
using test::end_offset;
using test::FakeSink;
using test::make_change;
using test::transaction;
using test::transactions;
using test::wait_until;

using Clock = std::chrono::steady_clock;

std::vector<std::uint64_t> lsns_of(const FakeSink& sink) {
  std::vector<std::uint64_t> lsns;
  for (const auto& change : sink.changes()) lsns.push_back(change.lsn);
  return lsns;
}

std::vector<std::uint64_t> range(std::uint64_t first, std::uint64_t last) {
  std::vector<std::uint64_t> lsns;
  for (std::uint64_t lsn = first; lsn <= last; ++lsn) lsns.push_back(lsn);
  return lsns;
}

class SourceRunnerTest : public ::testing::Test {
 protected:
  static ConsumerConfig config_named(const std::string& name) {
    ConsumerConfig config;
    config.name = name;
    config.source = "demo";
    config.batch.max_events = 50;
    config.batch.max_wait = milliseconds(10);
    return config;
  }

  Consumer* add_consumer(ConsumerConfig config, FakeSink* sink,
                         std::size_t ledger_capacity = AckLedger::kDefaultCapacity) {
    config.sinks = {"sink_" + config.name};
    ConsumerSetup setup;
    setup.config = std::move(config);
    setup.source_type = "fake";
    setup.source = &source_;
    setup.sinks = {{"sink_" + setup.config.name, sink}};
    setup.store = &store_;
    setup.checkpoint_interval = milliseconds(10);
    setup.ledger_capacity = ledger_capacity;
    setup.metrics = &metrics_;
    setup.log = test::null_logger();
    consumers_.push_back(std::make_unique<Consumer>(std::move(setup)));
    EXPECT_TRUE(consumers_.back()->load_checkpoint());
    return consumers_.back().get();
  }

  void start() {
    std::vector<Consumer*> consumers;
    for (auto& consumer : consumers_) consumers.push_back(consumer.get());
    runner_ = std::make_unique<SourceRunner>("demo", &source_, consumers, test::null_logger());
    for (auto* consumer : consumers) consumer->start();
    runner_->start();
  }

  bool all_stopped() const {
    return std::none_of(consumers_.begin(), consumers_.end(),
                        [](const auto& c) { return c->state() == ConsumerState::kRunning; });
  }

  // The runner ends once its consumers stopped; bounded so a hang fails instead of blocking.
  bool wait_ended() {
    bool ended = wait_until([&] { return all_stopped() && source_.stopped(); });
    if (ended) runner_->join();
    return ended;
  }

  // Every commit moved forward.
  void expect_commits_increasing() const {
    auto commits = source_.commits();
    for (std::size_t i = 1; i < commits.size(); ++i) EXPECT_GT(commits[i], commits[i - 1]);
  }

  // Once every consumer that could take more is backpressured, the poll loop goes on (keepalives)
  // without reading anything more: waits for three polls in a row that read nothing, and returns
  // how many events were read.
  std::size_t wait_until_reading_stops() {
    std::size_t read = 0;
    bool stopped = wait_until([&] {
      read = source_.emitted();
      const std::size_t polls = source_.polls();
      return wait_until([&] { return source_.polls() >= polls + 3; }) && source_.emitted() == read;
    });
    EXPECT_TRUE(stopped) << "the source kept reading: " << source_.emitted() << " events";
    EXPECT_GE(source_.backpressured_polls(), 3u);
    return read;
  }

  FakeSink& new_sink(AckMode mode = AckMode::kSync) {
    sinks_.push_back(std::make_unique<FakeSink>(mode));
    return *sinks_.back();
  }

  Metrics metrics_;
  test::MemoryCheckpointStore store_;
  test::FakeSource source_;
  std::vector<std::unique_ptr<FakeSink>> sinks_;
  // Destroyed before the fakes above, and the runner before the consumers it feeds.
  std::vector<std::unique_ptr<Consumer>> consumers_;
  std::unique_ptr<SourceRunner> runner_;
};

TEST_F(SourceRunnerTest, FansOutToEveryConsumer) {
  FakeSink& sink_a = new_sink();
  FakeSink& sink_b = new_sink(AckMode::kAsync);
  Consumer* a = add_consumer(config_named("a"), &sink_a);
  Consumer* b = add_consumer(config_named("b"), &sink_b);
  source_.add(transactions(1, 100, 2));
  source_.add_end_of_log();
  start();
  ASSERT_TRUE(wait_ended());
  EXPECT_TRUE(runner_->ended());
  EXPECT_EQ(a->state(), ConsumerState::kFinished) << a->status().error;
  EXPECT_EQ(b->state(), ConsumerState::kFinished) << b->status().error;
  for (const FakeSink* sink : {&sink_a, &sink_b}) {
    auto changes = sink->changes();
    ASSERT_EQ(changes.size(), 200u);
    for (std::size_t i = 0; i < changes.size(); ++i) {
      EXPECT_EQ(changes[i].lsn, i / 2 + 1);
      EXPECT_EQ(changes[i].seq, i % 2);
    }
  }
  EXPECT_EQ(store_.latest_lsn("a"), 100u);
  EXPECT_EQ(store_.latest_lsn("b"), 100u);
  ASSERT_FALSE(source_.commits().empty());
  EXPECT_EQ(source_.commits().back(), 100u);
  expect_commits_increasing();
  ASSERT_EQ(source_.starts().size(), 1u);
  EXPECT_EQ(source_.starts()[0].first_lsn, 0u);
  EXPECT_FALSE(source_.starts()[0].has_resume);
}

TEST_F(SourceRunnerTest, EachConsumerGetsOnlyWhatItsFiltersWant) {
  FakeSink& sink_a = new_sink();
  FakeSink& sink_b = new_sink();
  auto orders_only = config_named("a");
  orders_only.entities = {"public.orders"};
  auto deletes_only = config_named("b");
  deletes_only.operations = {Operation::kDelete};
  add_consumer(orders_only, &sink_a);
  add_consumer(deletes_only, &sink_b);
  source_.add(transaction(1, 1, "public.orders", Operation::kInsert));
  source_.add(transaction(2, 1, "public.customers", Operation::kDelete));
  source_.add(transaction(3, 1, "public.orders", Operation::kDelete));
  source_.add(transaction(4, 1, "public.items", Operation::kUpdate));
  source_.add_end_of_log();
  start();
  ASSERT_TRUE(wait_ended());
  EXPECT_EQ(lsns_of(sink_a), (std::vector<std::uint64_t>{1, 3}));
  EXPECT_EQ(lsns_of(sink_b), (std::vector<std::uint64_t>{2, 3}));
  // Filtered transactions still move both checkpoints, so the source may release them.
  EXPECT_EQ(store_.latest_lsn("a"), 4u);
  EXPECT_EQ(store_.latest_lsn("b"), 4u);
  ASSERT_FALSE(source_.commits().empty());
  EXPECT_EQ(source_.commits().back(), 4u);
}

// What the source runner buffers per consumer before handing it over.
constexpr std::size_t kHandOverChunk = 512;

TEST_F(SourceRunnerTest, BackpressureFromOneBlockedConsumerBoundsWhatIsRead) {
  constexpr std::size_t kTotal = 40000;
  const std::size_t transaction_bytes = byte_size(make_change(1)) + byte_size(test::make_end(1));
  FakeSink& stuck = new_sink(AckMode::kHold);
  FakeSink& fine = new_sink();
  auto config = config_named("a");
  // Batches larger than what the consumer takes at a time while the source still has room, so
  // that it must take its queue again to fill the second batch.
  config.batch.max_events = 2000;
  config.batch.max_in_flight = 1;
  // Large against the runner's hand-over chunks, so that holding the queue's bound twice shows.
  config.max_queue_bytes = 4 * 1024 * 1024;
  add_consumer(config, &stuck);
  add_consumer(config_named("b"), &fine);
  source_.add(transactions(1, kTotal));
  source_.add_end_of_log();
  start();

  // Once consumer a is stuck (its one batch in flight is not acknowledged) and its queue is full,
  // nothing more is read.
  ASSERT_TRUE(wait_until([&] { return stuck.held() == 1; }));
  wait_until_reading_stops();
  // A slow sink acknowledges: consumer a takes its whole (full) queue, sends the next batch and
  // is stuck again with most of what it took still waiting. The source must not refill the queue
  // meanwhile, or a consumer would hold twice its bound.
  ASSERT_EQ(stuck.release_oldest(), 1u);
  ASSERT_TRUE(wait_until([&] { return stuck.batch_count() == 2 && stuck.held() == 1; }));

  const std::size_t read = wait_until_reading_stops();
  // Held by consumer a: the transactions of two batches, then its queue, which counts what it
  // took until it has handled it: up to its bound plus one hand-over chunk. Plus what the runner
  // buffered for the next hand-over.
  const std::size_t queue_events = 2 * (config.max_queue_bytes / transaction_bytes + 1);
  const std::size_t bound =
      2 * 2 * config.batch.max_events + (queue_events + kHandOverChunk) + kHandOverChunk;
  EXPECT_LE(read, bound) << queue_events << " events fit the queue";
  EXPECT_LT(read, kTotal) << "half the events";

  // Unblocked, everything flows to both consumers.
  std::atomic<bool> done{false};
  std::thread releaser([&] {
    while (!done) {
      stuck.release_oldest(100);
      std::this_thread::sleep_for(milliseconds(1));
    }
  });
  bool ended = wait_ended();
  done = true;
  releaser.join();
  ASSERT_TRUE(ended);
  EXPECT_EQ(lsns_of(stuck), range(1, kTotal));
  EXPECT_EQ(lsns_of(fine), range(1, kTotal));
  EXPECT_EQ(source_.commits().back(), kTotal);
}

// A consumer that wants 1 change in 100, with one batch stuck while its later batches are
// acknowledged: its in-flight window never fills and its queue holds only small transaction ends,
// so only its ack ledger's bound can stop the source.
TEST_F(SourceRunnerTest, BackpressureFromABlockedFilteringConsumerBoundsWhatIsRead) {
  constexpr std::uint64_t kTotal = 5000;
  constexpr std::uint64_t kRareEvery = 100;
  constexpr std::size_t kLedgerCapacity = 4;
  FakeSink& stuck = new_sink(AckMode::kHoldFirst);
  FakeSink& fine = new_sink();
  auto rare = config_named("a");
  rare.entities = {"public.rare"};
  rare.batch.max_events = 1;
  rare.batch.max_in_flight = 16;
  rare.max_queue_bytes = 8 * 1024;
  add_consumer(rare, &stuck, kLedgerCapacity);
  add_consumer(config_named("b"), &fine);
  std::vector<std::uint64_t> rare_lsns;
  for (std::uint64_t lsn = 1; lsn <= kTotal; ++lsn) {
    const bool is_rare = lsn % kRareEvery == 0;
    if (is_rare) rare_lsns.push_back(lsn);
    source_.add(transaction(lsn, 1, is_rare ? "public.rare" : "public.orders"));
  }
  source_.add_end_of_log();
  start();

  ASSERT_TRUE(wait_until([&] { return stuck.batch_count() == kLedgerCapacity; }));
  const std::size_t read = wait_until_reading_stops();
  EXPECT_EQ(stuck.batch_count(), kLedgerCapacity);
  // Consumer a stops at the rare change after its ledger's bound; beyond it, its queue holds up
  // to its bound of transaction ends plus one hand-over chunk, and the runner buffers one more
  // chunk. Every transaction read is two events (its change and its end).
  const std::size_t queue_ends = rare.max_queue_bytes / byte_size(test::make_end(1)) + 1;
  const std::size_t bound =
      2 * ((kLedgerCapacity + 1) * kRareEvery + queue_ends + 2 * kHandOverChunk);
  EXPECT_LE(read, bound);
  EXPECT_LT(read, kTotal);

  ASSERT_EQ(stuck.release_oldest(), 1u);
  ASSERT_TRUE(wait_ended());
  EXPECT_EQ(lsns_of(stuck), rare_lsns);
  EXPECT_EQ(lsns_of(fine), range(1, kTotal));
  EXPECT_EQ(store_.latest_lsn("a"), kTotal);
  EXPECT_EQ(source_.commits().back(), kTotal);
}

TEST_F(SourceRunnerTest, CommitsTheLowestSavedCheckpointAndNeverMore) {
  FakeSink& fast = new_sink();
  FakeSink& slow = new_sink(AckMode::kHold);
  auto slow_config = config_named("b");
  slow_config.batch.max_events = 1;
  slow_config.batch.max_in_flight = 100;
  add_consumer(config_named("a"), &fast);
  Consumer* b = add_consumer(slow_config, &slow);
  source_.add(transactions(1, 10));
  start();
  ASSERT_TRUE(wait_until([&] { return store_.latest_lsn("a") == 10 && slow.held() == 10; }));
  for (std::uint64_t id = 1; id <= 3; ++id) ASSERT_TRUE(slow.release_batch(id));
  ASSERT_TRUE(wait_until([&] {
    auto commits = source_.commits();
    return !commits.empty() && commits.back() == 3;
  }));
  EXPECT_EQ(b->saved_lsn(), 3u);
  for (auto lsn : source_.commits()) EXPECT_LE(lsn, 3u);

  slow.release_newest_first();
  ASSERT_TRUE(wait_until([&] { return source_.commits().back() == 10; }));
  runner_->request_stop(Clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(wait_ended());
  EXPECT_EQ(source_.commits().back(), 10u);
  expect_commits_increasing();
}

TEST_F(SourceRunnerTest, NothingIsCommittedBeforeEveryConsumerSaved) {
  FakeSink& fast = new_sink();
  FakeSink& stuck = new_sink(AckMode::kHold);
  FakeSink& filtered = new_sink();
  auto stuck_config = config_named("b");
  stuck_config.batch.max_events = 1;
  stuck_config.batch.max_in_flight = 100;
  auto nothing_wanted = config_named("c");
  nothing_wanted.entities = {"public.nothing"};
  Consumer* a = add_consumer(config_named("a"), &fast);
  add_consumer(stuck_config, &stuck);
  Consumer* c = add_consumer(nothing_wanted, &filtered);
  source_.add(transactions(1, 10));
  start();
  // a delivered everything; c, which wants none of it, checkpointed the ends it saw; b saved
  // nothing, every batch of it being unacknowledged.
  ASSERT_TRUE(wait_until(
      [&] { return a->saved_lsn() == 10 && c->saved_lsn() == 10 && stuck.held() == 10; }));
  EXPECT_EQ(filtered.batch_count(), 0u);
  // The runner commits after every poll: once a poll began after those saves, one commit round
  // has seen them (and a second one to be sure), and the source was still told nothing.
  const std::size_t polls = source_.polls();
  ASSERT_TRUE(wait_until([&] { return source_.polls() >= polls + 2; }));
  EXPECT_TRUE(source_.commits().empty()) << "committed " << source_.commits().front();

  // The first commit is b's first checkpoint, the lowest, not a's.
  ASSERT_TRUE(stuck.release_batch(1));
  ASSERT_TRUE(stuck.release_batch(2));
  ASSERT_TRUE(wait_until([&] { return !source_.commits().empty(); }));
  EXPECT_LE(source_.commits().front(), 2u);
  ASSERT_TRUE(wait_until([&] { return source_.commits().back() == 2; }));
  for (auto lsn : source_.commits()) EXPECT_LE(lsn, 2u);
  expect_commits_increasing();
}

TEST_F(SourceRunnerTest, AFailedConsumerHoldsCommitsButNotTheOthers) {
  FakeSink& broken = new_sink();
  FakeSink& fine = new_sink();
  broken.fail_at(60, "disk full");
  auto config = config_named("a");
  config.batch.max_events = 1;
  Consumer* a = add_consumer(config, &broken);
  Consumer* b = add_consumer(config_named("b"), &fine);
  source_.add(transactions(1, 200));
  source_.add_end_of_log();
  start();
  ASSERT_TRUE(wait_ended());
  EXPECT_EQ(a->state(), ConsumerState::kFailed);
  EXPECT_EQ(b->state(), ConsumerState::kFinished) << b->status().error;
  EXPECT_EQ(lsns_of(fine), range(1, 200));
  EXPECT_LE(store_.latest_lsn("a"), 59u);
  ASSERT_FALSE(source_.commits().empty());
  for (auto lsn : source_.commits()) EXPECT_LE(lsn, a->saved_lsn());
}

TEST_F(SourceRunnerTest, StartsAtTheLowestConsumerPosition) {
  store_.put("a", Checkpoint{10, end_offset(10), 0, 0});
  store_.put("b", Checkpoint{20, end_offset(20), 0, 0});
  FakeSink& sink_a = new_sink();
  FakeSink& sink_b = new_sink();
  add_consumer(config_named("b"), &sink_b);
  add_consumer(config_named("a"), &sink_a);
  source_.add(transactions(5, 25));
  source_.add_end_of_log();
  start();
  ASSERT_TRUE(wait_ended());
  ASSERT_EQ(source_.starts().size(), 1u);
  const StartPosition from = source_.starts()[0];
  EXPECT_EQ(from.first_lsn, 11u);
  ASSERT_TRUE(from.has_resume);
  EXPECT_EQ(from.resume.lsn, 10u);
  EXPECT_EQ(from.resume.offset, end_offset(10));
  // Each consumer skips what it already has.
  EXPECT_EQ(lsns_of(sink_a), range(11, 25));
  EXPECT_EQ(lsns_of(sink_b), range(21, 25));
  EXPECT_EQ(source_.commits().back(), 25u);
  expect_commits_increasing();
}

TEST_F(SourceRunnerTest, StartPrefersTheResumeHintAtTheSameLsn) {
  store_.put("a", Checkpoint{10, end_offset(10), 0, 0});
  auto by_lsn = config_named("b");
  by_lsn.start.kind = StartConfig::Kind::kLsn;
  by_lsn.start.lsn = 11;
  FakeSink& sink_a = new_sink();
  FakeSink& sink_b = new_sink();
  add_consumer(by_lsn, &sink_b);
  add_consumer(config_named("a"), &sink_a);
  source_.add_end_of_log();
  start();
  ASSERT_TRUE(wait_ended());
  ASSERT_EQ(source_.starts().size(), 1u);
  EXPECT_EQ(source_.starts()[0].first_lsn, 11u);
  ASSERT_TRUE(source_.starts()[0].has_resume);
  EXPECT_EQ(source_.starts()[0].resume.lsn, 10u);
}

TEST_F(SourceRunnerTest, AConsumerFromTheBeginningRewindsTheSource) {
  store_.put("a", Checkpoint{10, end_offset(10), 0, 0});
  auto from_start = config_named("b");
  from_start.start.kind = StartConfig::Kind::kBeginning;
  FakeSink& sink_a = new_sink();
  FakeSink& sink_b = new_sink();
  add_consumer(config_named("a"), &sink_a);
  add_consumer(from_start, &sink_b);
  source_.add(transactions(1, 12));
  source_.add_end_of_log();
  start();
  ASSERT_TRUE(wait_ended());
  ASSERT_EQ(source_.starts().size(), 1u);
  EXPECT_EQ(source_.starts()[0].first_lsn, 0u);
  EXPECT_FALSE(source_.starts()[0].has_resume);
  EXPECT_EQ(lsns_of(sink_a), range(11, 12));
  EXPECT_EQ(lsns_of(sink_b), range(1, 12));
}

TEST_F(SourceRunnerTest, PermanentPollErrorFailsTheConsumers) {
  FakeSink& sink_a = new_sink();
  FakeSink& sink_b = new_sink();
  Consumer* a = add_consumer(config_named("a"), &sink_a);
  Consumer* b = add_consumer(config_named("b"), &sink_b);
  source_.add(transactions(1, 3));
  source_.add_error(Error{"replication slot dropped", false});
  source_.add(transactions(4, 6));
  start();
  ASSERT_TRUE(wait_ended());
  for (Consumer* consumer : {a, b}) {
    EXPECT_EQ(consumer->state(), ConsumerState::kFailed);
    const std::string error = consumer->status().error;
    EXPECT_NE(error.find("demo"), std::string::npos) << error;
    EXPECT_NE(error.find("replication slot dropped"), std::string::npos) << error;
  }
  for (auto lsn : lsns_of(sink_a)) EXPECT_LE(lsn, 3u);
  EXPECT_LE(source_.emitted(), 6u) << "nothing after the error is read";
}

TEST_F(SourceRunnerTest, PermanentStartErrorFailsTheConsumers) {
  FakeSink& sink_a = new_sink();
  FakeSink& sink_b = new_sink();
  Consumer* a = add_consumer(config_named("a"), &sink_a);
  Consumer* b = add_consumer(config_named("b"), &sink_b);
  source_.add_start_error(Error{"password authentication failed", false});
  source_.add(transactions(1, 3));
  start();
  ASSERT_TRUE(wait_ended());
  EXPECT_EQ(source_.start_attempts(), 1u);
  EXPECT_EQ(source_.polls(), 0u);
  for (Consumer* consumer : {a, b}) {
    EXPECT_EQ(consumer->state(), ConsumerState::kFailed);
    EXPECT_NE(consumer->status().error.find("password authentication failed"), std::string::npos)
        << consumer->status().error;
  }
}

TEST_F(SourceRunnerTest, RetryableErrorsAreRetried) {
  FakeSink& sink_a = new_sink();
  FakeSink& sink_b = new_sink();
  Consumer* a = add_consumer(config_named("a"), &sink_a);
  Consumer* b = add_consumer(config_named("b"), &sink_b);
  source_.add_start_error(Error{"connection refused", true});
  source_.add(transactions(1, 3));
  source_.add_error(Error{"connection reset", true});
  source_.add(transactions(4, 6));
  source_.add_end_of_log();
  start();
  ASSERT_TRUE(wait_ended());
  EXPECT_EQ(source_.start_attempts(), 2u);
  EXPECT_EQ(a->state(), ConsumerState::kFinished) << a->status().error;
  EXPECT_EQ(b->state(), ConsumerState::kFinished) << b->status().error;
  EXPECT_EQ(lsns_of(sink_a), range(1, 6));
  EXPECT_EQ(lsns_of(sink_b), range(1, 6));
  EXPECT_EQ(source_.commits().back(), 6u);
}

TEST_F(SourceRunnerTest, StopRequestDrainsAndCommitsTheFinalCheckpoints) {
  FakeSink& sink_a = new_sink(AckMode::kAsync);
  FakeSink& sink_b = new_sink();
  Consumer* a = add_consumer(config_named("a"), &sink_a);
  Consumer* b = add_consumer(config_named("b"), &sink_b);
  source_.add(transactions(1, 50));
  start();
  ASSERT_TRUE(wait_until([&] { return source_.emitted() == 100; }));
  runner_->request_stop(Clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(wait_ended());
  EXPECT_EQ(a->state(), ConsumerState::kFinished);
  EXPECT_EQ(b->state(), ConsumerState::kFinished);
  EXPECT_EQ(lsns_of(sink_a), range(1, 50));
  EXPECT_EQ(store_.latest_lsn("a"), 50u);
  EXPECT_EQ(store_.latest_lsn("b"), 50u);
  EXPECT_EQ(source_.commits().back(), 50u);
}

}  // namespace
}  // namespace cdcd
