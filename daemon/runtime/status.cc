#include "daemon/runtime/status.h"

#include <ctime>

#include <fmt/format.h>

namespace cdcd {

namespace {

std::string_view state_name(ConsumerState state) {
  switch (state) {
    case ConsumerState::kRunning:
      return "running";
    case ConsumerState::kFinished:
      return "finished";
    case ConsumerState::kFailed:
      return "failed";
  }
  return "unknown";
}

std::string text_or(const nlohmann::json& value, const std::string& fallback) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number()) return value.dump();
  return fallback;
}

}  // namespace

std::string format_rfc3339(std::int64_t micros) {
  std::time_t seconds = static_cast<std::time_t>(micros / 1000000);
  std::int64_t fraction = micros % 1000000;
  if (fraction < 0) {
    fraction += 1000000;
    --seconds;
  }
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  return fmt::format("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:06d}Z", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, fraction);
}

nlohmann::json status_document(const std::vector<ConsumerStatus>& consumers) {
  nlohmann::json document{{"consumers", nlohmann::json::array()}};
  for (const auto& consumer : consumers) {
    nlohmann::json entry{{"name", consumer.name},
                         {"source", consumer.source},
                         {"state", state_name(consumer.state)},
                         {"lag_bytes", consumer.lag_bytes},
                         {"lag_seconds", consumer.lag_seconds},
                         {"queue_bytes", consumer.queue_bytes},
                         {"checkpoint", nullptr}};
    if (!consumer.error.empty()) entry["error"] = consumer.error;
    if (consumer.checkpoint) {
      entry["checkpoint"] = {{"lsn", consumer.checkpoint->lsn},
                             {"offset", consumer.checkpoint->offset},
                             {"commit_time", format_rfc3339(consumer.checkpoint->commit_time_us)},
                             {"saved_at", format_rfc3339(consumer.checkpoint->saved_at_us)}};
    }
    document["consumers"].push_back(std::move(entry));
  }
  return document;
}

std::string render_status_table(const nlohmann::json& document) {
  std::string out =
      fmt::format("{:<20} {:<12} {:<9} {:>14} {:<28} {:>12} {:>10}\n", "CONSUMER", "SOURCE",
                  "STATE", "CHECKPOINT", "COMMIT TIME", "LAG BYTES", "LAG S");
  for (const auto& consumer : document.value("consumers", nlohmann::json::array())) {
    const auto& checkpoint = consumer["checkpoint"];
    out += fmt::format("{:<20} {:<12} {:<9} {:>14} {:<28} {:>12} {:>10}\n",
                       text_or(consumer["name"], ""), text_or(consumer["source"], ""),
                       text_or(consumer["state"], "-"),
                       checkpoint.is_object() ? text_or(checkpoint["lsn"], "-") : "-",
                       checkpoint.is_object() ? text_or(checkpoint["commit_time"], "-") : "-",
                       consumer.contains("lag_bytes") ? text_or(consumer["lag_bytes"], "-") : "-",
                       consumer.contains("lag_seconds") && consumer["lag_seconds"].is_number()
                           ? fmt::format("{:.3f}", consumer["lag_seconds"].get<double>())
                           : "-");
    if (consumer.contains("error")) out += "  error: " + text_or(consumer["error"], "") + "\n";
  }
  if (document.contains("daemon")) out += "daemon: " + text_or(document["daemon"], "") + "\n";
  return out;
}

}  // namespace cdcd
