#include "tests/support/sink_conformance.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "daemon/config/node.h"
#include "daemon/plugin/registry.h"
#include "tests/support/test_util.h"

namespace cdcd::test {

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// How long a test gives a wrong sink to do what it must not (acknowledge a write its destination
// never took, return from a write that has nowhere to go, ack after destruction). A correct sink
// passes whatever the value; a wrong one is caught the more surely the longer it is.
constexpr auto kMisbehaviourWindow = 300ms;
// Generous bounds for what must happen "promptly" on a loaded machine.
constexpr auto kPrompt = 15s;

std::string entity_of(int writer) { return "w" + std::to_string(writer) + ".t"; }

// lsns of writer w: w * 1e6 + 1, + 2, ...: increasing per writer, distinct across writers.
std::uint64_t lsn_of(int writer, std::uint64_t n) {
  return static_cast<std::uint64_t>(writer) * 1'000'000 + n;
}

BatchPtr make_batch(int writer, std::uint64_t batch_id, std::size_t size) {
  auto batch = std::make_shared<Batch>();
  batch->id = batch_id;
  batch->consumer = "writer" + std::to_string(writer);
  batch->source_name = "conformance";
  batch->connector = "jsonl";
  for (std::size_t i = 0; i < size; ++i) {
    Change change;
    change.lsn = lsn_of(writer, (batch_id - 1) * size + i + 1);
    change.timestamp_us = 1763719200000000 + static_cast<std::int64_t>(change.lsn);
    change.entity = entity_of(writer);
    change.operation = Operation::kInsert;
    change.key = "{\"id\":" + std::to_string(change.lsn) + "}";
    change.new_row = change.key;
    change.offset = change.lsn;
    batch->bytes += change.byte_size();
    batch->changes.push_back(std::move(change));
  }
  return batch;
}

// Every ack a test's sink fires, kept alive by the acks themselves so that a late or doubled ack
// is recorded rather than a crash.
class AckLog : public std::enable_shared_from_this<AckLog> {
 public:
  struct Record {
    int writer;
    std::uint64_t batch;
    std::optional<std::string> failure;
  };

  AckFn ack_for(int writer, std::uint64_t batch) {
    return [self = shared_from_this(), writer, batch](DeliveryReport report) {
      std::lock_guard lock(self->mutex_);
      if (self->sealed_) ++self->late_;
      self->records_.push_back(
          {writer, batch,
           report.failure ? std::optional<std::string>(report.failure->message) : std::nullopt});
      self->changed_.notify_all();
    };
  }

  bool wait_for_count(std::size_t count, std::chrono::milliseconds timeout = 60s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return records_.size() >= count; });
  }
  std::size_t count() {
    std::lock_guard lock(mutex_);
    return records_.size();
  }
  std::vector<Record> records() {
    std::lock_guard lock(mutex_);
    return records_;
  }
  std::size_t count_for(int writer, std::uint64_t batch) {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (const auto& record : records_) n += record.writer == writer && record.batch == batch;
    return n;
  }
  std::size_t successes() {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (const auto& record : records_) n += !record.failure;
    return n;
  }
  // From now on every ack is a late one.
  void seal() {
    std::lock_guard lock(mutex_);
    sealed_ = true;
  }
  std::size_t late() {
    std::lock_guard lock(mutex_);
    return late_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Record> records_;
  bool sealed_ = false;
  std::size_t late_ = 0;
};

// Runs one write() on its own thread, the way a consumer thread calls it.
class WriterThread {
 public:
  WriterThread(Sink& sink, BatchPtr batch, AckFn ack)
      : thread_([this, &sink, batch = std::move(batch), ack = std::move(ack)]() mutable {
          sink.write(std::move(batch), std::move(ack));
          returned_ = true;
        }) {}
  ~WriterThread() {
    if (thread_.joinable()) thread_.join();
  }
  bool returned() const { return returned_; }
  bool wait_returned(std::chrono::milliseconds timeout) {
    return wait_until([this] { return returned_.load(); }, timeout);
  }

 private:
  std::atomic<bool> returned_{false};
  std::thread thread_;
};

