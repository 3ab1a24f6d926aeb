#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/pipeline/consumer.h"

namespace cdcd {

// RFC 3339 UTC text of a time in µs since the epoch, e.g. "2025-11-21T09:20:00.123456Z".
std::string format_rfc3339(std::int64_t micros);

// The per-consumer part of /status and `cdcd status --json`.
nlohmann::json status_document(const std::vector<ConsumerStatus>& consumers);

// The human-readable table `cdcd status` prints, from a status document.
std::string render_status_table(const nlohmann::json& document);

}  // namespace cdcd
