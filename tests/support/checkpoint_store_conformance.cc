#include "tests/support/checkpoint_store_conformance.h"

#include <atomic>
#include <cstdint>
#include <limits>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace cdcd::test {

namespace {

// A checkpoint whose fields all derive from its lsn, so that a record mixed from two saves shows.
Checkpoint derived(std::uint64_t lsn) {
  return Checkpoint{lsn, lsn * 7 + 1, static_cast<std::int64_t>(lsn) * 1000 + 3,
                    1763719200000000 + static_cast<std::int64_t>(lsn), lsn * 11 + 5};
}

bool is_derived(const Checkpoint& checkpoint) {
  const Checkpoint expected = derived(checkpoint.lsn);
  return checkpoint.offset == expected.offset &&
         checkpoint.commit_time_us == expected.commit_time_us &&
         checkpoint.segment == expected.segment;
}

std::unique_ptr<CheckpointStore> started(CheckpointStoreHarness& harness) {
  auto store = harness.make_store();
  auto status = store->start();
  EXPECT_TRUE(status) << status.error().message;
  return store;
}

std::optional<Checkpoint> load(CheckpointStore& store, const std::string& consumer) {
  auto loaded = store.load(consumer);
  EXPECT_TRUE(loaded) << consumer << ": " << loaded.error().message;
  return loaded ? *loaded : std::nullopt;
}

void load_of_a_missing_consumer_is_nullopt(CheckpointStoreHarness& harness) {
  auto store = started(harness);
  auto loaded = store->load("nobody");
  ASSERT_TRUE(loaded) << loaded.error().message;
  EXPECT_FALSE(loaded->has_value());
}

void save_and_load_round_trip_every_field(CheckpointStoreHarness& harness) {
  auto store = started(harness);
  const Checkpoint largest{std::numeric_limits<std::uint64_t>::max(),
                           std::numeric_limits<std::uint64_t>::max() - 1, 1763719200123456,
                           1763719201000000, std::numeric_limits<std::uint64_t>::max() - 2};
  ASSERT_TRUE(store->save("largest", largest));
  ASSERT_TRUE(store->save("derived", derived(42)));
  auto loaded = load(*store, "largest");
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->lsn, largest.lsn);
  EXPECT_EQ(loaded->offset, largest.offset);
  EXPECT_EQ(loaded->commit_time_us, largest.commit_time_us);
  EXPECT_EQ(loaded->segment, largest.segment);
  EXPECT_GT(loaded->saved_at_us, 0);
  loaded = load(*store, "derived");
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->lsn, 42u);
  EXPECT_TRUE(is_derived(*loaded));
}

void a_save_replaces_the_previous_one_and_survives_a_restart(CheckpointStoreHarness& harness) {
  {
    auto store = started(harness);
    ASSERT_TRUE(store->save("orders", derived(1)));
    ASSERT_TRUE(store->save("orders", derived(2)));
    EXPECT_EQ(load(*store, "orders").value_or(Checkpoint{}).lsn, 2u);
  }
  auto restarted = started(harness);
  auto loaded = load(*restarted, "orders");
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->lsn, 2u);
  EXPECT_TRUE(is_derived(*loaded));
}

void remove_forgets_only_that_consumer(CheckpointStoreHarness& harness) {
  auto store = started(harness);
  ASSERT_TRUE(store->save("orders", derived(5)));
  ASSERT_TRUE(store->save("users", derived(6)));
  ASSERT_TRUE(store->remove("orders"));
  ASSERT_TRUE(store->remove("never-saved"));
  EXPECT_FALSE(load(*store, "orders"));
  EXPECT_EQ(load(*store, "users").value_or(Checkpoint{}).lsn, 6u);
  store.reset();
  auto restarted = started(harness);
  EXPECT_FALSE(load(*restarted, "orders"));
}

