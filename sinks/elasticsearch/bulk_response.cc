#include "sinks/elasticsearch/bulk_response.h"

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

ItemResult classify(std::string_view verb, const nlohmann::json& item) {
  ItemResult result;
  result.status = item.value("status", 0);
  std::string outcome = item.value("result", std::string());
  if (auto error = item.find("error"); error != item.end()) result.error = describe_error(*error);
  int status = result.status;
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

}  // namespace

Result<std::vector<ItemResult>> parse_bulk_response(std::string_view body, std::size_t actions) {
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