std::string describe(const std::vector<AckLog::Record>& records) {
  std::string text;
  for (const auto& record : records) {
    text += "\n  writer " + std::to_string(record.writer) + " batch " +
            std::to_string(record.batch) + ": " + record.failure.value_or("delivered");
  }
  return text;
}

}  // namespace

std::string sink_conformance_case_name(const ::testing::TestParamInfo<SinkConformanceCase>& info) {
  return info.param.name;
}

std::unique_ptr<Sink> build_plugin_sink(const std::string& type, const std::string& yaml,
                                        Metrics& metrics, const std::string& name) {
  config::Diagnostics diagnostics;
  auto context = std::make_shared<config::ParseContext>();
  context->file = "cdcd.yaml";
  context->diagnostics = &diagnostics;
  context->env = [](const std::string&) { return std::optional<std::string>(); };
  config::Node options(YAML::Load(yaml), "sinks." + name, context);
  options.mark_known({"type"});
  PluginRegistry registry;
  register_builtin_plugins(registry);
  const SinkFactory* factory = registry.sink(type);
  if (factory == nullptr) {
    ADD_FAILURE() << "no sink plugin of type " << type;
    return nullptr;
  }
  SinkContext sink_context{name, spdlog::default_logger(), metrics.registry(), metrics.sink(name)};
  auto sink = (*factory)(options, sink_context);
  if (sink == nullptr) ADD_FAILURE() << diagnostics.to_string();
  return sink;
}

std::vector<DeliveredChange> parse_native_lines(const std::vector<std::string>& lines) {
  std::vector<DeliveredChange> changes;
  for (const auto& line : lines) {
    if (line.empty()) continue;
    auto json = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!json.is_object() || !json.contains("lsn") || !json.contains("entity")) {
      ADD_FAILURE() << "not a native change line: " << line;
      continue;
    }
    changes.push_back({json["entity"].get<std::string>(), json["lsn"].get<std::uint64_t>()});
  }
  return changes;
}

// ---- the suite --------------------------------------------------------------------------------

TEST_P(SinkConformanceTest, AcknowledgesEveryWriteOnceInWriteOrder) {
  constexpr std::uint64_t kBatches = 20;
  constexpr std::size_t kBatchSize = 10;
  auto log = std::make_shared<AckLog>();
  auto sink = harness_->make_sink();
  ASSERT_NE(sink, nullptr);
  for (std::uint64_t b = 1; b <= kBatches; ++b) {
    sink->write(make_batch(0, b, kBatchSize), log->ack_for(0, b));
  }
  ASSERT_TRUE(log->wait_for_count(kBatches)) << describe(log->records());
  auto flushed = sink->flush(Clock::now() + 30s);
  ASSERT_TRUE(flushed) << flushed.error().message;
  auto records = log->records();
  ASSERT_EQ(records.size(), kBatches) << describe(records);
  for (std::uint64_t b = 1; b <= kBatches; ++b) {
    EXPECT_EQ(records[b - 1].batch, b) << "acks out of write order:" << describe(records);
    EXPECT_FALSE(records[b - 1].failure) << *records[b - 1].failure;
  }
  std::vector<std::uint64_t> delivered;
  for (const auto& change : harness_->delivered()) {
    EXPECT_EQ(change.entity, entity_of(0));
    delivered.push_back(change.lsn);
  }
  std::vector<std::uint64_t> expected;
  for (std::uint64_t n = 1; n <= kBatches * kBatchSize; ++n) expected.push_back(lsn_of(0, n));
  EXPECT_EQ(delivered, expected) << "every change once, in write order";
  EXPECT_TRUE(sink->healthy());
  sink.reset();
  EXPECT_EQ(log->count(), kBatches) << "an ack fired twice:" << describe(log->records());
}

