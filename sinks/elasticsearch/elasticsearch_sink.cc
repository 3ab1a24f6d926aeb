#include "sinks/elasticsearch/elasticsearch_sink.h"

#include <algorithm>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "daemon/core/backoff.h"

namespace cdcd::elasticsearch {

namespace {

using Clock = std::chrono::steady_clock;

// Elasticsearch's default index.gc_deletes.
constexpr std::chrono::milliseconds kDefaultGcDeletes{60'000};

// An Elasticsearch time value ("60s", "500ms", "2m", "1h", "1d").
std::optional<std::chrono::milliseconds> parse_time_value(const std::string& text) {
  if (text.size() > 1 && text.back() == 'd') {
    auto hours = config::parse_duration(text.substr(0, text.size() - 1) + "h");
    if (hours) return *hours * 24;
    return std::nullopt;
  }
  return config::parse_duration(text);
}

// Counts a write as retrying for healthy() while it lives.
class RetryingMark {
 public:
  explicit RetryingMark(std::atomic<int>& retrying) : retrying_(retrying) {}
  ~RetryingMark() {
    if (marked_) --retrying_;
  }
  void mark() {
    if (!marked_) ++retrying_;
    marked_ = true;
  }

 private:
  std::atomic<int>& retrying_;
  bool marked_ = false;
};

}  // namespace

// The actions of one part of a batch (up to a truncate), one per document, and what the batch
// rejected so far.
struct ElasticsearchSink::Plan {
  std::vector<Action> actions;
  std::vector<RejectedChange> rejected;
};

ElasticsearchSink::ElasticsearchSink(ElasticsearchConfig config, SinkContext context)
    : config_(std::move(config)),
      context_(std::move(context)),
      builder_(config_),
      metrics_(context_.registry, context_.name, context_.metrics),
      client_(config_.http) {}

ElasticsearchSink::~ElasticsearchSink() { stop(); }

std::string ElasticsearchSink::describe(const http::Response& response) const {
  if (response.transport_error) return client_.redact(*response.transport_error);
  return client_.redact(response.url + ": HTTP " + std::to_string(response.status) + ": " +
                        describe_error_body(response.body));
}

Status ElasticsearchSink::start() {
  if (stopping_) return fail("elasticsearch sink " + context_.name + " is stopped");
  auto responses = client_.perform({http::Request{"GET", "/", "", "application/json"}});
  const auto& response = responses.front();
  if (response.transport_error) {
    return fail_retryable("elasticsearch sink " + context_.name + ": " + describe(response));
  }
  if (response.status == 401 || response.status == 403) {
    unauthorized_ = true;
    return fail("elasticsearch sink " + context_.name + ": authentication failed: " +
                describe(response) + " (check the sink's auth settings)");
  }
  if (response.status != 200) {
    return fail_retryable("elasticsearch sink " + context_.name + ": GET / answered " +
                          describe(response));
  }
  auto info = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  std::string product = "elasticsearch";
  std::string version = "?";
  if (info.is_object() && info.contains("version") && info["version"].is_object()) {
    const auto& v = info["version"];
    product = v.value("distribution", product);
    version = v.value("number", version);
  }
  context_.log->info("elasticsearch sink {}: connected to {} {} at {}", context_.name, product,
                     version, client_.redact(response.url));
  if (config_.deletes == DeleteMode::kDelete && config_.document == DocumentMode::kRow) {
    warn_about_gc_deletes();
  }
  return ok();
}

void ElasticsearchSink::warn_about_gc_deletes() {
  auto gc_deletes = kDefaultGcDeletes;
  std::string where = "the default";
  if (config_.index.is_constant()) {
    const std::string& index = config_.index.text();
    auto responses = client_.perform(
        {http::Request{"GET", "/" + index + "/_settings?include_defaults=true&flat_settings=true",
                       "", "application/json"}});
    const auto& response = responses.front();
    if (response.status == 200) {
      auto settings = nlohmann::json::parse(response.body, nullptr, false);
      if (settings.is_object() && settings.contains(index)) {
        for (const char* section : {"settings", "defaults"}) {
          const auto& entry = settings[index];
          if (!entry.contains(section)) continue;
          auto value = entry[section].find("index.gc_deletes");
          if (value == entry[section].end() || !value->is_string()) continue;
          if (auto parsed = parse_time_value(value->get<std::string>())) {
            gc_deletes = *parsed;
            where = "index " + index + "'s";
            break;
          }
        }
      }
    } else if (response.status != 404) {
      context_.log->warn("elasticsearch sink {}: cannot read the settings of index {}: {}",
                         context_.name, index, describe(response));
    }
  }
  if (gc_deletes >= config_.replay_window) return;
  context_.log->warn(
      "elasticsearch sink {}: {} index.gc_deletes ({} ms) is shorter than the replay window ({} "
      "ms): a change replayed after a crash more than index.gc_deletes after a delete of its "
      "document can bring the document back; raise index.gc_deletes or use `deletes: soft`",
      context_.name, where, gc_deletes.count(), config_.replay_window.count());
}

bool ElasticsearchSink::sleep_unless_stopping(std::chrono::milliseconds wait) {
  std::unique_lock lock(wake_mutex_);
  return wake_.wait_for(lock, wait, [this] { return stopping_.load(); });
}

void ElasticsearchSink::write(BatchPtr batch, AckFn ack) {
  PendingWrites::Guard pending(pending_);
  if (stopping_) {
    return ack(
        DeliveryReport{Error{"elasticsearch sink " + context_.name + " is stopped", false}, {}});
  }
  ack(deliver(*batch));
}

DeliveryReport ElasticsearchSink::deliver(const Batch& batch) {
  Plan plan;
  // Where each document's action is in plan.actions.
  std::unordered_map<std::string, std::size_t> position;
  auto send_plan = [&]() -> Status {
    if (auto merged = merge_partial_images(plan); !merged) return merged;
    auto sent = send_actions(plan, 0, plan.actions.size());
    plan.actions.clear();
    position.clear();
    return sent;
  };
  // Adds a document's action; a later change of the document replaces its earlier one: both
  // would be sent in order, and only the later one would stay.
  auto add = [&](Action action) -> Status {
    auto [slot, inserted] = position.try_emplace(action.identity, plan.actions.size());
    if (inserted) {
      plan.actions.push_back(std::move(action));
      return ok();
    }
    if (action.kind == Action::Kind::kPartialImage) {
      // A partial image cannot replace the document's earlier action (it lacks columns that
      // one sets): the earlier one goes out first, and the image is merged into its result.
      if (auto sent = send_plan(); !sent) return sent;
      position.emplace(action.identity, 0);
      plan.actions.push_back(std::move(action));
      return ok();
    }
    metrics_.count_superseded_in_batch(1);
    plan.actions[slot->second] = std::move(action);
    return ok();
  };
  for (std::size_t i = 0; i < batch.changes.size(); ++i) {
    const Change& change = batch.changes[i];
    if (change.operation == Operation::kTruncate &&
        config_.truncate == TruncateMode::kDeleteByQuery) {
      auto index = builder_.truncated_index(change, batch.source_name);
      if (!index) {
        plan.rejected.push_back({i, index.error().message});
        continue;
      }
      // The changes before the truncate go first; those after it come after.
      if (auto sent = send_plan(); !sent) return DeliveryReport{sent.error(), {}};
      if (auto cleared = truncate_index(*index); !cleared) {
        return DeliveryReport{cleared.error(), {}};
      }
      continue;
    }
    auto removal = builder_.build_old_key_removal(change, i, batch.source_name);
    auto built = builder_.build(change, i, batch.source_name, batch.connector);
    if (!removal || !built) {
      metrics_.count(Outcome::kRejected);
      plan.rejected.push_back(
          {i, "elasticsearch: " + (removal ? built.error() : removal.error()).message});
      continue;
    }
    if (*removal) {
      if (auto added = add(std::move(**removal)); !added) return DeliveryReport{added.error(), {}};
    }
    if (!*built) continue;
    if (auto added = add(std::move(**built)); !added) return DeliveryReport{added.error(), {}};
  }
  if (auto sent = send_plan(); !sent) return DeliveryReport{sent.error(), {}};
  std::sort(plan.rejected.begin(), plan.rejected.end(),
            [](const auto& a, const auto& b) { return a.index < b.index; });
  return DeliveryReport{std::nullopt, std::move(plan.rejected)};
}
Status ElasticsearchSink::send_actions(Plan& plan, std::size_t first, std::size_t last) {
  std::vector<std::size_t> pending;
  for (std::size_t i = first; i < last; ++i) pending.push_back(i);
  std::size_t max_actions = config_.bulk.max_actions;
  const std::size_t min_actions = std::max<std::size_t>(1, config_.bulk.max_actions / 16);
  // The most actions a request may hold after a 413: growing back past it would only be refused
  // again, and a round that split and resent everything would otherwise grow back to where it
  // started, for ever.
  std::size_t split_ceiling = config_.bulk.max_actions;
  Backoff backoff(config_.retry.initial_backoff, config_.retry.max_backoff);
  RetryingMark retrying(retrying_);
  const std::string path =
      config_.pipeline.empty() ? "/_bulk" : "/_bulk?pipeline=" + config_.pipeline;
  auto stopped = [this](const std::string& why) {
    return fail("elasticsearch sink " + context_.name + " stopped" +
                (why.empty() ? std::string() : " while retrying: " + why));
  };

  // Why the last retry round was needed: what a stop() during retries reports.
  std::string last_error;
  while (!pending.empty()) {
    if (stopping_) return stopped(last_error);
    // One round: up to `concurrency` requests at once. Bodies are built per round, so memory is
    // bounded by concurrency x max_bytes beside the batch itself.
    std::vector<http::Request> requests;
    std::vector<std::vector<std::size_t>> chunks;
    std::size_t next = 0;
    while (next < pending.size() && requests.size() < config_.bulk.concurrency) {
      http::Request request{"POST", path, "", "application/x-ndjson"};
      std::vector<std::size_t> chunk;
      while (next < pending.size() && chunk.size() < max_actions) {
        const std::string& lines = plan.actions[pending[next]].lines;
        if (!chunk.empty() && request.body.size() + lines.size() > config_.bulk.max_bytes) break;
        request.body += lines;
        chunk.push_back(pending[next++]);
      }
      requests.push_back(std::move(request));
      chunks.push_back(std::move(chunk));
    }
    std::vector<std::size_t> resend_now;  // split after a 413: no backoff
    std::vector<std::size_t> retry;       // after backoff
    bool throttled = false;

    metrics_.in_flight(static_cast<double>(requests.size()));
    auto responses = client_.perform(requests);
    metrics_.in_flight(-static_cast<double>(requests.size()));

    for (std::size_t c = 0; c < chunks.size(); ++c) {
      const auto& chunk = chunks[c];
      const auto& response = responses[c];
      metrics_.observe_request(response.elapsed.count(), response.body_bytes, response.wire_bytes);
      auto retry_chunk = [&](const std::string& why) {
        metrics_.count_error();
        last_error = why;
        retry.insert(retry.end(), chunk.begin(), chunk.end());
      };
      if (response.transport_error) {
        if (stopping_) return stopped(last_error.empty() ? *response.transport_error : last_error);
        retry_chunk(describe(response));
        continue;
      }
      const int status = response.status;
      if (status >= 200 && status < 300) {
        auto items = parse_bulk_response(response.body, chunk.size());
        if (!items) {
          metrics_.count_error();
          return fail("elasticsearch sink " + context_.name + ": " + client_.redact(response.url) +
                      ": " + items.error().message);
        }
        for (std::size_t k = 0; k < chunk.size(); ++k) {
          const ItemResult& item = (*items)[k];
          const Action& action = plan.actions[chunk[k]];
          metrics_.count(item.outcome);
          switch (item.outcome) {
            case Outcome::kRetry:
              if (item.status == 429) throttled = true;
              last_error = "index " + action.index + " id " + action.id + ": " +
                           std::to_string(item.status) + " " + item.error;
              retry.push_back(chunk[k]);
              break;
            case Outcome::kRejected:
              plan.rejected.push_back(
                  {action.change, "elasticsearch rejected the change (index \"" + action.index +
                                      "\", id \"" + action.id +
                                      "\"): " + std::to_string(item.status) + " " + item.error});
              break;
            case Outcome::kUnauthorized:
              unauthorized_ = true;
              metrics_.count_error();
              return fail("elasticsearch sink " + context_.name + ": not authorized to write " +
                          "index " + action.index + ": " + std::to_string(item.status) + " " +
                          item.error);
            default:
              break;
          }
        }
        if (!retry.empty()) metrics_.count_error();
        continue;
      }
      if (status == 413) {
        if (chunk.size() == 1) {
          const Action& action = plan.actions[chunk[0]];
          metrics_.count(Outcome::kRejected);
          plan.rejected.push_back(
              {action.change, "elasticsearch refused the change as too large (413, " +
                                  std::to_string(response.body_bytes) + " bytes; index \"" +
                                  action.index + "\", id \"" + action.id + "\")"});
          continue;
        }
        split_ceiling = std::min(split_ceiling, std::max<std::size_t>(1, chunk.size() / 2));
        max_actions = std::min(max_actions, split_ceiling);
        resend_now.insert(resend_now.end(), chunk.begin(), chunk.end());
        continue;
      }
      if (status == 401 || status == 403) {
        unauthorized_ = true;
        metrics_.count_error();
        return fail("elasticsearch sink " + context_.name + ": authentication failed: " +
                    describe(response) + " (check the sink's auth settings)");
      }
      if (status == 429 || status >= 500) {
        if (status == 429) throttled = true;
        retry_chunk(describe(response));
        continue;
      }
      // A whole request refused otherwise (400: a body the sink built wrong, 404: a missing
      // ingest pipeline): retrying cannot help, and no item can be told apart.
      metrics_.count_error();
      return fail("elasticsearch sink " + context_.name + ": _bulk refused: " + describe(response));
    }

    std::vector<std::size_t> remaining = std::move(resend_now);
    remaining.insert(remaining.end(), retry.begin(), retry.end());
    remaining.insert(remaining.end(), pending.begin() + static_cast<std::ptrdiff_t>(next),
                     pending.end());
    pending = std::move(remaining);
    if (retry.empty()) {
      if (backoff.attempts() > 0) backoff.reset();
      max_actions = std::min(split_ceiling, max_actions * 2);
      continue;
    }
    retrying.mark();
    metrics_.count_retried(static_cast<double>(retry.size()));
    metrics_.count_retry();
    // Smaller bulks while the cluster pushes back (429): it has less to hold at once. Down to a
    // sixteenth, so that a long push-back does not shrink requests to single items.
    if (throttled) max_actions = std::min(split_ceiling, std::max(min_actions, max_actions / 2));
    auto wait = backoff.next();
    context_.log->warn("elasticsearch sink {}: {} item(s) to retry in {} ms: {}", context_.name,
                       retry.size(), wait.count(), last_error);
    if (sleep_unless_stopping(wait)) return stopped(last_error);
  }
  return ok();
}

Result<http::Response> ElasticsearchSink::request_with_retries(const http::Request& request,
                                                               std::string_view what) {
  Backoff backoff(config_.retry.initial_backoff, config_.retry.max_backoff);
  RetryingMark retrying(retrying_);
  while (true) {
    if (stopping_) return fail("elasticsearch sink " + context_.name + " stopped");
    auto response = client_.perform({request}).front();
    if (response.status == 401 || response.status == 403) {
      unauthorized_ = true;
      return fail("elasticsearch sink " + context_.name +
                  ": authentication failed: " + describe(response));
    }
    if (!response.transport_error && response.status != 429 && response.status < 500) {
      return response;
    }
    metrics_.count_error();
    retrying.mark();
    auto wait = backoff.next();
    context_.log->warn("elasticsearch sink {}: {}: {}; retrying in {} ms", context_.name, what,
                       describe(response), wait.count());
    if (sleep_unless_stopping(wait)) {
      return fail("elasticsearch sink " + context_.name + " stopped");
    }
    metrics_.count_retry();
  }
}

Status ElasticsearchSink::truncate_index(const std::string& index) {
  http::Request request{"POST", "/" + index + "/_delete_by_query?conflicts=proceed&refresh=true",
                        "{\"query\":{\"match_all\":{}}}", "application/json"};
  auto response = request_with_retries(request, "delete_by_query on " + index);
  if (!response) return tl::unexpected(response.error());
  if (response->status != 200 && response->status != 404) {
    return fail("elasticsearch sink " + context_.name + ": delete_by_query on " + index +
                " refused: " + describe(*response));
  }
  context_.log->info("elasticsearch sink {}: truncate: deleted the documents of index {}",
                     context_.name, index);
  return ok();
}

// Partial images (PostgreSQL's unchanged TOAST columns) are merged into the documents as stored,
// read with a realtime _mget, and sent as whole documents with the image's version: the external
// version then fences them like every other write, and a document whose stored version is newer
// makes the image superseded. (A scripted update would advance the document's internal version
// past the lsn, and a later write of the same lsn would be refused as superseded.) Nothing else
// writes a document between the read and the write: the plan holds one action per document.
Status ElasticsearchSink::merge_partial_images(Plan& plan) {
  std::vector<std::size_t> partial;
  for (std::size_t i = 0; i < plan.actions.size(); ++i) {
    if (plan.actions[i].kind == Action::Kind::kPartialImage) partial.push_back(i);
  }
  if (partial.empty()) return ok();
  std::vector<bool> dropped(plan.actions.size(), false);
  for (std::size_t first = 0; first < partial.size(); first += config_.bulk.max_actions) {
    const std::size_t last = std::min(partial.size(), first + config_.bulk.max_actions);
    auto request = nlohmann::json{{"docs", nlohmann::json::array()}};
    for (std::size_t k = first; k < last; ++k) {
      const Action& action = plan.actions[partial[k]];
      auto doc = nlohmann::json{{"_index", action.index}, {"_id", action.id}};
      if (!action.routing.empty()) doc["routing"] = action.routing;
      request["docs"].push_back(std::move(doc));
    }
    auto response =
        request_with_retries(http::Request{"POST", "/_mget", request.dump(), "application/json"},
                             "reading documents to merge partial images into");
    if (!response) return tl::unexpected(response.error());
    auto body = nlohmann::json::parse(response->body, nullptr, /*allow_exceptions=*/false);
    if (response->status != 200 || !body.is_object() || !body.contains("docs") ||
        !body["docs"].is_array() || body["docs"].size() != last - first) {
      return fail("elasticsearch sink " + context_.name +
                  ": _mget refused or not understood: " + describe(*response));
    }
    for (std::size_t k = first; k < last; ++k) {
      Action& action = plan.actions[partial[k]];
      const auto& doc = body["docs"][k - first];
      if (auto why = merge_stored(action, doc)) {
        dropped[partial[k]] = true;
        if (!why->empty()) {
          metrics_.count(Outcome::kRejected);
          plan.rejected.push_back({action.change, std::move(*why)});
        }
      }
    }
  }
  std::vector<Action> kept;
  kept.reserve(plan.actions.size());
  for (std::size_t i = 0; i < plan.actions.size(); ++i) {
    if (!dropped[i]) kept.push_back(std::move(plan.actions[i]));
  }
  plan.actions = std::move(kept);
  return ok();
}

// nullopt: `action` is now the merged document's write; otherwise it is dropped, superseded (an
// empty reason) or rejected with the reason.
std::optional<std::string> ElasticsearchSink::merge_stored(Action& action,
                                                           const nlohmann::json& doc) {
  if (doc.contains("error")) {
    const auto& error = doc["error"];
    if (error.is_object() && error.value("type", "") == "index_not_found_exception") {
      ActionBuilder::merge_into(action, nullptr);
      return std::nullopt;
    }
    return "elasticsearch could not read document \"" + action.id + "\" of index \"" +
           action.index + "\" to merge a partial image into: " + error.dump();
  }
  if (!doc.value("found", false)) {
    ActionBuilder::merge_into(action, nullptr);
    return std::nullopt;
  }
  const auto& stored = doc.contains("_source") ? doc["_source"] : nlohmann::json();
  auto version = stored.is_object() ? stored.find(std::string(kVersionField)) : stored.end();
  if (version != stored.end() && version->is_number_integer() &&
      version->get<std::int64_t>() > action.version) {
    metrics_.count(Outcome::kSuperseded);
    return std::string();
  }
  ActionBuilder::merge_into(action, &stored);
  return std::nullopt;
}

Status ElasticsearchSink::flush(Deadline deadline) {
  if (!pending_.wait_idle(deadline)) {
    return fail_retryable("elasticsearch sink " + context_.name +
                          ": a write is still in progress (being retried)");
  }
  return ok();
}

void ElasticsearchSink::stop() {
  {
    std::lock_guard lock(wake_mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  client_.abort();
  // Writes in progress return (with failed acks) once their request or backoff notices.
  pending_.wait_idle();
}

}  // namespace cdcd::elasticsearch

namespace cdcd {

void register_sink_elasticsearch(PluginRegistry& registry) {
  registry.add_sink("elasticsearch", [](config::Node& options, const SinkContext& context) {
    auto config = elasticsearch::parse_elasticsearch_config(options);
    if (!config) return std::unique_ptr<Sink>();
    return std::unique_ptr<Sink>(
        std::make_unique<elasticsearch::ElasticsearchSink>(std::move(*config), context));
  });
}

}  // namespace cdcd
