#include "sinks/elasticsearch/bulk_actions.h"

#include <limits>

#include <nlohmann/json.hpp>

#include "daemon/format/format.h"
#include "daemon/format/json_writer.h"

namespace cdcd::elasticsearch {

namespace {

// Inserts the version field at the front of a JSON object's text ("{...}").
void append_versioned_object(std::string& out, std::string_view object, std::int64_t version) {
  out += "{\"";
  out += kVersionField;
  out += "\":";
  json::append_integer(out, version);
  std::string_view rest = object.substr(1);
  auto first = rest.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && rest[first] != '}') out += ',';
  out += rest;
}

}  // namespace

Result<std::int64_t> ActionBuilder::version_of(const Change& change) {
  if (change.lsn > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return fail("lsn " + std::to_string(change.lsn) +
                " is above 2^63 - 1, the largest external version Elasticsearch accepts");
  }
  return static_cast<std::int64_t>(change.lsn);
}

Result<std::string> ActionBuilder::id_from_key(std::string_view key_json) {
  auto key = nlohmann::json::parse(key_json, nullptr, /*allow_exceptions=*/false);
  if (!key.is_object()) return fail("the key is not a JSON object");
  if (key.empty()) return fail("the change has no key: set the sink's `id` template");
  if (key.size() == 1) {
    const auto& value = key.begin().value();
    if (value.is_null()) return fail("the key's only column is null");
    return value.is_string() ? value.get<std::string>() : value.dump();
  }
  auto values = nlohmann::json::array();
  for (const auto& [name, value] : key.items()) values.push_back(value);
  return values.dump();
}

Status ActionBuilder::check_index_name(std::string_view name) {
  if (name.empty()) return fail("the index name is empty");
  if (name.size() > 255) return fail("index name longer than 255 bytes");
  if (name == "." || name == "..") return fail("index name \"" + std::string(name) + "\"");
  if (name[0] == '-' || name[0] == '_' || name[0] == '+') {
    return fail("index name \"" + std::string(name) + "\" starts with '-', '_' or '+'");
  }
  for (char c : name) {
    if (c >= 'A' && c <= 'Z') {
      return fail("index name \"" + std::string(name) + "\" is not lowercase");
    }
    if (std::string_view("\\/*?\"<>|,#: ").find(c) != std::string_view::npos) {
      return fail("index name \"" + std::string(name) + "\" contains '" + std::string(1, c) + "'");
    }
  }
  return ok();
}

void ActionBuilder::append_metadata(std::string& out, std::string_view verb, const Action& action,
                                    std::int64_t version) {
  out += "{\"";
  out += verb;
  out += "\":{\"_index\":";
  json::append_string(out, action.index);
  out += ",\"_id\":";
  json::append_string(out, action.id);
  if (!action.routing.empty()) {
    out += ",\"routing\":";
    json::append_string(out, action.routing);
  }
  out += ",\"version\":";
  json::append_integer(out, version);
  out += ",\"version_type\":\"external_gte\"}}\n";
}

Status ActionBuilder::row_document(const Change& change, std::int64_t version,
                                   Action& action) const {
  if (change.operation == Operation::kDelete) {
    if (config_.deletes == DeleteMode::kDelete) {
      action.kind = Action::Kind::kDelete;
      append_metadata(action.lines, "delete", action, version);
      return ok();
    }
    // A tombstone document keeps the delete's version for good: a late replay of an older change
    // meets it and loses, whatever index.gc_deletes says.
    action.kind = Action::Kind::kIndex;
    append_metadata(action.lines, "index", action, version);
    std::string tombstone = "{\"_deleted\":true";
    std::string_view key = change.key.empty() ? std::string_view("{}") : change.key;
    auto rest = key.substr(1);
    if (rest.find_first_not_of(" \t\r\n}") != std::string_view::npos) tombstone += ',';
    tombstone += rest;
    append_versioned_object(action.lines, tombstone, version);
    action.lines += '\n';
    return ok();
  }
  if (change.new_row.empty() || change.new_row.front() != '{') {
    return fail("the change has no new row image");
  }
  if (!change.unchanged_columns.empty()) {
    // A partial image: it is merged into the stored document before it is sent (see
    // ElasticsearchSink::merge_partial_images).
    action.kind = Action::Kind::kPartialImage;
    action.version = version;
    action.partial_row = change.new_row;
    return ok();
  }
  action.kind = Action::Kind::kIndex;
  append_metadata(action.lines, "index", action, version);
  append_versioned_object(action.lines, change.new_row, version);
  action.lines += '\n';
  return ok();
}

