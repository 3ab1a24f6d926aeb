#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "daemon/http/http_client.h"
#include "daemon/plugin/registry.h"
#include "daemon/plugin/sink.h"
#include "sinks/common/pending_writes.h"
#include "sinks/elasticsearch/bulk_actions.h"
#include "sinks/elasticsearch/elasticsearch_config.h"
#include "sinks/elasticsearch/elasticsearch_metrics.h"

namespace cdcd {

// Registers `type: elasticsearch`.
void register_sink_elasticsearch(PluginRegistry& registry);

namespace elasticsearch {

// Writes changes to Elasticsearch or OpenSearch with the `_bulk` API (docs/sinks/elasticsearch.md).
//
// Threads: write() runs on the consumers' threads and acknowledges before it returns. Inside one
// write, the changes of one document collapse to the last one (the earlier ones are superseded by
// it and counted so), so every document appears once and the bulk requests of a write, sent up to
// `bulk.concurrency` at a time, never carry two versions of one document; a consumer's next write
// starts after its previous one was acknowledged. Failed items are resent alone, with backoff;
// the write is acknowledged when every item is resolved (acknowledged, superseded or rejected).
class ElasticsearchSink final : public Sink {
 public:
  ElasticsearchSink(ElasticsearchConfig config, SinkContext context);
  ~ElasticsearchSink() override;
  ElasticsearchSink(const ElasticsearchSink&) = delete;
  ElasticsearchSink& operator=(const ElasticsearchSink&) = delete;

  Status start() override;
  void write(BatchPtr batch, AckFn ack) override;
  Status flush(Deadline deadline) override;
  void stop() override;
  bool healthy() const override { return retrying_ == 0 && !unauthorized_; }

 private:
  struct Plan;
  DeliveryReport deliver(const Batch& batch);
  Status send_actions(Plan& plan, std::size_t first, std::size_t last);
  Status truncate_index(const std::string& index);
  Status merge_partial_images(Plan& plan);
  std::optional<std::string> merge_stored(Action& action, const nlohmann::json& doc);
  // Sends `request` until it gets an answer that is neither a transport error, a 429 nor a 5xx
  // (with backoff), and returns that answer; fails on 401/403 and when the sink stops.
  Result<http::Response> request_with_retries(const http::Request& request, std::string_view what);
  void warn_about_gc_deletes();
  // Sleeps unless stop() comes first; returns whether the sink is stopping.
  bool sleep_unless_stopping(std::chrono::milliseconds wait);
  std::string describe(const http::Response& response) const;

  const ElasticsearchConfig config_;
  const SinkContext context_;
  ActionBuilder builder_;
  ElasticsearchMetrics metrics_;
  http::Client client_;
  PendingWrites pending_;
  std::mutex wake_mutex_;
  std::condition_variable wake_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> retrying_{0};
  std::atomic<bool> unauthorized_{false};
};

}  // namespace elasticsearch
}  // namespace cdcd
