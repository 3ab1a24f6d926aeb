#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/result.h"

namespace cdcd::elasticsearch {

// What became of one bulk item, by the status policy of docs/sinks/elasticsearch.md.
enum class Outcome {
  kCreated,
  kUpdated,
  kDeleted,       // includes the delete of a document that was not there (404 not_found)
  kSuperseded,    // 409 on our versioned write, or the partial-update script's noop: a newer
                  // version is already stored
  kRetry,         // 429, 5xx: send again later
  kRejected,      // 400 mapping/parsing errors, index not found, other 4xx: the change is refused
  kUnauthorized,  // 401, 403: the sink fails
};

struct ItemResult {
  Outcome outcome = Outcome::kRejected;
  int status = 0;
  std::string error;  // "type: reason (caused by ...)" as Elasticsearch wrote it, when failed
};

// Reads a `_bulk` response body (HTTP 200). Fails when it is not one, or when its item count
// differs from `actions`: an item cannot then be matched to its action.
Result<std::vector<ItemResult>> parse_bulk_response(std::string_view body, std::size_t actions);

// The error text of a non-2xx response body ({"error": {"type", "reason"}, "status"}), or the
// body itself, cut.
std::string describe_error_body(std::string_view body);

}  // namespace cdcd::elasticsearch
