#include "daemon/pipeline/consumer.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <nlohmann/json.hpp>

#include "daemon/format/format.h"
#include "tests/support/fakes.h"
#include "tests/support/test_util.h"

namespace cdcd {
namespace {

using std::chrono::milliseconds;
using test::AckMode;
using test::end_offset;
using test::FakeSink;
using test::make_bad_record;
using test::make_change;
using test::make_end;
using test::transaction;
using test::transactions;
using test::wait_until;

constexpr auto kForever = std::chrono::hours(1);

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
const std::string kName = "c";

std::vector<SourceEvent> concat(std::vector<std::vector<SourceEvent>> parts) {
  std::vector<SourceEvent> all;
  for (auto& part : parts) {
    for (auto& event : part) all.push_back(std::move(event));
  }
  return all;
}

std::vector<std::size_t> batch_sizes(const FakeSink& sink) {
  std::vector<std::size_t> sizes;
  for (const auto& batch : sink.batches()) sizes.push_back(batch->changes.size());
  return sizes;
}

class ConsumerTest : public ::testing::Test {
 protected:
  static ConsumerConfig base_config() {
    ConsumerConfig config;
    config.name = kName;
    config.source = "demo";
    config.batch.max_events = 100;
    config.batch.max_wait = milliseconds(10);
    return config;
  }

  std::unique_ptr<Consumer> make(ConsumerConfig config, std::vector<NamedSink> sinks,
                                 std::optional<NamedSink> dead_letter = std::nullopt,
                                 milliseconds checkpoint_interval = milliseconds(10),
                                 std::size_t ledger_capacity = AckLedger::kDefaultCapacity) {
    for (const auto& sink : sinks) config.sinks.push_back(sink.name);
    if (dead_letter) {
      config.on_error = OnError::kDeadLetter;
      config.dead_letter_sink = dead_letter->name;
    }
    ConsumerSetup setup;
    setup.config = std::move(config);
    setup.source_type = "fake";
    setup.source = &source_;
    setup.sinks = std::move(sinks);
    setup.dead_letter = std::move(dead_letter);
    setup.store = &store_;
    setup.checkpoint_interval = checkpoint_interval;
    setup.ledger_capacity = ledger_capacity;
    setup.metrics = &metrics_;
    setup.log = log_;
    auto consumer = std::make_unique<Consumer>(std::move(setup));
    EXPECT_TRUE(consumer->load_checkpoint());
    return consumer;
  }

  // What a source runner does: queue only the events the consumer wants.
  static void feed(Consumer& consumer, std::vector<SourceEvent> events, bool end = false) {
    std::vector<SourceEvent> wanted;
    std::size_t bytes = 0;
    for (auto& event : events) {
      if (!consumer.wants(event)) continue;
      bytes += byte_size(event);
      wanted.push_back(std::move(event));
    }
    consumer.queue().push(std::move(wanted), bytes, end);
  }

  // Makes the consumers made from now on log into the returned stream.
  std::ostringstream& capture_log() {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text_);
    log_ = std::make_shared<spdlog::logger>("test", std::move(sink));
    return log_text_;
  }

  static bool wait_stopped(Consumer& consumer) {
    bool stopped = wait_until([&] { return consumer.state() != ConsumerState::kRunning; });
    consumer.join();
    return stopped;
  }

  // Every save moved forward, to the end of a transaction.
  void expect_saves_well_formed() const {
    std::uint64_t previous = 0;
    for (const auto& saved : store_.saves(kName)) {
      EXPECT_GT(saved.lsn, previous) << "checkpoint moved backwards or was saved twice";
      EXPECT_EQ(saved.offset, end_offset(saved.lsn)) << "not a transaction end";
      EXPECT_GT(saved.saved_at_us, 0);
      previous = saved.lsn;
    }
  }

  std::uint64_t max_saved_lsn() const {
    std::uint64_t highest = 0;
    for (const auto& saved : store_.saves(kName)) highest = std::max(highest, saved.lsn);
    return highest;
  }

  double events_counted(const std::string& sink, Operation op = Operation::kInsert) {
    return metrics_.events(kName, sink, op).Value();
  }

