// The sink conformance suite (tests/support/sink_conformance.h) for the Elasticsearch sink, against
// the strict `_bulk` test server (tests/support/es_test_server.py); read back from the server's log
// of applied writes. Blocked: every `_bulk` request answered 429.

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/es_test_server.h"
#include "tests/support/sink_conformance.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

class ElasticsearchHarness : public SinkHarness {
 public:
  ElasticsearchHarness() : server_(dir_.path()) {}

  std::unique_ptr<Sink> make_sink() override {
    auto sink = build_plugin_sink("elasticsearch",
                                  "urls: [\"" + server_.url() +
                                      "\"]\nindex: \"{schema}_{table}\"\n"
                                      "bulk: {concurrency: 1, max_actions: 7}\n"
                                      "retry: {initial_backoff: 20ms, max_backoff: 200ms}\n",
                                  metrics_);
    if (sink == nullptr) return nullptr;
    if (auto status = sink->start(); !status) {
      ADD_FAILURE() << status.error().message;
      return nullptr;
    }
    return sink;
  }

  std::unique_ptr<Sink> make_blocked_sink() override {
    auto sink = make_sink();
    server_.faults({{"reject_all", 429}});
    return sink;
  }

  // The writes the server applied, in order: index "wN_t" is entity "wN.t", the version the lsn.
  std::vector<DeliveredChange> delivered() override {
    std::vector<DeliveredChange> changes;
    auto state = server_.state();
    for (const auto& entry : state["log"]) {
      if (entry["op"] != "index") continue;
      std::string entity = entry["index"].get<std::string>();
      entity[entity.rfind('_')] = '.';
      changes.push_back({entity, entry["version"].get<std::uint64_t>()});
    }
    return changes;
  }

  // A write retries its 429s with backoff until stop().
  bool write_blocks() const override { return true; }

 private:
  TempDir dir_;
  EsTestServer server_;
  Metrics metrics_;
};

CDCD_SINK_CONFORMANCE_SUITE(Elasticsearch,
                            SinkConformanceCase{"elasticsearch", [] {
                                                  return std::make_unique<ElasticsearchHarness>();
                                                }});

}  // namespace
}  // namespace cdcd::test