void concurrent_saves_lose_and_tear_none(CheckpointStoreHarness& harness) {
  auto store = started(harness);
  constexpr int kThreads = 6;
  constexpr std::uint64_t kSaves = 40;
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string own = "consumer-" + std::to_string(t);
      for (std::uint64_t lsn = 1; lsn <= kSaves; ++lsn) {
        if (!store->save(own, derived(lsn))) ++failed;
        if (!store->save("shared", derived(lsn * kThreads + t))) ++failed;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failed, 0);
  for (int t = 0; t < kThreads; ++t) {
    auto loaded = load(*store, "consumer-" + std::to_string(t));
    ASSERT_TRUE(loaded);
    EXPECT_EQ(loaded->lsn, kSaves);
    EXPECT_TRUE(is_derived(*loaded));
  }
  // One of the last saves wins, whole.
  auto shared = load(*store, "shared");
  ASSERT_TRUE(shared);
  EXPECT_TRUE(is_derived(*shared));
  EXPECT_EQ(shared->lsn / kThreads, kSaves);
}

void an_interrupted_save_leaves_the_previous_checkpoint(CheckpointStoreHarness& harness) {
  {
    auto store = started(harness);
    ASSERT_TRUE(store->save("orders", derived(10)));
  }
  if (!harness.leave_an_interrupted_save("orders", derived(11))) {
    GTEST_SKIP() << "this store cannot be interrupted half-way through a save";
  }
  auto restarted = started(harness);
  auto loaded = restarted->load("orders");
  ASSERT_TRUE(loaded) << loaded.error().message;
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->lsn, 10u);
  EXPECT_TRUE(is_derived(**loaded));
  // And the store goes on saving.
  ASSERT_TRUE(restarted->save("orders", derived(12)));
  EXPECT_EQ(load(*restarted, "orders").value_or(Checkpoint{}).lsn, 12u);
}

void a_second_store_is_refused_while_the_first_holds_the_storage(CheckpointStoreHarness& harness) {
  auto first = started(harness);
  ASSERT_TRUE(first->save("orders", derived(1)));
  auto second = harness.make_store();
  auto refused = second->start();
  ASSERT_FALSE(refused) << "two stores opened the same storage at once";
  EXPECT_FALSE(refused.error().retryable) << refused.error().message;
  EXPECT_NE(refused.error().message.find("in use"), std::string::npos) << refused.error().message;
  // The first store is not disturbed by the refusal.
  ASSERT_TRUE(first->save("orders", derived(2)));
  EXPECT_EQ(load(*first, "orders").value_or(Checkpoint{}).lsn, 2u);

  first.reset();
  auto started_now = second->start();
  ASSERT_TRUE(started_now) << started_now.error().message;
  EXPECT_EQ(load(*second, "orders").value_or(Checkpoint{}).lsn, 2u);
}

using ConformanceBody = void (*)(CheckpointStoreHarness&);

class ConformanceTest : public ::testing::Test {
 public:
  ConformanceTest(CheckpointStoreHarnessFactory factory, ConformanceBody body)
      : factory_(std::move(factory)), body_(body) {}

  void TestBody() override {
    auto harness = factory_();
    ASSERT_TRUE(harness);
    body_(*harness);
  }

 private:
  CheckpointStoreHarnessFactory factory_;
  ConformanceBody body_;
};

}  // namespace

void register_checkpoint_store_conformance(const std::string& suite,
                                           CheckpointStoreHarnessFactory factory) {
  const std::pair<const char*, ConformanceBody> tests[] = {
      {"LoadOfAMissingConsumerIsNullopt", load_of_a_missing_consumer_is_nullopt},
      {"SaveAndLoadRoundTripEveryField", save_and_load_round_trip_every_field},
      {"ASaveReplacesThePreviousOneAndSurvivesARestart",
       a_save_replaces_the_previous_one_and_survives_a_restart},
      {"RemoveForgetsOnlyThatConsumer", remove_forgets_only_that_consumer},
      {"ConcurrentSavesLoseAndTearNone", concurrent_saves_lose_and_tear_none},
      {"AnInterruptedSaveLeavesThePreviousCheckpoint",
       an_interrupted_save_leaves_the_previous_checkpoint},
      {"ASecondStoreIsRefusedWhileTheFirstHoldsTheStorage",
       a_second_store_is_refused_while_the_first_holds_the_storage},
  };
  for (const auto& [name, body] : tests) {
    ::testing::RegisterTest(suite.c_str(), name, nullptr, nullptr, __FILE__, __LINE__,
                            [factory, body = body]() -> ::testing::Test* {
                              return new ConformanceTest(factory, body);
                            });
  }
}

}  // namespace cdcd::test