  Metrics metrics_;
  test::MemoryCheckpointStore store_;
  test::FakeSource source_;
  std::ostringstream log_text_;
  std::shared_ptr<spdlog::logger> log_ = test::null_logger();
};

std::size_t bytes_of(const std::vector<SourceEvent>& events) {
  std::size_t bytes = 0;
  for (const auto& event : events) bytes += byte_size(event);
  return bytes;
}

std::string base64_decode(const std::string& text) {
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string bytes;
  std::uint32_t bits = 0;
  int count = 0;
  for (char c : text) {
    if (c == '=') break;
    bits = (bits << 6) | static_cast<std::uint32_t>(kAlphabet.find(c));
    if ((count += 6) >= 8) {
      count -= 8;
      bytes += static_cast<char>((bits >> count) & 0xFF);
    }
  }
  return bytes;
}

TEST_F(ConsumerTest, BatchesByMaxEvents) {
  FakeSink sink;
  auto config = base_config();
  config.batch.max_events = 4;
  config.batch.max_wait = kForever;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  feed(*consumer, transactions(1, 10), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished) << consumer->status().error;
  EXPECT_EQ(batch_sizes(sink), (std::vector<std::size_t>{4, 4, 2}));
  auto batches = sink.batches();
  for (std::size_t i = 0; i < batches.size(); ++i) {
    EXPECT_EQ(batches[i]->consumer, kName);
    EXPECT_EQ(batches[i]->source_name, "demo");
    EXPECT_EQ(batches[i]->connector, "fake");
    if (i > 0) {
      EXPECT_GT(batches[i]->id, batches[i - 1]->id);
    }
  }
  ASSERT_TRUE(store_.latest(kName));
  EXPECT_EQ(store_.latest(kName)->lsn, 10u);
  EXPECT_EQ(store_.latest(kName)->offset, end_offset(10));
  EXPECT_EQ(store_.latest(kName)->commit_time_us, make_end(10).timestamp_us);
  expect_saves_well_formed();
}

// Every acknowledged change counts once, per sink, with its age at the acknowledgement; changes
// without a commit time are left out rather than counted as 56 years old.
TEST_F(ConsumerTest, CommitToAckLatencyIsObservedPerAcknowledgedChange) {
  FakeSink sink;
  auto config = base_config();
  config.batch.max_wait = kForever;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const std::int64_t two_seconds_ago_us =
      std::chrono::duration_cast<std::chrono::microseconds>(now).count() - 2'000'000;
  auto events = transactions(1, 4);
  for (auto& event : events) {
    if (auto* change = std::get_if<Change>(&event)) {
      change->timestamp_us = change->lsn == 4 ? 0 : two_seconds_ago_us;
    }
  }
  feed(*consumer, std::move(events), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  ASSERT_EQ(consumer->state(), ConsumerState::kFinished) << consumer->status().error;
  auto latency = metrics_.commit_to_ack(kName, "a").Collect().histogram;
  EXPECT_EQ(latency.sample_count, 3u);
  EXPECT_GE(latency.sample_sum, 3 * 2.0);
  EXPECT_LT(latency.sample_sum, 3 * 60.0);
}

TEST_F(ConsumerTest, BatchesByMaxBytes) {
  FakeSink sink;
  const std::size_t change_bytes = make_change(1).byte_size();
  auto config = base_config();
  config.batch.max_events = 1000;
  config.batch.max_bytes = 3 * change_bytes;
  config.batch.max_wait = kForever;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  feed(*consumer, transactions(1, 7), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished);
  EXPECT_EQ(batch_sizes(sink), (std::vector<std::size_t>{3, 3, 1}));
  for (const auto& batch : sink.batches())
    EXPECT_EQ(batch->bytes, batch->changes.size() * change_bytes);
  EXPECT_EQ(store_.latest_lsn(kName), 7u);
}

TEST_F(ConsumerTest, MaxWaitFlushesAPartialBatch) {
  FakeSink sink;
  auto config = base_config();
  config.batch.max_events = 1000;
  config.batch.max_wait = milliseconds(20);
  config.batch.send_when_caught_up = false;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  feed(*consumer, transaction(1, 3));  // no end of stream: only max_wait can flush it
  ASSERT_TRUE(wait_until([&] { return sink.changes().size() == 3; }));
  ASSERT_TRUE(wait_until([&] { return store_.latest_lsn(kName) == 1; }));
  EXPECT_EQ(consumer->state(), ConsumerState::kRunning);
  feed(*consumer, {}, true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished);
}

// Low commit-to-sink latency at low rates: once the consumer has handled everything queued, the
// open batch goes out at once, whatever max_wait says; everything queued together stays together.
TEST_F(ConsumerTest, SendsTheBatchOnceCaughtUpWithTheSource) {
  FakeSink sink;
  auto config = base_config();
  config.batch.max_events = 1000;
  config.batch.max_wait = kForever;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  feed(*consumer, transactions(1, 5, 2));
  ASSERT_TRUE(wait_until([&] { return sink.changes().size() == 10; }));
  feed(*consumer, transaction(6, 1));
  ASSERT_TRUE(wait_until([&] { return sink.changes().size() == 11; }));
  EXPECT_EQ(batch_sizes(sink), (std::vector<std::size_t>{10, 1}));
  EXPECT_EQ(consumer->state(), ConsumerState::kRunning);
  feed(*consumer, {}, true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished);
}

// With a batch still unacknowledged, the next one goes out once it has caught up and is a moment
// old: neither held for max_wait nor sent per hand-over.
TEST_F(ConsumerTest, ACaughtUpBatchGoesOutWhileEarlierOnesAreInFlight) {
  FakeSink sink(AckMode::kHold);
  auto config = base_config();
  config.batch.max_events = 1000;
  config.batch.max_wait = kForever;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  feed(*consumer, transaction(1, 2));
  ASSERT_TRUE(wait_until([&] { return sink.batch_count() == 1; }));
  feed(*consumer, transactions(2, 3, 2));
  ASSERT_TRUE(wait_until([&] { return sink.changes().size() == 6; }));
  EXPECT_EQ(sink.held(), 2u);
  EXPECT_EQ(sink.release_oldest(2), 2u);
  feed(*consumer, {}, true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished) << consumer->status().error;
  EXPECT_EQ(store_.latest_lsn(kName), 3u);
}

TEST_F(ConsumerTest, WithoutSendWhenCaughtUpABatchWaitsForMaxWait) {
  FakeSink sink;
  auto config = base_config();
  config.batch.max_events = 1000;
  config.batch.max_wait = kForever;
  config.batch.send_when_caught_up = false;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  feed(*consumer, transactions(1, 5, 2));
  feed(*consumer, transaction(6, 1));
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_TRUE(sink.changes().empty());
  feed(*consumer, {}, true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished);
  EXPECT_EQ(batch_sizes(sink), (std::vector<std::size_t>{11}));
}

TEST_F(ConsumerTest, TransactionsSpanningBatchesKeepOrderWithAsyncAcks) {
  FakeSink sink(AckMode::kAsync);
  auto config = base_config();
  config.batch.max_events = 7;
  config.batch.max_wait = kForever;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  feed(*consumer, transactions(1, 200, 3), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished) << consumer->status().error;
  auto changes = sink.changes();
  ASSERT_EQ(changes.size(), 600u);
  for (std::size_t i = 0; i < changes.size(); ++i) {
    EXPECT_EQ(changes[i].lsn, i / 3 + 1);
    EXPECT_EQ(changes[i].seq, i % 3);
  }
  EXPECT_EQ(store_.latest_lsn(kName), 200u);
  EXPECT_EQ(consumer->saved_lsn(), 200u);
  expect_saves_well_formed();
  EXPECT_EQ(events_counted("a"), 600);
}

TEST_F(ConsumerTest, CheckpointWaitsForEverySink) {
  FakeSink fast;
  FakeSink slow(AckMode::kHold);
  auto config = base_config();
  config.batch.max_events = 1;
  config.batch.max_in_flight = 10;
  auto consumer = make(config, {{"fast", &fast}, {"slow", &slow}});
  consumer->start();
  feed(*consumer, transactions(1, 5));
  ASSERT_TRUE(wait_until([&] { return slow.held() == 5; }));
  ASSERT_TRUE(slow.release_batch(1));
  ASSERT_TRUE(slow.release_batch(2));
  ASSERT_TRUE(wait_until([&] { return store_.latest_lsn(kName) == 2; }));
  // Batch 4 acknowledged by both sinks, batch 3 only by the fast one: the frontier stays at 2.
  ASSERT_TRUE(slow.release_batch(4));
  EXPECT_EQ(fast.unacknowledged(), 0u);
  consumer->abort();  // its final save sees every acknowledgement released above
  consumer->join();
  EXPECT_EQ(store_.latest_lsn(kName), 2u);
  EXPECT_EQ(max_saved_lsn(), 2u);
  expect_saves_well_formed();
  EXPECT_EQ(consumer->state(), ConsumerState::kFailed);
  EXPECT_NE(consumer->status().error.find("shutdown timeout"), std::string::npos)
      << consumer->status().error;
}

TEST_F(ConsumerTest, CheckpointAdvancesOnceTheSlowSinkCatchesUp) {
  FakeSink fast;
  FakeSink slow(AckMode::kHold);
  auto config = base_config();
  config.batch.max_events = 1;
  config.batch.max_in_flight = 10;
  auto consumer = make(config, {{"fast", &fast}, {"slow", &slow}});
  consumer->start();
  feed(*consumer, transactions(1, 5), true);
  ASSERT_TRUE(wait_until([&] { return slow.held() == 5; }));
  EXPECT_EQ(slow.release_newest_first(), 5u);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished);
  EXPECT_EQ(store_.latest_lsn(kName), 5u);
  expect_saves_well_formed();
}

TEST_F(ConsumerTest, OutOfOrderAcknowledgementsAcrossBatches) {
  FakeSink sink(AckMode::kHold);
  auto config = base_config();
  config.batch.max_events = 2;
  config.batch.max_wait = kForever;
  config.batch.max_in_flight = 10;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  // Transactions of 3 changes in batches of 2: batch k holds parts of two transactions.
  feed(*consumer, transactions(1, 4, 3));
  ASSERT_TRUE(wait_until([&] { return sink.held() == 6; }));
  for (std::uint64_t id : {6, 5, 4, 2}) ASSERT_TRUE(sink.release_batch(id));
  consumer->abort();
  consumer->join();
  // Batch 1 (lsn 1 seq 0-1) is the only one left, and it opens the log: nothing is complete.
  EXPECT_TRUE(store_.saves(kName).empty());
  EXPECT_EQ(consumer->saved_lsn(), 0u);
}

TEST_F(ConsumerTest, OutOfOrderAcknowledgementsUpToAGap) {
  FakeSink sink(AckMode::kHold);
  auto config = base_config();
  config.batch.max_events = 2;
  config.batch.max_wait = kForever;
  config.batch.max_in_flight = 10;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  feed(*consumer, transactions(1, 4, 3));
  ASSERT_TRUE(wait_until([&] { return sink.held() == 6; }));
  // Batches: 1=[1.0 1.1] 2=[1.2 2.0] 3=[2.1 2.2] 4=[3.0 3.1] 5=[3.2 4.0] 6=[4.1 4.2].
  for (std::uint64_t id : {2, 6, 1, 5, 3}) ASSERT_TRUE(sink.release_batch(id));
  consumer->abort();
  consumer->join();
  EXPECT_EQ(store_.latest_lsn(kName), 2u) << "batch 4 holds transaction 3";
  expect_saves_well_formed();
}

TEST_F(ConsumerTest, MaxInFlightIsRespected) {
  FakeSink sink(AckMode::kHold);
  auto config = base_config();
  config.batch.max_events = 1;
  config.batch.max_in_flight = 3;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  constexpr std::size_t kBatches = 20;
  feed(*consumer, transactions(1, kBatches), true);
  for (std::size_t released = 0; released < kBatches; ++released) {
    const std::size_t expected_held = std::min<std::size_t>(3, kBatches - released);
    ASSERT_TRUE(wait_until([&] { return sink.held() == expected_held; }))
        << "after " << released << " releases, held " << sink.held();
    ASSERT_LE(sink.max_unacknowledged(), 3u);
    sink.release_oldest(1);
  }
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished);
  EXPECT_EQ(sink.batch_count(), kBatches);
  EXPECT_EQ(sink.max_unacknowledged(), 3u);
  EXPECT_EQ(store_.latest_lsn(kName), kBatches);
}

