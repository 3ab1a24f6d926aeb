#include "daemon/pipeline/event_queue.h"

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/fakes.h"
#include "tests/support/test_util.h"

namespace cdcd {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using test::make_change;
using test::make_end;

// Far enough that reaching it means the wait was not woken as it should have been.
constexpr auto kLongWait = std::chrono::seconds(30);

std::vector<SourceEvent> events_of(std::vector<SourceEvent> events) { return events; }

// Consumes the backlog, as a consumer does; returns how many events it held.
std::size_t drain(EventBacklog& backlog) {
  std::size_t count = 0;
  for (; !backlog.empty(); backlog.pop_front()) ++count;
  return count;
}

TEST(EventQueueTest, BoundedInBytes) {
  EventQueue queue(100);
  EXPECT_TRUE(queue.has_room());
  EXPECT_EQ(queue.bytes(), 0u);
  queue.push(events_of({make_end(1)}), 60);
  EXPECT_TRUE(queue.has_room());
  EXPECT_EQ(queue.bytes(), 60u);
  queue.push(events_of({make_end(2)}), 40);
  EXPECT_FALSE(queue.has_room()) << "full at exactly the bound";
  // The producer asks has_room() first, so a chunk may overshoot; the bytes still add up.
  queue.push(events_of({make_end(3)}), 50);
  EXPECT_EQ(queue.bytes(), 150u);
  EventBacklog out;
  queue.pop_all(out, Clock::now());
  EXPECT_EQ(drain(out), 3u);
  queue.release(150);
  EXPECT_EQ(queue.bytes(), 0u);
  EXPECT_TRUE(queue.has_room());
}

// Taking events makes no room: they are still in memory until the consumer has handled them.
// Otherwise the producer could fill the queue again behind a consumer that took everything, and
// a consumer would hold twice its bound.
TEST(EventQueueTest, TakenEventsCountUntilReleased) {
  EventQueue queue(100);
  queue.push(events_of({make_change(1), make_end(1)}), 100);
  EventBacklog out;
  queue.pop_all(out, Clock::now());
  EXPECT_EQ(queue.bytes(), 100u);
  EXPECT_FALSE(queue.has_room());
  out.pop_front();
  queue.release(60);
  EXPECT_EQ(queue.bytes(), 40u);
  EXPECT_TRUE(queue.has_room());
  queue.push(events_of({make_end(2)}), 60);
  EXPECT_FALSE(queue.has_room()) << "the unhandled end of lsn 1 still counts";
  queue.release(1000);
  EXPECT_EQ(queue.bytes(), 0u) << "releasing more than is held empties the count, no wrap";
}

// The queue's vector holds every event in a SourceEvent slot: an end (all a filtering consumer
// queues) takes as much memory as a change without strings, and must be counted so.
TEST(EventQueueTest, EveryEventCountsAtLeastItsSlot) {
  EXPECT_GE(byte_size(SourceEvent(make_end(1))), sizeof(SourceEvent));
  EXPECT_GE(byte_size(SourceEvent(make_change(1))), sizeof(SourceEvent));
  EXPECT_GE(byte_size(SourceEvent(BadRecord{})), sizeof(SourceEvent));
}

TEST(EventQueueTest, PopAllKeepsOrderAcrossChunksAndPops) {
  EventQueue queue(1 << 20);
  queue.push(events_of({make_change(1), make_end(1)}), 2);
  queue.push(events_of({make_change(2)}), 1);
  EventBacklog out;
  queue.pop_all(out, Clock::now());
  queue.push(events_of({make_end(2), make_change(3)}), 2);
  queue.pop_all(out, Clock::now());
  // (is a change, lsn) in queue order.
  const std::vector<std::pair<bool, std::uint64_t>> expected = {
      {true, 1}, {false, 1}, {true, 2}, {false, 2}, {true, 3}};
  for (const auto& [is_change, lsn] : expected) {
    ASSERT_FALSE(out.empty());
    if (is_change) {
      EXPECT_EQ(std::get<Change>(out.front()).lsn, lsn);
    } else {
      EXPECT_EQ(std::get<TransactionEnd>(out.front()).lsn, lsn);
    }
    out.pop_front();
  }
  EXPECT_TRUE(out.empty());
}

TEST(EventQueueTest, BacklogOldestChangeSkipsConsumedEvents) {
  EventQueue queue(1 << 20);
  queue.push(events_of({make_change(1, 0, "t", Operation::kInsert, 111), make_end(1, 111)}), 2);
  queue.push(events_of({make_change(2, 0, "t", Operation::kInsert, 222)}), 1);
  EventBacklog out;
  queue.pop_all(out, Clock::now());
  EXPECT_EQ(out.oldest_change_timestamp(), 111);
  out.pop_front();
  EXPECT_EQ(out.oldest_change_timestamp(), 222) << "the consumed change no longer counts";
  out.pop_front();
  out.pop_front();
  EXPECT_FALSE(out.oldest_change_timestamp().has_value());
}

TEST(EventQueueTest, PushClearsTheMovedChunk) {
  EventQueue queue(1 << 20);
  std::vector<SourceEvent> chunk{make_change(1)};
  queue.push(std::move(chunk), 1);
  EXPECT_TRUE(chunk.empty());  // NOLINT(bugprone-use-after-move): the producer reuses it
}

TEST(EventQueueTest, PopAllWaitsUntilTheDeadlineWhenEmpty) {
  EventQueue queue(100);
  EventBacklog out;
  auto before = Clock::now();
  queue.pop_all(out, before + milliseconds(50));
  EXPECT_GE(Clock::now() - before, milliseconds(50));
  EXPECT_TRUE(out.empty());
}

TEST(EventQueueTest, PopAllReturnsWhenEventsArrive) {
  EventQueue queue(100);
  auto popped = std::async(std::launch::async, [&queue] {
    EventBacklog out;
    queue.pop_all(out, Clock::now() + kLongWait);
    return drain(out);
  });
  ASSERT_EQ(popped.wait_for(milliseconds(20)), std::future_status::timeout);
  queue.push(events_of({make_change(1), make_end(1)}), 10);
  ASSERT_EQ(popped.wait_for(kLongWait / 2), std::future_status::ready);
  EXPECT_EQ(popped.get(), 2u);
}

TEST(EventQueueTest, EndOfStreamWakesAndSticks) {
  EventQueue queue(100);
  EXPECT_FALSE(queue.end_of_stream());
  auto popped = std::async(std::launch::async, [&queue] {
    EventBacklog out;
    queue.pop_all(out, Clock::now() + kLongWait);
    return drain(out);
  });
  queue.push({}, 0, true);
  ASSERT_EQ(popped.wait_for(kLongWait / 2), std::future_status::ready);
  EXPECT_EQ(popped.get(), 0u);
  EXPECT_TRUE(queue.end_of_stream());
  queue.push(events_of({make_end(1)}), 1);
  EXPECT_TRUE(queue.end_of_stream());
  EventBacklog out;
  auto before = Clock::now();
  queue.pop_all(out, before + kLongWait);
  EXPECT_LT(Clock::now() - before, kLongWait / 2) << "an ended stream never blocks";
  EXPECT_EQ(drain(out), 1u);
}

TEST(EventQueueTest, EndOfStreamWithTheLastChunk) {
  EventQueue queue(100);
  queue.push(events_of({make_change(1), make_end(1)}), 10, true);
  EXPECT_TRUE(queue.end_of_stream());
  EventBacklog out;
  queue.pop_all(out, Clock::now());
  EXPECT_EQ(drain(out), 2u);
  EXPECT_EQ(queue.bytes(), 10u);
}

TEST(EventQueueTest, WakeInterruptsAWaitingPop) {
  EventQueue queue(100);
  std::atomic<bool> returned{false};
  std::thread popper([&] {
    EventBacklog out;
    queue.pop_all(out, Clock::now() + kLongWait);
    returned = true;
  });
  queue.wake();
  ASSERT_TRUE(test::wait_until([&] { return returned.load(); }, kLongWait / 2));
  popper.join();
}

TEST(EventQueueTest, WakeBeforePopIsNotLostButConsumedOnce) {
  EventQueue queue(100);
  queue.wake();
  EventBacklog out;
  auto before = Clock::now();
  queue.pop_all(out, before + kLongWait);
  EXPECT_LT(Clock::now() - before, kLongWait / 2);
  before = Clock::now();
  queue.pop_all(out, before + milliseconds(30));
  EXPECT_GE(Clock::now() - before, milliseconds(30)) << "the wake was consumed by the first pop";
}

TEST(EventQueueTest, OldestChangeTimestampIsTheFirstQueuedChange) {
  EventQueue queue(1 << 20);
  EXPECT_FALSE(queue.oldest_change_timestamp().has_value());
  queue.push(events_of({make_end(1, 111)}), 1);
  EXPECT_FALSE(queue.oldest_change_timestamp().has_value()) << "an end is not a change";
  queue.push(events_of({make_change(2, 0, "t", Operation::kInsert, 222),
                        make_change(2, 1, "t", Operation::kInsert, 333)}),
             2);
  EXPECT_EQ(queue.oldest_change_timestamp(), 222);
  EventBacklog out;
  queue.pop_all(out, Clock::now());
  EXPECT_FALSE(queue.oldest_change_timestamp().has_value());
}

TEST(EventQueueTest, WaitForRoomReturnsOnceReleased) {
  EventQueue queue(10);
  queue.push(events_of({make_end(1)}), 10);
  ASSERT_FALSE(queue.has_room());
  std::atomic<bool> returned{false};
  std::thread producer([&] {
    queue.wait_for_room(Clock::now() + kLongWait);
    returned = true;
  });
  EventBacklog out;
  queue.pop_all(out, Clock::now());
  drain(out);
  queue.release(10);
  ASSERT_TRUE(test::wait_until([&] { return returned.load(); }, kLongWait / 2));
  producer.join();
  EXPECT_TRUE(queue.has_room());
}

TEST(EventQueueTest, WaitForRoomGivesUpAtTheDeadline) {
  EventQueue queue(10);
  queue.push(events_of({make_end(1)}), 10);
  auto before = Clock::now();
  queue.wait_for_room(before + milliseconds(30));
  EXPECT_GE(Clock::now() - before, milliseconds(30));
  EXPECT_FALSE(queue.has_room());
}

}  // namespace
}  // namespace cdcd
