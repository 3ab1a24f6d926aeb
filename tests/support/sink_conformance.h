#pragma once

// The sink conformance suite: the contract of daemon/plugin/sink.h, checked the same way for every
// sink (see docs/sinks/conformance.md).
//
// To run it for a sink, write a SinkHarness for it and instantiate the suite in a test file under
// tests/component (which links cdcd_test_support):
//
//   class RedisHarness : public cdcd::test::SinkHarness { ... };
//   namespace cdcd::test {
//   CDCD_SINK_CONFORMANCE_SUITE(Redis, SinkConformanceCase{
//       "redis", [] { return std::make_unique<RedisHarness>(); }});
//   }
//
// Each test makes a fresh harness, so a harness may start its server in its constructor and stop
// it in its destructor. Several cases may be listed, comma-separated (e.g. one per format).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/metrics/metrics.h"
#include "daemon/plugin/sink.h"

namespace cdcd::test {

// A change as the destination holds it, read back without the sink's code.
struct DeliveredChange {
  std::string entity;
  std::uint64_t lsn = 0;
};

// What the suite needs from one sink type. The suite writes changes of entities "wN.t" (one per
// writer thread) with increasing lsns, keys {"id": lsn} and new rows {"id": lsn}.
class SinkHarness {
 public:
  virtual ~SinkHarness() = default;

  // A started sink whose destination takes everything, written as one ordered stream (e.g. a
  // Kafka topic of one partition), so that the suite can check the order of acks and changes.
  virtual std::unique_ptr<Sink> make_sink() = 0;

  // A started sink whose destination takes nothing at all from now on (full disk, a pipe nobody
  // reads, brokers down with a small producer queue): a write() of kBlockingBatchSize changes
  // blocks, or at least stays unacknowledged, until stop().
  virtual std::unique_ptr<Sink> make_blocked_sink() = 0;

  // Everything the destination of make_sink() holds, in its order.
  virtual std::vector<DeliveredChange> delivered() = 0;

  // Whether a blocking write() to make_blocked_sink() stays blocked (backpressure) rather than
  // returning with its ack pending. Either is allowed; the suite checks the one the sink claims.
  virtual bool write_blocks() const { return true; }
};

struct SinkConformanceCase {
  std::string name;  // letters, digits and '_' only: it becomes part of the test names
  std::function<std::unique_ptr<SinkHarness>()> make_harness;
};

// A batch of this many changes blocks a write() to a blocked sink.
inline constexpr std::size_t kBlockingBatchSize = 50;

class SinkConformanceTest : public ::testing::TestWithParam<SinkConformanceCase> {
 protected:
  void SetUp() override { harness_ = GetParam().make_harness(); }
  void TearDown() override { harness_.reset(); }

  std::unique_ptr<SinkHarness> harness_;
};

// Names the instantiated tests after SinkConformanceCase::name. Defined next to the suite's tests,
// so that naming it (the macro below does) links them into the test binary.
std::string sink_conformance_case_name(const ::testing::TestParamInfo<SinkConformanceCase>& info);

// Builds a sink through the plugin registry, as the daemon does, from YAML options (without
// `type`); fails the test and returns nullptr when the options are refused.
std::unique_ptr<Sink> build_plugin_sink(const std::string& type, const std::string& yaml,
                                        Metrics& metrics, const std::string& name = "conformance");

// Parses lines of the native format (one change per line) as a destination holds them.
std::vector<DeliveredChange> parse_native_lines(const std::vector<std::string>& lines);

}  // namespace cdcd::test

// Instantiates the suite for the listed SinkConformanceCases. Use it inside namespace cdcd::test
// (GoogleTest pastes the suite's unqualified name).
#define CDCD_SINK_CONFORMANCE_SUITE(prefix, ...)                                        \
  INSTANTIATE_TEST_SUITE_P(prefix, SinkConformanceTest, ::testing::Values(__VA_ARGS__), \
                           ::cdcd::test::sink_conformance_case_name)