TEST_F(ConsumerTest, SinkFailureFailsTheConsumerNamingSinkAndRange) {
  FakeSink a;
  FakeSink b;
  b.fail_at(3, "disk full");
  auto config = base_config();
  config.batch.max_events = 2;
  config.batch.max_wait = kForever;
  auto consumer = make(config, {{"a", &a}, {"b", &b}});
  consumer->start();
  feed(*consumer, transactions(1, 6), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFailed);
  EXPECT_FALSE(consumer->accepting());
  const std::string error = consumer->status().error;
  EXPECT_NE(error.find("sink b"), std::string::npos) << error;
  EXPECT_NE(error.find("lsn 3..4"), std::string::npos) << error;
  EXPECT_NE(error.find("disk full"), std::string::npos) << error;
  EXPECT_EQ(consumer->status().state, ConsumerState::kFailed);
  EXPECT_EQ(store_.latest_lsn(kName), 2u) << "batch [1, 2] was acknowledged by both sinks";
  EXPECT_EQ(max_saved_lsn(), 2u);
}

TEST_F(ConsumerTest, RejectedChangeWithStopFails) {
  FakeSink sink;
  sink.reject(2, 0, "record too large");
  auto config = base_config();
  config.batch.max_events = 1;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  feed(*consumer, transactions(1, 4), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFailed);
  const std::string error = consumer->status().error;
  EXPECT_NE(error.find("sink a"), std::string::npos) << error;
  EXPECT_NE(error.find("lsn 2"), std::string::npos) << error;
  EXPECT_NE(error.find("record too large"), std::string::npos) << error;
  EXPECT_LE(max_saved_lsn(), 1u);
}

TEST_F(ConsumerTest, RejectedChangeGoesToTheDeadLetterSink) {
  FakeSink sink;
  sink.reject(2, 1, "record too large");
  FakeSink dead_letters(AckMode::kHold);
  auto consumer = make(base_config(), {{"a", &sink}}, NamedSink{"dlq", &dead_letters});
  consumer->start();
  feed(*consumer, transactions(1, 3, 2), true);
  ASSERT_TRUE(wait_until([&] { return dead_letters.held() == 1; }));

  auto letters = dead_letters.changes();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].entity, "cdcd.dead_letter");
  EXPECT_EQ(letters[0].lsn, 2u);
  auto body = nlohmann::json::parse(letters[0].new_row);
  EXPECT_NE(body["reason"].get<std::string>().find("record too large"), std::string::npos)
      << body.dump();
  EXPECT_EQ(body["sink"], "a");
  EXPECT_EQ(body["consumer"], kName);
  ASSERT_TRUE(body["change"].is_object()) << body.dump();
  EXPECT_EQ(body["change"]["lsn"], 2);
  EXPECT_EQ(body["change"]["seq"], 1);
  EXPECT_EQ(body["change"]["entity"], "public.orders");
  EXPECT_EQ(body["change"]["key"], nlohmann::json::parse(make_change(2, 1).key));
  EXPECT_EQ(metrics_.consumer(kName).dead_letters->Value(), 1);

  // Everything else is delivered, but the frontier waits for the dead letter.
  ASSERT_TRUE(wait_until([&] { return events_counted("a") == 5; }));
  EXPECT_LT(max_saved_lsn(), 2u);
  EXPECT_EQ(consumer->state(), ConsumerState::kRunning);
  ASSERT_EQ(dead_letters.release_oldest(), 1u);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished) << consumer->status().error;
  EXPECT_EQ(store_.latest_lsn(kName), 3u);
  expect_saves_well_formed();
}

