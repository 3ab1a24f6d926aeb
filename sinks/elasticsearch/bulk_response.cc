#include "sinks/elasticsearch/bulk_response.h"

#include <optional>

#include <simdjson.h>
#include <nlohmann/json.hpp>

namespace cdcd::elasticsearch {

namespace {

std::string describe_error(const nlohmann::json& error) {
  if (error.is_string()) return error.get<std::string>();
  if (!error.is_object()) return error.dump();
  std::string text = error.value("type", std::string("error"));
  if (auto reason = error.find("reason"); reason != error.end() && reason->is_string()) {
    text += ": " + reason->get<std::string>();
  }
  if (auto index = error.find("index"); index != error.end() && index->is_string()) {
    if (text.find(index->get<std::string>()) == std::string::npos) {
      text += " [index " + index->get<std::string>() + "]";
    }
  }
  if (auto cause = error.find("caused_by"); cause != error.end() && cause->is_object()) {
    text += " (caused by " + describe_error(*cause) + ")";
  }
  return text;
}

ItemResult classify(std::string_view verb, int status, std::string_view outcome,
                    std::string error) {
  ItemResult result;
  result.status = status;
  result.error = std::move(error);
  if (status >= 200 && status < 300) {
    if (outcome == "noop") {
      result.outcome = Outcome::kSuperseded;
    } else if (verb == "delete" || outcome == "deleted") {
      result.outcome = Outcome::kDeleted;
    } else if (outcome == "created") {
      result.outcome = Outcome::kCreated;
    } else {
      result.outcome = Outcome::kUpdated;
    }
  } else if (status == 404 && verb == "delete" && outcome == "not_found") {
    result.outcome = Outcome::kDeleted;
  } else if (status == 409) {
    // Every write of the sink is versioned (external versions, or the script's version check
    // with retry_on_conflict): a conflict means a newer version is already stored.
    result.outcome = Outcome::kSuperseded;
  } else if (status == 429 || status >= 500) {
    result.outcome = Outcome::kRetry;
  } else if (status == 401 || status == 403) {
    result.outcome = Outcome::kUnauthorized;
  } else {
    result.outcome = Outcome::kRejected;
  }
  if (result.outcome == Outcome::kRejected && result.error.empty()) {
    result.error = "status " + std::to_string(status);
  }
  return result;
}

ItemResult classify(std::string_view verb, const nlohmann::json& item) {
  std::string error;
  if (auto found = item.find("error"); found != item.end()) error = describe_error(*found);
  return classify(verb, item.value("status", 0), item.value("result", std::string()),
                  std::move(error));
}

namespace od = simdjson::ondemand;

// The common case, a response with "errors": false, read with simdjson's On Demand API: a bulk
// response holds a hundred-odd bytes per item, and a DOM of it would cost more CPU than building
// the request did. nullopt: not that case (or not well formed), the caller reads it fully.
std::optional<std::vector<ItemResult>> parse_without_errors(std::string_view body,
                                                            std::size_t actions) {
  thread_local od::parser parser;
  simdjson::padded_string padded(body);
  od::document document;
  if (parser.iterate(padded).get(document)) return std::nullopt;
  bool errors = true;
  if (document["errors"].get_bool().get(errors) || errors) return std::nullopt;
  od::array items;
  if (document["items"].get_array().get(items)) return std::nullopt;
  std::vector<ItemResult> results;
  results.reserve(actions);
  for (auto entry : items) {
    od::object wrapper;
    if (entry.get_object().get(wrapper)) return std::nullopt;
    std::size_t actions_in_entry = 0;
    for (auto field : wrapper) {
      if (++actions_in_entry > 1) return std::nullopt;
      std::string_view key;
      if (field.unescaped_key().get(key)) return std::nullopt;
      std::string verb(key);
      od::object item;
      if (field.value().get_object().get(item)) return std::nullopt;
      std::int64_t status = 0;
      std::string outcome;
      for (auto member : item) {
        std::string_view name;
        if (member.unescaped_key().get(name)) return std::nullopt;
        if (name == "status") {
          if (member.value().get_int64().get(status)) return std::nullopt;
        } else if (name == "result") {
          std::string_view text;
          if (member.value().get_string().get(text)) return std::nullopt;
          outcome = text;
        }
      }
      results.push_back(classify(verb, static_cast<int>(status), outcome, ""));
    }
    if (actions_in_entry != 1) return std::nullopt;
  }
  if (results.size() != actions) return std::nullopt;
  return results;
}

}  // namespace

Result<std::vector<ItemResult>> parse_bulk_response(std::string_view body, std::size_t actions) {
  if (auto clean = parse_without_errors(body, actions)) return std::move(*clean);
  auto document = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!document.is_object()) return fail("the _bulk response is not a JSON object");
  auto items = document.find("items");
  if (items == document.end() || !items->is_array()) {
    return fail("the _bulk response has no \"items\" array");
  }
  if (items->size() != actions) {
    return fail("the _bulk response has " + std::to_string(items->size()) + " items for " +
                std::to_string(actions) + " actions");
  }
  std::vector<ItemResult> results;
  results.reserve(actions);
  for (const auto& entry : *items) {
    if (!entry.is_object() || entry.size() != 1 || !entry.begin().value().is_object()) {
      return fail("a _bulk response item is not {\"<action>\": {...}}");
    }
    results.push_back(classify(entry.begin().key(), entry.begin().value()));
  }
  return results;
}

std::string describe_error_body(std::string_view body) {
  auto document = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (document.is_object()) {
    if (auto error = document.find("error"); error != document.end()) {
      return describe_error(*error);
    }
  }
  std::string text(body.substr(0, 300));
  if (body.size() > 300) text += "...";
  return text;
}

}  // namespace cdcd::elasticsearch
