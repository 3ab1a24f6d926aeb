#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "daemon/core/change.h"
#include "daemon/core/result.h"
#include "sinks/elasticsearch/elasticsearch_config.h"

namespace cdcd::elasticsearch {

// The field every row document keeps its change's lsn in, so that a partial image can be merged
// into the stored document only when that is older (docs/sinks/elasticsearch.md, "Partial images").
inline constexpr std::string_view kVersionField = "_cdc_version";

// What one change becomes in a `_bulk` body.
struct Action {
  // kPartialImage: a row image without its unchanged columns; merge_into() turns it into kIndex.
  enum class Kind { kIndex, kDelete, kPartialImage };
  std::size_t change = 0;  // index in Batch::changes
  Kind kind = Kind::kIndex;
  std::string index;
  std::string id;
  std::string routing;
  // The document's identity: two actions with the same one address the same document.
  std::string identity;
  std::string lines;  // action line and, except for deletes, the source line, '\n'-terminated
  std::int64_t version = 0;  // kPartialImage: the change's version
  std::string partial_row;   // kPartialImage: the row image's JSON
};

// A truncate to apply with `truncate: delete_by_query`: every action before it goes first.
struct Truncation {
  std::size_t change = 0;
  std::string index;
};

// Turns changes into bulk actions. Thread-safe (const).
class ActionBuilder {
 public:
  explicit ActionBuilder(const ElasticsearchConfig& config) : config_(config) {}

  // The external version of a change: its commit position. Several changes to one document inside
  // one transaction share it; `version_type: external_gte` lets the later one (sent after the
  // earlier one, see ElasticsearchSink) replace the earlier one. Positions above 2^63 - 1 (the
  // largest version Elasticsearch takes) have no version: the change is rejected.
  static Result<std::int64_t> version_of(const Change& change);

  // The document id the key gives: a single-column key's value (a string as itself, anything else
  // as its JSON text), or the JSON array of the values of a composite key in key order, which no
  // single value can equal.
  static Result<std::string> id_from_key(std::string_view key_json);

  // Whether Elasticsearch accepts `name` as an index name (lowercase, no \ / * ? " < > | , # : or
  // space, not starting with - _ +, not . or .., at most 255 bytes); the error says why not.
  static Status check_index_name(std::string_view name);

  // The action for a change (an error: the change is rejected, with that reason), or nullopt
  // for a change that sends nothing (a truncate).
  Result<std::optional<Action>> build(const Change& change, std::size_t position,
                                      std::string_view source, std::string_view connector) const;

  // For an update that changed the key (row documents): the delete (or soft-delete tombstone) of
  // the document under the old key, sent before the document under the new key; nullopt
  // otherwise. `{key.F}` in the id and routing templates reads the old key for it.
  Result<std::optional<Action>> build_old_key_removal(const Change& change, std::size_t position,
                                                      std::string_view source) const;

  // Turns a partial image into the index action of the stored document (`stored`, its _source; null
  // when there is none) with the image's columns set and the image's version.
  static void merge_into(Action& action, const nlohmann::json* stored);

  // The index a truncate of `change` clears.
  Result<std::string> truncated_index(const Change& change, std::string_view source) const;

 private:
  Status row_document(const Change& change, std::int64_t version, Action& action) const;
  static void append_metadata(std::string& out, std::string_view verb, const Action& action,
                              std::int64_t version);

  const ElasticsearchConfig& config_;
};

}  // namespace cdcd::elasticsearch