TEST_F(ConsumerTest, UnacknowledgedDeadLetterHoldsTheCheckpoint) {
  FakeSink sink;
  sink.reject(2, 0, "record too large");
  FakeSink dead_letters(AckMode::kHold);
  auto config = base_config();
  config.batch.max_events = 1;
  auto consumer = make(config, {{"a", &sink}}, NamedSink{"dlq", &dead_letters});
  consumer->start();
  feed(*consumer, transactions(1, 4));
  ASSERT_TRUE(wait_until([&] { return dead_letters.held() == 1 && events_counted("a") == 3; }));
  consumer->abort();
  consumer->join();
  EXPECT_EQ(store_.latest_lsn(kName), 1u);
  EXPECT_EQ(max_saved_lsn(), 1u);
}

TEST_F(ConsumerTest, DeadLetterSinkFailureFailsTheConsumer) {
  FakeSink sink;
  sink.reject(2, 0, "record too large");
  FakeSink dead_letters;
  dead_letters.fail_at(2, "dlq unreachable");
  auto config = base_config();
  config.batch.max_events = 1;
  auto consumer = make(config, {{"a", &sink}}, NamedSink{"dlq", &dead_letters});
  consumer->start();
  feed(*consumer, transactions(1, 4), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFailed);
  const std::string error = consumer->status().error;
  EXPECT_NE(error.find("sink dlq"), std::string::npos) << error;
  EXPECT_NE(error.find("dlq unreachable"), std::string::npos) << error;
  EXPECT_LE(max_saved_lsn(), 1u);
}

// A dead letter the dead-letter sink refuses went nowhere: moving on would lose the change.
TEST_F(ConsumerTest, DeadLetterRejectedByTheDeadLetterSinkFailsTheConsumer) {
  FakeSink sink;
  sink.reject(2, 0, "record too large");
  FakeSink dead_letters;
  dead_letters.reject(2, 0, "dead letter too large as well");
  auto config = base_config();
  config.batch.max_events = 1;
  auto consumer = make(config, {{"a", &sink}}, NamedSink{"dlq", &dead_letters});
  consumer->start();
  feed(*consumer, transactions(1, 4), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  ASSERT_EQ(dead_letters.changes().size(), 1u);
  EXPECT_EQ(consumer->state(), ConsumerState::kFailed);
  EXPECT_LE(max_saved_lsn(), 1u) << "the change at lsn 2 reached no sink";
}

TEST_F(ConsumerTest, BadRecordWithStopNamesLocationAndReason) {
  FakeSink sink;
  auto consumer = make(base_config(), {{"a", &sink}});
  consumer->start();
  feed(*consumer,
       concat(
           {transaction(1),
            {make_bad_record(1, "{\"lsn\": ", "invalid JSON: unexpected end", "changes.jsonl:57")},
            transaction(2)}),
       true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFailed);
  const std::string error = consumer->status().error;
  EXPECT_NE(error.find("changes.jsonl:57"), std::string::npos) << error;
  EXPECT_NE(error.find("invalid JSON: unexpected end"), std::string::npos) << error;
  // What precedes the bad record is delivered and checkpointed, whatever the batch timing.
  auto changes = sink.changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].lsn, 1u);
  EXPECT_EQ(store_.latest_lsn(kName), 1u);
  EXPECT_EQ(max_saved_lsn(), 1u);
}

TEST_F(ConsumerTest, BadRecordWithDeadLetter) {
  FakeSink sink;
  FakeSink dead_letters(AckMode::kHold);
  auto consumer = make(base_config(), {{"a", &sink}}, NamedSink{"dlq", &dead_letters});
  consumer->start();
  feed(*consumer,
       concat(
           {transaction(1),
            {make_bad_record(1, "{\"lsn\": ", "invalid JSON: unexpected end", "changes.jsonl:57")},
            transaction(2)}),
       true);
  ASSERT_TRUE(wait_until([&] { return dead_letters.held() == 1; }));
  auto letters = dead_letters.changes();
  ASSERT_EQ(letters.size(), 1u);
  auto body = nlohmann::json::parse(letters[0].new_row);
  EXPECT_EQ(body["raw"], "{\"lsn\": ");
  EXPECT_EQ(body["reason"], "invalid JSON: unexpected end");
  EXPECT_EQ(body["location"], "changes.jsonl:57");
  EXPECT_EQ(body["consumer"], kName);
  EXPECT_FALSE(body.contains("raw_base64")) << "valid UTF-8 is kept as text only";
  EXPECT_EQ(metrics_.consumer(kName).dead_letters->Value(), 1);

  ASSERT_TRUE(wait_until([&] { return sink.changes().size() == 2; }));
  EXPECT_LT(max_saved_lsn(), 2u);
  ASSERT_EQ(dead_letters.release_oldest(), 1u);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished) << consumer->status().error;
  EXPECT_EQ(store_.latest_lsn(kName), 2u);
  expect_saves_well_formed();
}

TEST_F(ConsumerTest, DeadLetterWarningNamesLocationAndReason) {
  std::ostringstream& log = capture_log();
  FakeSink sink;
  sink.reject(3, 0, "record too large");
  FakeSink dead_letters;
  auto consumer = make(base_config(), {{"a", &sink}}, NamedSink{"dlq", &dead_letters});
  consumer->start();
  feed(*consumer,
       concat(
           {transaction(1),
            {make_bad_record(1, "{\"lsn\": ", "invalid JSON: unexpected end", "changes.jsonl:57")},
            transaction(2),
            transaction(3)}),
       true);
  ASSERT_TRUE(wait_stopped(*consumer));
  ASSERT_EQ(dead_letters.changes().size(), 2u);
  const std::string text = log.str();
  EXPECT_NE(text.find("dlq: changes.jsonl:57: invalid JSON: unexpected end"), std::string::npos)
      << text;
  EXPECT_NE(text.find("dlq: sink a rejected the change at lsn 3 (public.orders): record too large"),
            std::string::npos)
      << text;
}

