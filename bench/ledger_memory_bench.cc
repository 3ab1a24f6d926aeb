// Memory of a consumer that wants almost nothing while its sink is stalled: the runtime's source
// runner and consumer (not the daemon's plugins) between a generating source and a sink that never
// acknowledges its first batch. Prints the process's RSS as transactions pass, then its median and
// peak growth over the RSS at the start.
//
//   ledger_memory_bench [--transactions N] [--match-every K] [--max-queue-bytes B]
//                       [--report-every R] [--stall first|all]
//
// Defaults: 5,000,000 transactions of one change each, the consumer wants 1 change in 10,000,
// max_queue_bytes 64 KiB, a report every 500,000 transactions.
//   --stall first  the first batch is never acknowledged, every later one at once (one batch
//                  stuck, e.g. behind a partition without a leader): transactions keep passing
//                  and the checkpoint cannot move, so everything the consumer remembers about
//                  them must stay bounded.
//   --stall all    no batch is acknowledged: the consumer must stop taking events and the source
//                  stop reading. Ends once reading has stopped for 2 s, reporting where.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "daemon/metrics/metrics.h"
#include "daemon/pipeline/consumer.h"
#include "daemon/pipeline/source_runner.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::uint64_t transactions = 5'000'000;
  std::uint64_t match_every = 10'000;
  std::uint64_t max_queue_bytes = 64 * 1024;
  std::uint64_t report_every = 500'000;
  bool stall_all = false;
};

// Transactions of one change each; every `match_every`th is on the entity the consumer wants.
class GeneratingSource : public cdcd::Source {
 public:
  GeneratingSource(std::uint64_t transactions, std::uint64_t match_every)
      : transactions_(transactions), match_every_(match_every) {}

  cdcd::Status start(const cdcd::StartPosition&) override { return cdcd::ok(); }

  cdcd::Result<cdcd::PollOutcome> poll(cdcd::Emitter& out, cdcd::Deadline deadline) override {
    std::uint64_t lsn = generated_.load();
    while (lsn < transactions_ && out.wants_more()) {
      ++lsn;
      out.emit(make_change(lsn));
      out.emit(cdcd::TransactionEnd{lsn, lsn * 100, timestamp_of(lsn), 0});
      generated_.store(lsn);
      if (lsn % 256 == 0 && Clock::now() >= deadline) break;
    }
    return lsn == transactions_ ? cdcd::PollOutcome::kEnd : cdcd::PollOutcome::kMore;
  }

  std::uint64_t bytes_behind(std::uint64_t, std::uint64_t offset) const override {
    const std::uint64_t head = transactions_ * 100;
    return head > offset ? head - offset : 0;
  }
  bool connected() const override { return true; }
  std::uint64_t generated() const { return generated_.load(); }

 private:
  static std::int64_t timestamp_of(std::uint64_t lsn) {
    return 1'763'719'200'000'000 + static_cast<std::int64_t>(lsn);
  }

  cdcd::Change make_change(std::uint64_t lsn) const {
    cdcd::Change change;
    change.lsn = lsn;
    change.timestamp_us = timestamp_of(lsn);
    change.entity = lsn % match_every_ == 0 ? "public.wanted" : "public.noise";
    change.key = "{\"id\":" + std::to_string(lsn) + "}";
    change.new_row = "{\"id\":" + std::to_string(lsn) + ",\"status\":\"new\"}";
    change.offset = lsn * 100 - 50;
    return change;
  }

  const std::uint64_t transactions_;
  const std::uint64_t match_every_;
  std::atomic<std::uint64_t> generated_{0};
};

// Never acknowledges its first batch (or any, with stall_all) until release().
class StalledSink : public cdcd::Sink {
 public:
  explicit StalledSink(bool stall_all) : stall_all_(stall_all) {}

  cdcd::Status start() override { return cdcd::ok(); }
  void write(cdcd::BatchPtr batch, cdcd::AckFn ack) override {
    {
      std::lock_guard lock(mutex_);
      ++batches_;
      if ((stall_all_ || batches_ == 1) && !released_) {
        held_.emplace_back(std::move(batch), std::move(ack));
        return;
      }
    }
    ack(cdcd::DeliveryReport{});
  }
  cdcd::Status flush(cdcd::Deadline) override { return cdcd::ok(); }
  void stop() override { release(); }

  void release() {
    std::vector<std::pair<cdcd::BatchPtr, cdcd::AckFn>> held;
    {
      std::lock_guard lock(mutex_);
      released_ = true;
      held.swap(held_);
    }
    for (auto& [batch, ack] : held) ack(cdcd::DeliveryReport{});
  }
  std::uint64_t batches() const {
    std::lock_guard lock(mutex_);
    return batches_;
  }