Result<std::optional<Action>> ActionBuilder::build(const Change& change, std::size_t position,
                                                   std::string_view source,
                                                   std::string_view connector) const {
  if (change.operation == Operation::kTruncate) {
    if (config_.truncate == TruncateMode::kStop) {
      return fail("truncate of " + change.entity + " (the sink's `truncate: stop`)");
    }
    return std::optional<Action>();
  }
  auto version = version_of(change);
  if (!version) return tl::unexpected(version.error());
  TemplateInput input(change, source);
  Action action;
  action.change = position;
  if (auto rendered = config_.index.render(input, action.index); !rendered) {
    return tl::unexpected(rendered.error());
  } else if (!*rendered) {
    return fail("index template \"" + config_.index.text() + "\" names a field the change lacks");
  }
  if (auto legal = check_index_name(action.index); !legal) return tl::unexpected(legal.error());

  if (config_.id) {
    if (auto rendered = config_.id->render_required(input, action.id); !rendered) {
      return fail("id template: " + rendered.error().message);
    }
  } else if (config_.document == DocumentMode::kChangelog) {
    action.id = std::to_string(change.lsn) + "-" + std::to_string(change.seq);
  } else {
    auto id = id_from_key(change.key.empty() ? std::string_view("{}") : change.key);
    if (!id) return tl::unexpected(id.error());
    action.id = std::move(*id);
  }
  if (action.id.empty()) return fail("the document id is empty");
  if (action.id.size() > 512) return fail("the document id is longer than 512 bytes");
  if (config_.routing) {
    if (auto rendered = config_.routing->render_required(input, action.routing); !rendered) {
      return fail("routing template: " + rendered.error().message);
    }
  }
  action.identity = action.index;
  action.identity += '\0';
  action.identity += action.routing;
  action.identity += '\0';
  action.identity += action.id;

  if (config_.document == DocumentMode::kChangelog) {
    append_metadata(action.lines, "index", action, *version);
    encode_change(config_.format, change, EncodeContext{source, connector, change.timestamp_us},
                  action.lines);
    action.lines += '\n';
    return std::optional<Action>(std::move(action));
  }
  if (auto built = row_document(change, *version, action); !built) {
    return tl::unexpected(built.error());
  }
  return std::optional<Action>(std::move(action));
}

Result<std::optional<Action>> ActionBuilder::build_old_key_removal(const Change& change,
                                                                   std::size_t position,
                                                                   std::string_view source) const {
  if (config_.document != DocumentMode::kRow || change.operation != Operation::kUpdate ||
      change.old_key.empty()) {
    return std::optional<Action>();
  }
  // Rare (a primary key changed): a copy of the change as the old key's delete is simplest.
  Change removal;
  removal.lsn = change.lsn;
  removal.seq = change.seq;
  removal.timestamp_us = change.timestamp_us;
  removal.source = change.source;
  removal.entity = change.entity;
  removal.operation = Operation::kDelete;
  removal.key = change.old_key;
  removal.old_row = change.old_row;
  return build(removal, position, source, "");
}

Result<std::string> ActionBuilder::truncated_index(const Change& change,
                                                   std::string_view source) const {
  TemplateInput input(change, source);
  std::string index;
  auto rendered = config_.index.render(input, index);
  if (!rendered) return tl::unexpected(rendered.error());
  if (!*rendered) return fail("index template \"" + config_.index.text() + "\" names a row field");
  if (auto legal = check_index_name(index); !legal) return tl::unexpected(legal.error());
  return index;
}

void ActionBuilder::merge_into(Action& action, const nlohmann::json* stored) {
  auto document = nlohmann::json::object();
  if (stored && stored->is_object()) {
    document = *stored;
    document.erase(std::string(kVersionField));
    document.erase("_deleted");  // a partial image is of a live row
  }
  auto partial = nlohmann::json::parse(action.partial_row, nullptr, /*allow_exceptions=*/false);
  if (partial.is_object()) document.update(partial);
  action.kind = Action::Kind::kIndex;
  action.lines.clear();
  append_metadata(action.lines, "index", action, action.version);
  append_versioned_object(action.lines, document.dump(), action.version);
  action.lines += '\n';
  action.partial_row.clear();
  action.partial_row.shrink_to_fit();
}

}  // namespace cdcd::elasticsearch