// The dead letter is JSON text, so invalid UTF-8 shows as U+FFFD there; the original bytes must
// stay recoverable beside it.
TEST_F(ConsumerTest, DeadLetteredBadRecordKeepsInvalidUtf8Recoverable) {
  FakeSink sink;
  FakeSink dead_letters;
  auto consumer = make(base_config(), {{"a", &sink}}, NamedSink{"dlq", &dead_letters});
  consumer->start();
  const std::string raw = "{\"name\": \"caf\xe9\"}";
  feed(*consumer, {make_bad_record(0, raw, "invalid UTF-8", "changes.jsonl:3")}, true);
  ASSERT_TRUE(wait_stopped(*consumer));
  auto letters = dead_letters.changes();
  ASSERT_EQ(letters.size(), 1u);
  auto body = nlohmann::json::parse(letters[0].new_row);
  EXPECT_EQ(body["raw"], "{\"name\": \"caf\uFFFD\"}");
  EXPECT_EQ(body["raw_base64"], "eyJuYW1lIjogImNhZukifQ==");
  EXPECT_EQ(base64_decode(body["raw_base64"].get<std::string>()), raw);
}

TEST_F(ConsumerTest, DeadLetteredChangeKeepsInvalidUtf8Recoverable) {
  FakeSink sink;
  sink.reject(1, 0, "record too large");
  FakeSink dead_letters;
  auto consumer = make(base_config(), {{"a", &sink}}, NamedSink{"dlq", &dead_letters});
  consumer->start();
  Change change = make_change(1);
  change.new_row = "{\"id\":1000,\"name\":\"caf\xe9\"}";  // a row image is kept verbatim
  std::string native;
  encode_change(Format::kNative, change, EncodeContext{"demo", "fake"}, native);
  feed(*consumer, {change, test::make_end(1)}, true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished) << consumer->status().error;
  auto letters = dead_letters.changes();
  ASSERT_EQ(letters.size(), 1u);
  auto body = nlohmann::json::parse(letters[0].new_row);  // valid JSON whatever the change held
  ASSERT_TRUE(body["change"].is_string()) << body.dump();
  EXPECT_NE(body["change"].get<std::string>().find("caf\uFFFD"), std::string::npos);
  ASSERT_TRUE(body.contains("change_base64")) << body.dump();
  EXPECT_EQ(base64_decode(body["change_base64"].get<std::string>()), native);
}

TEST_F(ConsumerTest, UnacknowledgedBadRecordDeadLetterHoldsTheCheckpoint) {
  FakeSink sink;
  FakeSink dead_letters(AckMode::kHold);
  auto config = base_config();
  config.batch.max_events = 1;
  auto consumer = make(config, {{"a", &sink}}, NamedSink{"dlq", &dead_letters});
  consumer->start();
  feed(*consumer, concat({transaction(1),
                          {make_bad_record(1, "x", "bad", "f:2")},
                          transaction(2),
                          transaction(3)}));
  ASSERT_TRUE(wait_until([&] { return dead_letters.held() == 1 && events_counted("a") == 3; }));
  consumer->abort();
  consumer->join();
  EXPECT_EQ(store_.latest_lsn(kName), 1u);
  EXPECT_EQ(max_saved_lsn(), 1u);
}

TEST_F(ConsumerTest, FilteredTransactionsAdvanceTheCheckpoint) {
  FakeSink sink;
  auto config = base_config();
  config.entities = {"public.orders"};
  config.operations = {Operation::kInsert};
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  feed(*consumer,
       concat({transaction(1), transaction(2, 2, "public.customers"),
               transaction(3, 1, "public.orders", Operation::kDelete)}),
       true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished);
  auto changes = sink.changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].lsn, 1u);
  EXPECT_EQ(store_.latest_lsn(kName), 3u);
}

TEST_F(ConsumerTest, StartFromCheckpoint) {
  FakeSink sink;
  store_.put(kName, Checkpoint{10, end_offset(10), 123, 456});
  auto consumer = make(base_config(), {{"a", &sink}});
  StartPosition position = consumer->start_position();
  EXPECT_EQ(position.first_lsn, 11u);
  ASSERT_TRUE(position.has_resume);
  EXPECT_EQ(position.resume.lsn, 10u);
  EXPECT_EQ(position.resume.offset, end_offset(10));
  EXPECT_EQ(consumer->saved_lsn(), 10u);
  ASSERT_TRUE(consumer->status().checkpoint);
  EXPECT_EQ(consumer->status().checkpoint->lsn, 10u);

  EXPECT_FALSE(consumer->wants(make_change(10)));
  EXPECT_TRUE(consumer->wants(make_change(11)));
  EXPECT_FALSE(consumer->wants(make_end(10)));
  EXPECT_TRUE(consumer->wants(make_end(11)));
  EXPECT_FALSE(consumer->wants(make_bad_record(9, "x", "bad", "f:1")));
  EXPECT_TRUE(consumer->wants(make_bad_record(10, "x", "bad", "f:1")));

  // Resuming re-reads nothing and checkpoints on from there.
  consumer->start();
  feed(*consumer, transactions(9, 12), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  auto changes = sink.changes();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].lsn, 11u);
  EXPECT_EQ(store_.latest_lsn(kName), 12u);
  expect_saves_well_formed();
}

TEST_F(ConsumerTest, StartFromCheckpointWithoutOne) {
  FakeSink sink;
  auto consumer = make(base_config(), {{"a", &sink}});
  EXPECT_EQ(consumer->start_position().first_lsn, 0u);
  EXPECT_FALSE(consumer->start_position().has_resume);
  EXPECT_EQ(consumer->saved_lsn(), 0u);
  EXPECT_TRUE(consumer->wants(make_change(0)));
  EXPECT_TRUE(consumer->wants(make_end(0)));
  EXPECT_TRUE(consumer->wants(make_bad_record(0, "x", "bad", "f:1")));
}

TEST_F(ConsumerTest, StartFromBeginning) {
  FakeSink sink;
  auto config = base_config();
  config.start.kind = StartConfig::Kind::kBeginning;
  auto consumer = make(config, {{"a", &sink}});
  EXPECT_EQ(consumer->start_position().first_lsn, 0u);
  EXPECT_FALSE(consumer->start_position().has_resume);
  EXPECT_TRUE(consumer->wants(make_change(1)));
  EXPECT_TRUE(consumer->wants(make_end(1)));
}

TEST_F(ConsumerTest, StartFromLsn) {
  FakeSink sink;
  auto config = base_config();
  config.start.kind = StartConfig::Kind::kLsn;
  config.start.lsn = 50;
  auto consumer = make(config, {{"a", &sink}});
  EXPECT_EQ(consumer->start_position().first_lsn, 50u);
  EXPECT_FALSE(consumer->start_position().has_resume);
  EXPECT_FALSE(consumer->wants(make_change(49)));
  EXPECT_TRUE(consumer->wants(make_change(50)));
  EXPECT_FALSE(consumer->wants(make_end(49)));
  EXPECT_TRUE(consumer->wants(make_end(50)));

  consumer->start();
  feed(*consumer, transactions(48, 51), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  auto changes = sink.changes();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].lsn, 50u);
  EXPECT_EQ(store_.latest_lsn(kName), 51u);
}

