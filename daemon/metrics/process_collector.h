#pragma once

#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace cdcd {

// The standard Prometheus process metrics (process_resident_memory_bytes,
// process_cpu_seconds_total, process_open_fds, ...) of this process, read from /proc at every
// scrape. A metric that cannot be read (no /proc) is left out rather than reported as 0.
class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace cdcd