TEST_P(SinkConformanceTest, StopUnblocksABlockedWriteAndFailsItsAck) {
  auto log = std::make_shared<AckLog>();
  auto sink = harness_->make_blocked_sink();
  ASSERT_NE(sink, nullptr);
  std::optional<WriterThread> writer;
  writer.emplace(*sink, make_batch(0, 1, kBlockingBatchSize), log->ack_for(0, 1));
  std::this_thread::sleep_for(kMisbehaviourWindow);
  if (harness_->write_blocks()) {
    EXPECT_FALSE(writer->returned()) << "write() returned although its destination takes nothing";
  }
  EXPECT_EQ(log->count(), 0u) << "acknowledged although the destination took nothing:"
                              << describe(log->records());
  auto stop_began = Clock::now();
  sink->stop();
  EXPECT_LT(Clock::now() - stop_began, kPrompt) << "stop() took too long";
  EXPECT_TRUE(writer->wait_returned(kPrompt)) << "stop() did not unblock write()";
  writer.reset();
  auto records = log->records();
  ASSERT_EQ(records.size(), 1u) << "one ack per write:" << describe(records);
  EXPECT_TRUE(records[0].failure) << "a write stopped before delivery must fail its ack";
  sink.reset();
  EXPECT_EQ(log->count(), 1u) << describe(log->records());
}

// Several consumer threads write while the destination is blocked; stop() comes in the middle and
// the writers keep writing while it runs and after: every write returns and is acknowledged
// exactly once, none as delivered.
TEST_P(SinkConformanceTest, WritesRacingWithStopAreEachAcknowledgedOnceAsFailed) {
  constexpr int kWriters = 4;
  constexpr int kWritesAfterStop = 3;
  constexpr std::uint64_t kMaxWrites = 2000;
  constexpr std::size_t kBatchSize = 5;
  auto log = std::make_shared<AckLog>();
  auto sink = harness_->make_blocked_sink();
  ASSERT_NE(sink, nullptr);
  std::atomic<bool> stop_returned{false};
  std::atomic<int> finished{0};
  std::vector<std::uint64_t> writes(kWriters, 0);
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      int after_stop = 0;
      while (writes[w] < kMaxWrites && after_stop < kWritesAfterStop) {
        bool stopped_before = stop_returned;
        ++writes[w];
        sink->write(make_batch(w, writes[w], kBatchSize), log->ack_for(w, writes[w]));
        if (stopped_before) ++after_stop;
        // Paces the writes that fail fast while stop() runs.
        std::this_thread::sleep_for(1ms);
      }
      ++finished;
    });
  }
  std::this_thread::sleep_for(kMisbehaviourWindow);
  sink->stop();
  stop_returned = true;
  bool all_finished = wait_until([&] { return finished == kWriters; }, kPrompt);
  if (!all_finished) {
    // A writer stuck for good: the test cannot go on without the sink, so leave the threads be.
    for (auto& writer : writers) writer.detach();
    sink.release();
    FAIL() << "a write() stayed blocked after stop()";
  }
  for (auto& writer : writers) writer.join();
  std::uint64_t total = 0;
  for (int w = 0; w < kWriters; ++w) total += writes[w];
  ASSERT_TRUE(log->wait_for_count(total, kPrompt))
      << log->count() << " acks for " << total << " writes";
  for (int w = 0; w < kWriters; ++w) {
    for (std::uint64_t b = 1; b <= writes[w]; ++b) {
      EXPECT_EQ(log->count_for(w, b), 1u) << "writer " << w << " batch " << b;
    }
  }
  EXPECT_EQ(log->successes(), 0u) << "acknowledged as delivered although the destination took "
                                     "nothing";
  sink.reset();
  EXPECT_EQ(log->count(), total) << "an ack fired twice";
}

TEST_P(SinkConformanceTest, WriteAfterStopFailsBeforeItReturns) {
  auto log = std::make_shared<AckLog>();
  auto sink = harness_->make_sink();
  ASSERT_NE(sink, nullptr);
  sink->stop();
  sink->stop();  // idempotent
  sink->write(make_batch(0, 1, 3), log->ack_for(0, 1));
  auto records = log->records();
  ASSERT_EQ(records.size(), 1u) << "write() after stop() must acknowledge before it returns";
  EXPECT_TRUE(records[0].failure);
  sink.reset();
  EXPECT_EQ(log->count(), 1u);
}