TEST_F(ConsumerTest, StoredCheckpointWinsOverTheStartSetting) {
  FakeSink sink;
  ASSERT_TRUE(store_.save(kName, Checkpoint{30, 300, 0, 0}));
  for (auto kind :
       {StartConfig::Kind::kBeginning, StartConfig::Kind::kLsn, StartConfig::Kind::kTimestamp}) {
    auto config = base_config();
    config.start.kind = kind;
    config.start.lsn = 5;
    config.start.timestamp_us = 1;
    auto consumer = make(config, {{"a", &sink}});
    EXPECT_EQ(consumer->start_position().first_lsn, 31u);
    ASSERT_TRUE(consumer->start_position().has_resume);
    EXPECT_EQ(consumer->start_position().resume.offset, 300u);
    EXPECT_FALSE(consumer->wants(make_change(30)));
    EXPECT_TRUE(consumer->wants(make_change(31)));
  }
}

TEST_F(ConsumerTest, StartFromTimestamp) {
  FakeSink sink;
  const std::int64_t from = make_change(20).timestamp_us;
  auto config = base_config();
  config.start.kind = StartConfig::Kind::kTimestamp;
  config.start.timestamp_us = from;
  auto consumer = make(config, {{"a", &sink}});
  EXPECT_EQ(consumer->start_position().first_lsn, 0u);
  EXPECT_FALSE(consumer->wants(make_change(19)));
  EXPECT_TRUE(consumer->wants(make_change(20)));
  EXPECT_TRUE(consumer->wants(make_change(21)));

  consumer->start();
  feed(*consumer, transactions(18, 21), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  auto changes = sink.changes();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].lsn, 20u);
  EXPECT_EQ(store_.latest_lsn(kName), 21u);
}

TEST_F(ConsumerTest, WantsAppliesTheFilters) {
  FakeSink sink;
  auto config = base_config();
  config.entities = {"public.*"};
  config.exclude_entities = {"public.secrets"};
  config.operations = {Operation::kUpdate};
  auto consumer = make(config, {{"a", &sink}});
  EXPECT_TRUE(consumer->wants(make_change(1, 0, "public.orders", Operation::kUpdate)));
  EXPECT_FALSE(consumer->wants(make_change(1, 0, "public.orders", Operation::kInsert)));
  EXPECT_FALSE(consumer->wants(make_change(1, 0, "public.secrets", Operation::kUpdate)));
  EXPECT_FALSE(consumer->wants(make_change(1, 0, "audit.log", Operation::kUpdate)));
  EXPECT_TRUE(consumer->wants(make_end(1))) << "ends of filtered transactions move the checkpoint";
}

TEST_F(ConsumerTest, LoadingACheckpointThatFailsIsAnError) {
  FakeSink sink;
  store_.set_failing(true);
  ConsumerSetup setup;
  setup.config = base_config();
  setup.source = &source_;
  setup.sinks = {{"a", &sink}};
  setup.store = &store_;
  setup.metrics = &metrics_;
  setup.log = test::null_logger();
  Consumer consumer(std::move(setup));
  auto loaded = consumer.load_checkpoint();
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message.find(kName), std::string::npos) << loaded.error().message;
}

TEST_F(ConsumerTest, FailedCheckpointSaveIsRetried) {
  FakeSink sink;
  auto consumer = make(base_config(), {{"a", &sink}});
  store_.set_failing(true);
  consumer->start();
  feed(*consumer, transactions(1, 3));
  ASSERT_TRUE(wait_until([&] { return events_counted("a") == 3; }));
  EXPECT_EQ(consumer->state(), ConsumerState::kRunning) << "a failed save is not fatal";
  EXPECT_EQ(consumer->saved_lsn(), 0u);
  store_.set_failing(false);
  ASSERT_TRUE(wait_until([&] { return store_.latest_lsn(kName) == 3; }));
  EXPECT_EQ(consumer->saved_lsn(), 3u);
}

TEST_F(ConsumerTest, LagMetricsReturnToZeroWhenCaughtUp) {
  FakeSink sink(AckMode::kHold);
  const std::int64_t ten_seconds_ago = now_us() - 10'000'000;
  source_.set_head_offset(end_offset(5));
  auto config = base_config();
  config.batch.max_events = 1;
  auto consumer = make(config, {{"a", &sink}});
  ConsumerMetrics gauges = metrics_.consumer(kName);
  consumer->start();
  std::vector<SourceEvent> events;
  for (std::uint64_t lsn = 1; lsn <= 5; ++lsn) {
    for (auto& event : transaction(lsn, 1, "public.orders", Operation::kInsert, ten_seconds_ago)) {
      events.push_back(std::move(event));
    }
  }
  feed(*consumer, std::move(events));
  ASSERT_TRUE(wait_until([&] {
    return gauges.lag_seconds->Value() >= 10 && gauges.lag_bytes->Value() == end_offset(5);
  })) << gauges.lag_seconds->Value()
      << " s, " << gauges.lag_bytes->Value() << " bytes";
  // Acknowledge everything as it comes (max_in_flight holds the last batch back until then).
  ASSERT_TRUE(wait_until([&] {
    sink.release_oldest(10);
    return store_.latest_lsn(kName) == 5;
  }));
  ASSERT_TRUE(wait_until([&] {
    return gauges.lag_seconds->Value() == 0 && gauges.lag_bytes->Value() == 0 &&
           gauges.queue_bytes->Value() == 0;
  })) << gauges.lag_seconds->Value()
      << " s, " << gauges.lag_bytes->Value() << " bytes";
  EXPECT_EQ(gauges.checkpoint_lsn->Value(), 5);
  auto status = consumer->status();
  EXPECT_EQ(status.lag_seconds, 0);
  EXPECT_EQ(status.lag_bytes, 0u);
  ASSERT_TRUE(status.checkpoint);
  EXPECT_EQ(status.checkpoint->lsn, 5u);
}

