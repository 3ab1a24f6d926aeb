#include "sinks/elasticsearch/elasticsearch_metrics.h"

#include <prometheus/family.h>

namespace cdcd::elasticsearch {

namespace {

prometheus::Counter* or_private(prometheus::Counter* counter, prometheus::Registry& registry,
                                const std::string& name, const std::string& sink) {
  if (counter != nullptr) return counter;
  return &prometheus::BuildCounter().Name(name).Register(registry).Add({{"sink", sink}});
}

}  // namespace

ElasticsearchMetrics::ElasticsearchMetrics(std::shared_ptr<prometheus::Registry> registry,
                                           const std::string& sink, SinkMetrics sink_metrics)
    : registry_(registry ? std::move(registry) : std::make_shared<prometheus::Registry>()) {
  duration_ =
      &prometheus::BuildHistogram()
           .Name("cdcd_elasticsearch_bulk_duration_seconds")
           .Help("Duration of _bulk requests, from sending to the whole response.")
           .Register(*registry_)
           .Add({{"sink", sink}}, prometheus::Histogram::BucketBoundaries{
                                      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30});
  auto& items = prometheus::BuildCounter()
                    .Name("cdcd_elasticsearch_items_total")
                    .Help(
                        "Bulk items by outcome: created, updated, deleted, superseded (a newer "
                        "version was already stored), retried, rejected.")
                    .Register(*registry_);
  created_ = &items.Add({{"sink", sink}, {"outcome", "created"}});
  updated_ = &items.Add({{"sink", sink}, {"outcome", "updated"}});
  deleted_ = &items.Add({{"sink", sink}, {"outcome", "deleted"}});
  superseded_ = &items.Add({{"sink", sink}, {"outcome", "superseded"}});
  retried_ = &items.Add({{"sink", sink}, {"outcome", "retried"}});
  rejected_ = &items.Add({{"sink", sink}, {"outcome", "rejected"}});
  auto& bytes = prometheus::BuildCounter()
                    .Name("cdcd_elasticsearch_request_bytes_total")
                    .Help(
                        "Bytes of _bulk request bodies, before (uncompressed) and after "
                        "(wire) compression.")
                    .Register(*registry_);
  body_bytes_ = &bytes.Add({{"sink", sink}, {"stage", "uncompressed"}});
  wire_bytes_ = &bytes.Add({{"sink", sink}, {"stage", "wire"}});
  in_flight_ = &prometheus::BuildGauge()
                    .Name("cdcd_elasticsearch_requests_in_flight")
                    .Help("_bulk requests sent and not yet answered.")
                    .Register(*registry_)
                    .Add({{"sink", sink}});
  errors_ = or_private(sink_metrics.errors, *registry_, "cdcd_sink_errors_total", sink);
  retries_ = or_private(sink_metrics.retries, *registry_, "cdcd_sink_retries_total", sink);
}

void ElasticsearchMetrics::observe_request(double seconds, std::size_t body_bytes,
                                           std::size_t wire_bytes) {
  duration_->Observe(seconds);
  body_bytes_->Increment(static_cast<double>(body_bytes));
  wire_bytes_->Increment(static_cast<double>(wire_bytes));
}

void ElasticsearchMetrics::count(Outcome outcome, double items) {
  switch (outcome) {
    case Outcome::kCreated:
      created_->Increment(items);
      break;
    case Outcome::kUpdated:
      updated_->Increment(items);
      break;
    case Outcome::kDeleted:
      deleted_->Increment(items);
      break;
    case Outcome::kSuperseded:
      superseded_->Increment(items);
      break;
    case Outcome::kRetry:
      break;  // counted per retry round (count_retried), with whole-request retries
    case Outcome::kRejected:
    case Outcome::kUnauthorized:
      rejected_->Increment(items);
      break;
  }
}

}  // namespace cdcd::elasticsearch
