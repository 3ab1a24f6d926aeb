// The Kafka sink alone, without the source and pipeline in front of it: parses a JSONL change log
// into batches first (not timed), then writes them through the sink, keeping up to 16 batches in
// flight as a consumer does by default (batch.max_in_flight), and prints the rate. Used by
// bench/kafka_bench.sh to tell the sink's cost from the rest of cdcd's.
//
//   kafka_sink_bench BOOTSTRAP TOPIC CHANGES.jsonl [BATCH_SIZE]

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include "daemon/config/node.h"
#include "daemon/format/format.h"
#include "daemon/metrics/metrics.h"
#include "daemon/plugin/registry.h"

namespace cdcd {
void register_sink_kafka(PluginRegistry& registry);
}

namespace {

std::vector<cdcd::BatchPtr> read_batches(const std::string& path, std::size_t batch_size) {
  std::vector<cdcd::BatchPtr> batches;
  std::ifstream in(path);
  std::shared_ptr<cdcd::Batch> batch;
  for (std::string line; std::getline(in, line);) {
    auto change = cdcd::parse_native_line(line);
    if (!change) {
      std::fprintf(stderr, "bad line: %s\n", change.error().message.c_str());
      std::exit(1);
    }
    if (!batch) {
      batch = std::make_shared<cdcd::Batch>();
      batch->id = batches.size() + 1;
      batch->source_name = "log";
      batch->connector = "jsonl";
      batch->changes.reserve(batch_size);
    }
    batch->changes.push_back(std::move(*change));
    if (batch->changes.size() == batch_size) batches.push_back(std::move(batch));
  }
  if (batch) batches.push_back(std::move(batch));
  return batches;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s BOOTSTRAP TOPIC CHANGES.jsonl [BATCH_SIZE]\n", argv[0]);
    return 2;
  }
  const std::size_t batch_size = argc > 4 ? std::stoul(argv[4]) : 2000;
  constexpr std::size_t kMaxInFlight = 16;
  spdlog::set_level(spdlog::level::warn);

  auto batches = read_batches(argv[3], batch_size);
  std::size_t changes = 0;
  for (const auto& batch : batches) changes += batch->changes.size();

  // Same messages as kcat's: native values, no headers, no tombstones.
  cdcd::config::Diagnostics diagnostics;
  auto context = std::make_shared<cdcd::config::ParseContext>();
  context->file = "bench";
  context->diagnostics = &diagnostics;
  context->env = [](const std::string&) { return std::optional<std::string>(); };
  cdcd::config::Node options(
      YAML::Load("{brokers: \"" + std::string(argv[1]) + "\", topic: \"" + argv[2] +
                 "\", format: native, tombstones: false, headers: false}"),
      "sinks.kafka", context);
  cdcd::PluginRegistry registry;
  cdcd::register_sink_kafka(registry);
  cdcd::Metrics metrics;
  auto sink = (*registry.sink("kafka"))(
      options, cdcd::SinkContext{"kafka", spdlog::default_logger(), metrics.registry(),
                                 metrics.sink("kafka")});
  if (!sink) {
    std::fprintf(stderr, "%s", diagnostics.to_string().c_str());
    return 1;
  }
  if (auto started = sink->start(); !started) {
    std::fprintf(stderr, "%s\n", started.error().message.c_str());
    return 1;
  }

  std::mutex mutex;
  std::condition_variable acked;
  std::size_t in_flight = 0;
  bool failed = false;
  auto start = std::chrono::steady_clock::now();
  for (const auto& batch : batches) {
    {
      std::unique_lock lock(mutex);
      acked.wait(lock, [&] { return in_flight < kMaxInFlight; });
      ++in_flight;
    }
    // Not moved: the bench keeps its reference, so that, as in the daemon (whose consumer thread
    // drops a batch after processing its acknowledgement), no batch is freed on the thread serving
    // the delivery reports.
    sink->write(batch, [&](cdcd::DeliveryReport report) {
      std::lock_guard lock(mutex);
      if (report.failure || !report.rejected.empty()) failed = true;
      --in_flight;
      acked.notify_all();
    });
  }
  {
    std::unique_lock lock(mutex);
    acked.wait(lock, [&] { return in_flight == 0; });
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  sink->stop();
  if (failed) {
    std::fprintf(stderr, "some batch failed\n");
    return 1;
  }
  std::printf("%zu changes in %.2f s: %.0f changes/s\n", changes, seconds, changes / seconds);
  return 0;
}