// The consumer thread is stuck in write(); refresh_metrics() (the daemon's periodic call) must
// still see the change it is trying to deliver getting older.
TEST_F(ConsumerTest, LagGrowsWhileASinkWriteBlocks) {
  FakeSink sink;
  auto config = base_config();
  config.batch.max_events = 1;
  auto consumer = make(config, {{"a", &sink}});
  struct Unblock {
    FakeSink& sink;
    ~Unblock() { sink.set_write_blocked(false); }  // before the consumer joins its thread
  } unblock{sink};
  ConsumerMetrics gauges = metrics_.consumer(kName);
  consumer->start();
  feed(*consumer, transaction(1));
  ASSERT_TRUE(wait_until([&] {
    consumer->refresh_metrics();
    return store_.latest_lsn(kName) == 1 && gauges.lag_seconds->Value() == 0;
  }));

  sink.set_write_blocked(true);
  const std::int64_t ten_seconds_ago = now_us() - 10'000'000;
  feed(*consumer, transaction(2, 1, "public.orders", Operation::kInsert, ten_seconds_ago));
  ASSERT_TRUE(wait_until([&] { return sink.writes_blocked() == 1; }));
  EXPECT_TRUE(wait_until(
      [&] {
        consumer->refresh_metrics();
        return gauges.lag_seconds->Value() >= 10;
      },
      std::chrono::seconds(5)))
      << "lag_seconds stays at " << gauges.lag_seconds->Value() << " while write() blocks";
}

TEST_F(ConsumerTest, MetricsAndStatusAreReadableFromOtherThreads) {
  FakeSink sink(AckMode::kAsync);
  auto config = base_config();
  config.batch.max_events = 16;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done) {
      consumer->refresh_metrics();
      auto status = consumer->status();
      EXPECT_LE(consumer->saved_lsn(), 2000u);
      EXPECT_EQ(status.name, kName);
    }
  });
  feed(*consumer, transactions(1, 2000, 2), true);
  const bool stopped = wait_stopped(*consumer);
  done = true;
  reader.join();
  ASSERT_TRUE(stopped);
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished);
  EXPECT_EQ(store_.latest_lsn(kName), 2000u);
}

TEST_F(ConsumerTest, QueuedChangesCountTowardsLag) {
  FakeSink sink(AckMode::kHold);
  auto config = base_config();
  config.batch.max_events = 1;
  config.batch.max_in_flight = 1;
  auto consumer = make(config, {{"a", &sink}});
  ConsumerMetrics gauges = metrics_.consumer(kName);
  const std::int64_t ten_seconds_ago = now_us() - 10'000'000;
  std::vector<SourceEvent> events;
  for (std::uint64_t lsn = 1; lsn <= 5; ++lsn) {
    for (auto& event : transaction(lsn, 1, "public.orders", Operation::kInsert, ten_seconds_ago)) {
      events.push_back(std::move(event));
    }
  }
  const std::size_t all_bytes = bytes_of(events);
  const std::size_t after_first_bytes =
      all_bytes - bytes_of(transaction(1, 1, "public.orders", Operation::kInsert, ten_seconds_ago));
  feed(*consumer, std::move(events));

  // Not started: nothing was ever in flight, the changes only wait in the queue.
  consumer->refresh_metrics();
  EXPECT_EQ(gauges.queue_bytes->Value(), all_bytes);
  EXPECT_GE(gauges.lag_seconds->Value(), 10);

  // One batch in flight; the consumer holds the rest, taken from its queue but not handled.
  consumer->start();
  ASSERT_TRUE(wait_until([&] {
    consumer->refresh_metrics();
    return sink.held() == 1 && gauges.queue_bytes->Value() == after_first_bytes;
  })) << gauges.queue_bytes->Value();
  EXPECT_GE(gauges.lag_seconds->Value(), 10);
  EXPECT_EQ(consumer->status().queue_bytes, after_first_bytes);

  // Delivered and acknowledged: no lag, nothing queued.
  ASSERT_TRUE(wait_until([&] {
    sink.release_oldest(10);
    return store_.latest_lsn(kName) == 5;
  }));
  ASSERT_TRUE(wait_until([&] {
    consumer->refresh_metrics();
    return gauges.lag_seconds->Value() == 0 && gauges.queue_bytes->Value() == 0;
  })) << gauges.lag_seconds->Value()
      << " s, " << gauges.queue_bytes->Value() << " bytes";
}

// The ledger holds deliveries, acknowledged or not, behind its oldest unacknowledged one. At its
// bound the consumer takes no more events (its queue fills and the source pauses) instead of
// growing; the in-flight window alone cannot bound it when later deliveries are acknowledged.
TEST_F(ConsumerTest, TakesNoEventsWhileTheLedgerIsAtItsBound) {
  FakeSink sink(AckMode::kHoldFirst);
  auto config = base_config();
  config.batch.max_events = 1;
  config.batch.max_in_flight = 100;
  constexpr std::size_t kCapacity = 4;
  auto consumer = make(config, {{"a", &sink}}, std::nullopt, milliseconds(10), kCapacity);
  consumer->start();
  const std::size_t beyond_bound_bytes = bytes_of(transactions(kCapacity + 1, 20));
  feed(*consumer, transactions(1, 20));
  // Batch 1 is stuck, 2-4 are acknowledged behind it: the consumer waits at the change of lsn 5
  // with everything from there on still counted against its queue.
  ASSERT_TRUE(wait_until([&] { return consumer->queue().bytes() == beyond_bound_bytes; }))
      << consumer->queue().bytes() << " bytes not handled, " << sink.batch_count() << " batches";
  EXPECT_EQ(sink.batch_count(), kCapacity);
  EXPECT_EQ(sink.unacknowledged(), 1u);
  EXPECT_EQ(store_.latest_lsn(kName), 0u);

  ASSERT_EQ(sink.release_oldest(), 1u);
  feed(*consumer, {}, true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished) << consumer->status().error;
  EXPECT_EQ(sink.changes().size(), 20u);
  EXPECT_EQ(store_.latest_lsn(kName), 20u);
  expect_saves_well_formed();
}

// Dead letters for bad records are deliveries too: a stalled dead-letter sink must not let them
// pile up without bound.
TEST_F(ConsumerTest, DeadLettersWaitForRoomInTheWindow) {
  FakeSink sink;
  FakeSink dead_letters(AckMode::kHold);
  auto config = base_config();
  config.batch.max_in_flight = 2;
  auto consumer = make(config, {{"a", &sink}}, NamedSink{"dlq", &dead_letters});
  consumer->start();
  std::vector<SourceEvent> events;
  for (std::uint64_t lsn = 1; lsn <= 5; ++lsn) {
    events.emplace_back(make_bad_record(lsn - 1, "x", "bad", "f:" + std::to_string(lsn)));
    for (auto& event : transaction(lsn)) events.push_back(std::move(event));
  }
  feed(*consumer, std::move(events), true);
  ASSERT_TRUE(wait_until([&] { return dead_letters.held() == 2; }));
  EXPECT_EQ(dead_letters.max_unacknowledged(), 2u);
  while (
      !wait_until([&] { return consumer->state() != ConsumerState::kRunning; }, milliseconds(1))) {
    dead_letters.release_oldest();
  }
  consumer->join();
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished) << consumer->status().error;
  EXPECT_EQ(dead_letters.changes().size(), 5u);
  EXPECT_EQ(dead_letters.max_unacknowledged(), 2u);
  EXPECT_EQ(store_.latest_lsn(kName), 5u);
}

