#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include "daemon/config/node.h"
#include "daemon/format/change_template.h"
#include "daemon/format/format.h"
#include "daemon/http/http_client.h"

namespace cdcd::elasticsearch {

enum class DocumentMode { kRow, kChangelog };
enum class DeleteMode { kDelete, kSoft };
enum class TruncateMode { kIgnore, kDeleteByQuery, kStop };

struct BulkOptions {
  std::size_t max_actions = 1000;
  std::size_t max_bytes = 5 * 1024 * 1024;
  std::size_t concurrency = 4;  // bulk requests in flight at once per write
};

struct RetryOptions {
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{std::chrono::seconds(30)};
};

struct ElasticsearchConfig {
  http::ClientOptions http;
  ChangeTemplate index;
  std::optional<ChangeTemplate> id;       // nullopt: derived from the key (row) or position
  std::optional<ChangeTemplate> routing;  // nullopt: Elasticsearch's default (the _id)
  std::string pipeline;                   // empty: none
  DocumentMode document = DocumentMode::kRow;
  Format format = Format::kNative;  // changelog mode
  DeleteMode deletes = DeleteMode::kDelete;
  TruncateMode truncate = TruncateMode::kIgnore;
  BulkOptions bulk;
  RetryOptions retry;
  // The longest time a consumer may replay changes after a crash (checkpoint interval plus
  // restart time); start() warns when an index forgets deletes sooner (index.gc_deletes).
  std::chrono::milliseconds replay_window{std::chrono::minutes(5)};
};

// Reads a `type: elasticsearch` sink's options, reporting every problem to the node's
// diagnostics. Returns nullopt when something was reported. No I/O.
std::optional<ElasticsearchConfig> parse_elasticsearch_config(config::Node& options);

}  // namespace cdcd::elasticsearch