TEST_P(SinkConformanceTest, FlushReturnsAnErrorByItsDeadlineWhileAWriteIsPending) {
  auto log = std::make_shared<AckLog>();
  auto sink = harness_->make_blocked_sink();
  ASSERT_NE(sink, nullptr);
  std::optional<WriterThread> writer;
  writer.emplace(*sink, make_batch(0, 1, kBlockingBatchSize), log->ack_for(0, 1));
  std::this_thread::sleep_for(kMisbehaviourWindow);
  auto deadline = Clock::now() + 500ms;
  auto flushed = sink->flush(deadline);
  auto late_by = Clock::now() - deadline;
  EXPECT_FALSE(flushed) << "flush() succeeded with a write unacknowledged";
  EXPECT_LT(late_by, 2s) << "flush() returned "
                         << std::chrono::duration_cast<std::chrono::milliseconds>(late_by).count()
                         << " ms after its deadline";
  EXPECT_EQ(log->count(), 0u) << describe(log->records());
  sink->stop();
  EXPECT_TRUE(writer->wait_returned(kPrompt));
  writer.reset();
  ASSERT_EQ(log->count(), 1u);
  EXPECT_TRUE(log->records()[0].failure);
}

// Acks still pending when the sink is destroyed fire (as failures) before its destructor returns;
// nothing fires after.
TEST_P(SinkConformanceTest, EveryAckFiresBeforeDestructionAndNoneAfter) {
  constexpr std::size_t kSmallBatch = 5;  // may fit into a producer queue: returns, ack pending
  auto log = std::make_shared<AckLog>();
  auto sink = harness_->make_blocked_sink();
  ASSERT_NE(sink, nullptr);
  std::optional<WriterThread> writer;
  writer.emplace(*sink, make_batch(0, 1, kSmallBatch), log->ack_for(0, 1));
  std::this_thread::sleep_for(kMisbehaviourWindow);
  if (!writer->returned()) {
    // A sink that blocks instead: destroying it under a writer would be the caller's bug.
    sink->stop();
    EXPECT_TRUE(writer->wait_returned(kPrompt));
  }
  writer.reset();
  EXPECT_EQ(log->successes(), 0u);
  sink.reset();
  EXPECT_EQ(log->count(), 1u) << "every ack fires by the end of the destructor:"
                              << describe(log->records());
  log->seal();
  std::this_thread::sleep_for(kMisbehaviourWindow);
  EXPECT_EQ(log->late(), 0u) << "an ack fired after the sink was destroyed";
}

TEST_P(SinkConformanceTest, ConcurrentWritersKeepTheirOwnOrder) {
  constexpr int kWriters = 4;
  constexpr std::uint64_t kBatches = 25;
  constexpr std::size_t kBatchSize = 8;
  auto log = std::make_shared<AckLog>();
  auto sink = harness_->make_sink();
  ASSERT_NE(sink, nullptr);
  {
    std::vector<std::jthread> writers;
    for (int w = 0; w < kWriters; ++w) {
      writers.emplace_back([&, w] {
        for (std::uint64_t b = 1; b <= kBatches; ++b) {
          sink->write(make_batch(w, b, kBatchSize), log->ack_for(w, b));
        }
      });
    }
  }
  ASSERT_TRUE(log->wait_for_count(kWriters * kBatches)) << describe(log->records());
  auto flushed = sink->flush(Clock::now() + 30s);
  ASSERT_TRUE(flushed) << flushed.error().message;
  std::map<int, std::vector<std::uint64_t>> acked;
  for (const auto& record : log->records()) {
    EXPECT_FALSE(record.failure) << *record.failure;
    acked[record.writer].push_back(record.batch);
  }
  std::map<std::string, std::vector<std::uint64_t>> delivered;
  for (const auto& change : harness_->delivered()) delivered[change.entity].push_back(change.lsn);
  for (int w = 0; w < kWriters; ++w) {
    std::vector<std::uint64_t> batches, lsns;
    for (std::uint64_t b = 1; b <= kBatches; ++b) batches.push_back(b);
    for (std::uint64_t n = 1; n <= kBatches * kBatchSize; ++n) lsns.push_back(lsn_of(w, n));
    EXPECT_EQ(acked[w], batches) << "writer " << w << ": acks in write order";
    EXPECT_EQ(delivered[entity_of(w)], lsns) << "writer " << w << ": every change once, in order";
  }
  EXPECT_EQ(delivered.size(), static_cast<std::size_t>(kWriters));
  sink.reset();
  EXPECT_EQ(log->count(), kWriters * kBatches) << "an ack fired twice";
}

}  // namespace cdcd::test