TEST_F(ConsumerTest, EndOfStreamDrainsAndSavesAFinalCheckpoint) {
  FakeSink sink(AckMode::kAsync);
  auto config = base_config();
  config.batch.max_wait = kForever;
  auto consumer = make(config, {{"a", &sink}}, std::nullopt, kForever);
  consumer->start();
  feed(*consumer, transactions(1, 50, 2), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished);
  EXPECT_EQ(sink.changes().size(), 100u);
  auto saves = store_.saves(kName);
  ASSERT_EQ(saves.size(), 1u) << "only the final save within an hour-long interval";
  EXPECT_EQ(saves[0].lsn, 50u);
  EXPECT_EQ(consumer->saved_lsn(), 50u);
  EXPECT_EQ(consumer->status().state, ConsumerState::kFinished);
}

TEST_F(ConsumerTest, FailFromOutsideStopsTakingEvents) {
  FakeSink sink(AckMode::kHold);
  auto config = base_config();
  config.batch.max_events = 1;
  config.batch.max_in_flight = 1;
  auto consumer = make(config, {{"a", &sink}});
  consumer->start();
  feed(*consumer, transactions(1, 3));
  // Busy: batch 1 in flight, transactions 2 and 3 waiting for room in the window.
  ASSERT_TRUE(wait_until([&] {
    return sink.held() == 1 && consumer->queue().bytes() == bytes_of(transactions(2, 3));
  }));
  consumer->fail("source demo: permission denied");
  EXPECT_FALSE(consumer->accepting()) << "the source thread must see it at once";
  feed(*consumer, transactions(4, 6));
  consumer->fail("a later reason");
  // It stops without waiting for the acknowledgement it is owed...
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFailed);
  EXPECT_EQ(consumer->status().error, "source demo: permission denied") << "the first reason wins";
  // ...and takes nothing more: neither what waited nor what came after the failure.
  sink.release_oldest(10);
  std::vector<std::uint64_t> delivered;
  for (const auto& change : sink.changes()) delivered.push_back(change.lsn);
  EXPECT_EQ(delivered, std::vector<std::uint64_t>{1});
  EXPECT_TRUE(store_.saves(kName).empty());
}

TEST_F(ConsumerTest, LateAcknowledgementAfterTheConsumerIsGone) {
  FakeSink sink(AckMode::kHold);
  {
    auto config = base_config();
    config.batch.max_events = 1;
    auto consumer = make(config, {{"a", &sink}});
    consumer->start();
    feed(*consumer, transactions(1, 2));
    ASSERT_TRUE(wait_until([&] { return sink.held() == 2; }));
  }  // destroyed with both batches unacknowledged
  EXPECT_TRUE(store_.saves(kName).empty());
  // The acknowledgement callbacks outlive the consumer. Firing them must touch nothing of it (the
  // sanitizer build turns a use after free into a failure here), save nothing, and let go of
  // everything they hold: afterwards each batch is referenced by the sink's record alone.
  EXPECT_EQ(sink.release_oldest(10), 2u);
  EXPECT_TRUE(store_.saves(kName).empty());
  for (const auto& batch : sink.batches()) {
    EXPECT_EQ(batch.use_count(), 2) << "batch " << batch->id << " is still held somewhere";
  }
}

// ---- transaction ends for sinks that write transaction metadata (Sink::tracks_transactions) ----

class TransactionTrackingSink : public FakeSink {
 public:
  using FakeSink::FakeSink;
  bool tracks_transactions() const override { return true; }
};

TEST_F(ConsumerTest, TransactionEndAfterAFullBatchReachesTrackingSinksAtOnce) {
  TransactionTrackingSink tracking;
  FakeSink plain;
  auto config = base_config();
  config.batch.max_events = 2;  // full at the last change, before the transaction's end
  config.batch.max_wait = milliseconds(20);
  auto consumer = make(config, {{"tracking", &tracking}, {"plain", &plain}});
  consumer->start();
  feed(*consumer, transaction(100, 2));
  // The tracking sink learns of 100's end in a batch without changes, without waiting for another
  // change; the other sink never gets such a batch.
  ASSERT_TRUE(wait_until([&] { return tracking.batch_count() == 2; }));
  auto batches = tracking.batches();
  EXPECT_EQ(batches[0]->changes.size(), 2u);
  EXPECT_EQ(batches[0]->transaction_ended_lsn, 0u);
  EXPECT_TRUE(batches[1]->changes.empty());
  EXPECT_EQ(batches[1]->transaction_ended_lsn, 100u);
  ASSERT_TRUE(wait_until([&] { return store_.latest_lsn(kName) == 100; }));
  EXPECT_EQ(plain.batch_count(), 1u);
  // A transaction whose end comes while its batch is open: the batch says so.
  feed(*consumer, transaction(200, 1), true);
  ASSERT_TRUE(wait_stopped(*consumer));
  EXPECT_EQ(consumer->state(), ConsumerState::kFinished);
  batches = tracking.batches();
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[2]->changes.size(), 1u);
  EXPECT_EQ(batches[2]->transaction_ended_lsn, 200u);
  for (const auto& batch : plain.batches()) EXPECT_FALSE(batch->changes.empty());
  EXPECT_EQ(plain.changes().size(), 3u);
  EXPECT_EQ(store_.latest_lsn(kName), 200u);
}

TEST_F(ConsumerTest, CheckpointWaitsForTheBatchThatEndsTheTransaction) {
  TransactionTrackingSink tracking(AckMode::kHold);
  auto config = base_config();
  config.batch.max_events = 2;
  config.batch.max_wait = milliseconds(10);
  config.batch.max_in_flight = 10;
  auto consumer = make(config, {{"tracking", &tracking}});
  consumer->start();
  feed(*consumer, transaction(100, 2));
  ASSERT_TRUE(wait_until([&] { return tracking.held() == 2; }));
  ASSERT_TRUE(tracking.release_batch(1));  // the changes, not yet the END
  // Not a wait for correctness: time for the consumer to checkpoint wrongly, if it would.
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(store_.latest_lsn(kName), 0u);
  ASSERT_TRUE(tracking.release_batch(2));
  ASSERT_TRUE(wait_until([&] { return store_.latest_lsn(kName) == 100; }));
  consumer->abort();
  consumer->join();
}

}  // namespace
}  // namespace cdcd
