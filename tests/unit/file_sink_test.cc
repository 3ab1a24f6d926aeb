// The file sink's fsync policies, with fdatasync replaced by a counting (or failing) stand-in.
// The sink contract itself is checked by the conformance suite (component/sink_conformance_test).

#include <errno.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "daemon/metrics/metrics.h"
#include "sinks/file/file_sink.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::atomic<int> sync_calls{0};
std::atomic<int> failing_syncs{0};  // the next this many syncs fail with EIO

int fake_sync(int) {
  ++sync_calls;
  if (failing_syncs > 0) {
    --failing_syncs;
    errno = EIO;
    return -1;
  }
  return 0;
}

BatchPtr batch_of(std::uint64_t first_lsn, std::uint64_t last_lsn) {
  auto batch = std::make_shared<Batch>();
  batch->source_name = "log";
  for (auto lsn = first_lsn; lsn <= last_lsn; ++lsn) {
    Change change;
    change.lsn = lsn;
    change.entity = "s.t";
    change.key = change.new_row = "{\"id\":" + std::to_string(lsn) + "}";
    batch->changes.push_back(std::move(change));
  }
  return batch;
}

class FileSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sync_calls = 0;
    failing_syncs = 0;
  }

  std::unique_ptr<FileSink> start_sink(FsyncPolicy policy, std::chrono::milliseconds interval) {
    FileSinkOptions options;
    options.path = dir_.file("out.jsonl");
    options.fsync = policy;
    options.fsync_interval = interval;
    options.sync_file = &fake_sync;
    auto sink = std::make_unique<FileSink>(
        options, SinkContext{"archive", spdlog::default_logger(), metrics_.registry(),
                             metrics_.sink("archive")});
    auto started = sink->start();
    EXPECT_TRUE(started) << (started ? "" : started.error().message);
    return sink;
  }

  static DeliveryReport write_and_wait(Sink& sink, BatchPtr batch) {
    std::promise<DeliveryReport> promise;
    sink.write(std::move(batch), [&](DeliveryReport report) { promise.set_value(report); });
    return promise.get_future().get();  // the file sink acknowledges before write() returns
  }

  TempDir dir_;
  Metrics metrics_;
};

// The last batch before an idle period is synced by the timer, not only by a later write.
TEST_F(FileSinkTest, IntervalPolicySyncsTheLastWriteWithoutAnotherOne) {
  auto sink = start_sink(FsyncPolicy::kInterval, 100ms);
  ASSERT_FALSE(write_and_wait(*sink, batch_of(1, 3)).failure);
  EXPECT_TRUE(wait_until([] { return sync_calls >= 1; }, 10s))
      << "written data stayed unsynced while the sink was idle";
  // Nothing new: the timer does not sync again.
  int calls = sync_calls;
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(sync_calls, calls);
  sink->stop();
  EXPECT_EQ(sync_calls, calls) << "nothing left to sync at stop";
}

TEST_F(FileSinkTest, StopSyncsWhatTheTimerHasNotYet) {
  auto sink = start_sink(FsyncPolicy::kInterval, std::chrono::hours(1));
  ASSERT_FALSE(write_and_wait(*sink, batch_of(1, 3)).failure);
  EXPECT_EQ(sync_calls, 0);
  sink->stop();
  EXPECT_EQ(sync_calls, 1);
}

// Linux may drop the pages a failed fsync could not write: a retry could "succeed" without them.
TEST_F(FileSinkTest, FailedFsyncFailsTheSinkForGood) {
  auto sink = start_sink(FsyncPolicy::kAlways, 1000ms);
  failing_syncs = 1;
  auto report = write_and_wait(*sink, batch_of(7, 9));
  ASSERT_TRUE(report.failure) << "acknowledged although its fsync failed";
  EXPECT_THAT(report.failure->message, HasSubstr("fsync of"));
  EXPECT_THAT(report.failure->message, HasSubstr("lsn 7 to 9"));
  EXPECT_FALSE(report.failure->retryable);
  EXPECT_EQ(sync_calls, 1) << "a failed fsync must not be retried";
  EXPECT_FALSE(sink->healthy());
  // fsync would succeed now; the sink stays failed.
  auto later = write_and_wait(*sink, batch_of(10, 10));
  ASSERT_TRUE(later.failure);
  EXPECT_THAT(later.failure->message, HasSubstr("lsn 7 to 9"));
  EXPECT_FALSE(sink->flush(std::chrono::steady_clock::now() + 1s));
  EXPECT_FALSE(sink->healthy());
  EXPECT_EQ(sync_calls, 1);
}

TEST_F(FileSinkTest, FailedTimerFsyncFailsTheSinkForGood) {
  auto sink = start_sink(FsyncPolicy::kInterval, 50ms);
  failing_syncs = 1;
  ASSERT_FALSE(write_and_wait(*sink, batch_of(1, 2)).failure);
  ASSERT_TRUE(wait_until([&] { return !sink->healthy(); }, 10s));
  auto later = write_and_wait(*sink, batch_of(3, 3));
  ASSERT_TRUE(later.failure);
  EXPECT_THAT(later.failure->message, HasSubstr("lsn 1 to 2"));
  EXPECT_THAT(later.failure->message, HasSubstr("may not be on disk"));
  EXPECT_EQ(sync_calls, 1);
}

}  // namespace
}  // namespace cdcd::test