 private:
  const bool stall_all_;
  mutable std::mutex mutex_;
  std::vector<std::pair<cdcd::BatchPtr, cdcd::AckFn>> held_;
  std::uint64_t batches_ = 0;
  bool released_ = false;
};

class MemoryStore : public cdcd::CheckpointStore {
 public:
  cdcd::Status start() override { return cdcd::ok(); }
  cdcd::Result<std::optional<cdcd::Checkpoint>> load(const std::string&) override {
    return std::optional<cdcd::Checkpoint>{};
  }
  cdcd::Status save(const std::string&, const cdcd::Checkpoint& checkpoint) override {
    lsn_ = checkpoint.lsn;
    return cdcd::ok();
  }
  cdcd::Status remove(const std::string&) override { return cdcd::ok(); }
  std::uint64_t lsn() const { return lsn_.load(); }

 private:
  std::atomic<std::uint64_t> lsn_{0};
};

double rss_mib() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0;
  long resident = 0;
  statm >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) /
         (1024.0 * 1024.0);
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--stall") {
      options.stall_all = value == "all";
    } else if (flag == "--transactions") {
      options.transactions = std::stoull(value);
    } else if (flag == "--match-every") {
      options.match_every = std::stoull(value);
    } else if (flag == "--max-queue-bytes") {
      options.max_queue_bytes = std::stoull(value);
    } else if (flag == "--report-every") {
      options.report_every = std::stoull(value);
    } else {
      std::fprintf(stderr, "unknown option %s\n", flag.c_str());
      std::exit(2);
    }
  }
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  auto log =
      std::make_shared<spdlog::logger>("bench", std::make_shared<spdlog::sinks::null_sink_mt>());
  cdcd::Metrics metrics;
  MemoryStore store;
  GeneratingSource source(options.transactions, options.match_every);
  StalledSink sink(options.stall_all);

  cdcd::ConsumerSetup setup;
  setup.config.name = "rare";
  setup.config.source = "generated";
  setup.config.sinks = {"stalled"};
  setup.config.entities = {"public.wanted"};
  setup.config.max_queue_bytes = options.max_queue_bytes;
  setup.source_type = "bench";
  setup.source = &source;
  setup.sinks = {{"stalled", &sink}};
  setup.store = &store;
  setup.checkpoint_interval = std::chrono::milliseconds(1000);
  setup.metrics = &metrics;
  setup.log = log;
  cdcd::Consumer consumer(std::move(setup));
  if (!consumer.load_checkpoint()) return 1;
  cdcd::SourceRunner runner("generated", &source, {&consumer}, log);

  std::printf(
      "ledger_memory_bench: %llu transactions, 1 change in %llu wanted, max_queue_bytes %llu, "
      "%s\n",
      static_cast<unsigned long long>(options.transactions),
      static_cast<unsigned long long>(options.match_every),
      static_cast<unsigned long long>(options.max_queue_bytes),
      options.stall_all ? "no batch acknowledged" : "first batch never acknowledged");
  const double start_rss = rss_mib();
  std::printf("%12s %10s %10s %8s %12s\n", "transactions", "rss_mib", "growth_mib", "batches",
              "checkpoint");
  std::printf("%12d %10.1f %10.1f %8d %12d\n", 0, start_rss, 0.0, 0, 0);
  const auto started = Clock::now();
  consumer.start();
  runner.start();

  std::vector<double> growth;
  std::uint64_t next_report = options.report_every;
  std::uint64_t last_seen = 0;
  auto last_progress = Clock::now();
  bool stopped_reading = false;
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const std::uint64_t passed = source.generated();
    if (passed != last_seen) {
      last_seen = passed;
      last_progress = Clock::now();
    }
    const bool done = passed >= options.transactions;
    stopped_reading = Clock::now() - last_progress > std::chrono::seconds(2);
    if (passed >= next_report || done || stopped_reading) {
      const double rss = rss_mib();
      growth.push_back(rss - start_rss);
      std::printf("%12llu %10.1f %10.1f %8llu %12llu\n", static_cast<unsigned long long>(passed),
                  rss, rss - start_rss, static_cast<unsigned long long>(sink.batches()),
                  static_cast<unsigned long long>(store.lsn()));
      std::fflush(stdout);
      while (next_report <= passed) next_report += options.report_every;
    }
    if (done || stopped_reading) break;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  std::sort(growth.begin(), growth.end());
  std::printf(
      "%s after %llu transactions in %.1f s: growth over start median %.1f MiB, peak %.1f MiB\n",
      stopped_reading ? "source paused (backpressure)" : "done",
      static_cast<unsigned long long>(last_seen), seconds, growth[growth.size() / 2],
      growth.back());

  runner.request_stop(Clock::now() + std::chrono::seconds(30));
  sink.release();
  runner.join();
  consumer.join();
  return 0;
}
