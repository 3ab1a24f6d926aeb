#include "tests/support/redis_sink_support.h"

#include <future>
#include <stdexcept>

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include "tests/support/daemon_fixture.h"
#include "tests/support/sink_conformance.h"

namespace cdcd::test {

RedisClient::RedisClient(int port) : context_(redisConnect("127.0.0.1", port)) {
  if (context_ == nullptr || context_->err != 0) throw std::runtime_error("cannot connect");
}

std::string RedisClient::run(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (const auto& arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data()));
  if (reply == nullptr) throw std::runtime_error("connection lost");
  std::string text = describe(*reply);
  freeReplyObject(reply);
  return text;
}

std::string RedisClient::describe(const redisReply& reply) {
  switch (reply.type) {
    case REDIS_REPLY_INTEGER:
      return std::to_string(reply.integer);
    case REDIS_REPLY_NIL:
      return "(nil)";
    case REDIS_REPLY_ARRAY:
      return "(array)";
    default:
      return std::string(reply.str, reply.len);
  }
}

Monitor::Monitor(int port) : client_(port), control_(port) {
  if (client_.run({"MONITOR"}) != "OK") throw std::runtime_error("MONITOR refused");
}

std::vector<std::string> Monitor::unlinked_keys() {
  const std::string sentinel = "cdcd-sentinel-" + std::to_string(++sentinels_);
  control_.run({"ECHO", sentinel});
  while (true) {
    void* raw = nullptr;
    if (redisGetReply(client_.context(), &raw) != REDIS_OK) throw std::runtime_error("lost");
    auto* reply = static_cast<redisReply*>(raw);
    std::string line = RedisClient::describe(*reply);
    freeReplyObject(reply);
    if (line.find(sentinel) != std::string::npos) break;
    if (line.find("\"UNLINK\"") == std::string::npos) continue;
    // 1700000000.123 [0 127.0.0.1:5555] "UNLINK" "k1" "k2"
    auto at = line.find("\"UNLINK\"") + 8;
    while ((at = line.find('"', at)) != std::string::npos) {
      auto end = line.find('"', at + 1);
      keys_.push_back(line.substr(at + 1, end - at - 1));
      at = end + 1;
    }
  }
  return keys_;
}

std::unique_ptr<Sink> started_sink(const std::string& yaml, Metrics& metrics) {
  auto sink = build_plugin_sink("redis", yaml, metrics);
  if (sink == nullptr) return nullptr;
  if (auto status = sink->start(); !status) {
    ADD_FAILURE() << status.error().message;
    return nullptr;
  }
  return sink;
}

BatchPtr batch_of(std::vector<Change> changes) {
  auto batch = std::make_shared<Batch>();
  batch->source_name = "db";
  batch->changes = std::move(changes);
  return batch;
}

DeliveryReport write_and_wait(Sink& sink, BatchPtr batch) {
  std::promise<DeliveryReport> done;
  sink.write(std::move(batch),
             [&done](DeliveryReport report) { done.set_value(std::move(report)); });
  return done.get_future().get();
}

double metric(Metrics& metrics, const std::string& name) {
  return metric_sum(
      parse_metrics(prometheus::TextSerializer().Serialize(metrics.registry()->Collect())), name);
}

}  // namespace cdcd::test
