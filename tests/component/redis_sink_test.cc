// The Redis sink (`mode: invalidate`) against real redis-server processes: the sink conformance
// suite (read back through MONITOR with plain hiredis), keys per change, error replies, restarts.

#include <hiredis/hiredis.h>

#include <atomic>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "daemon/metrics/metrics.h"
#include "tests/support/redis_server.h"
#include "tests/support/redis_sink_support.h"
#include "tests/support/sink_conformance.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;
using Client = RedisClient;

// Key "{entity}:{key.id}": MONITOR's UNLINKs read back as the changes, in order. Blocked: the
// server is stopped (SIGSTOP), so nothing is answered. A write() queues its commands and returns
// (its ack pending) while the window has room.
class RedisHarness : public SinkHarness {
 public:
  explicit RedisHarness(std::string extra) : extra_(std::move(extra)), monitor_(server_.port()) {}

  std::unique_ptr<Sink> make_sink() override { return started_sink(options(), metrics_); }

  std::unique_ptr<Sink> make_blocked_sink() override {
    auto sink = started_sink(options(), metrics_);
    server_.pause();
    return sink;
  }

  bool write_blocks() const override { return false; }

  std::vector<DeliveredChange> delivered() override {
    std::vector<DeliveredChange> changes;
    for (const auto& key : monitor_.unlinked_keys()) {
      auto colon = key.rfind(':');
      changes.push_back({key.substr(0, colon), std::stoull(key.substr(colon + 1))});
    }
    return changes;
  }

 private:
  std::string options() const {
    return "url: " + server_.url() + "\ntimeout: 2s\nkeys:\n  \"*\": [\"{entity}:{key.id}\"]\n" +
           extra_;
  }

  std::string extra_;
  RedisServer server_;
  Monitor monitor_;
  Metrics metrics_;
};

CDCD_SINK_CONFORMANCE_SUITE(
    Redis, SinkConformanceCase{"redis_unlink", [] { return std::make_unique<RedisHarness>(""); }},
    SinkConformanceCase{"redis_fenced",
                        [] { return std::make_unique<RedisHarness>("fence: {ttl: 10m}\n"); }});

Change change_of(const std::string& entity, std::uint64_t lsn, const std::string& key,
                 const std::string& new_row, const std::string& old_row = "",
                 Operation operation = Operation::kUpdate) {
  Change change;
  change.entity = entity;
  change.lsn = lsn;
  change.operation = operation;
  change.key = key;
  change.new_row = new_row;
  change.old_row = old_row;
  return change;
}

class RedisSinkTest : public ::testing::Test {
 protected:
  void fill(const std::vector<std::string>& keys) {
    for (const auto& key : keys) client_.run({"SET", key, "cached"});
  }

  RedisServer server_;
  Client client_{server_.port()};
  Metrics metrics_;
};

TEST_F(RedisSinkTest, InvalidatesEveryKeyOfTheFirstMatchingRuleOldAndNewValues) {
  auto sink =
      started_sink("url: " + server_.url() +
                       "\nkeys:\n"
                       "  \"public.users\": [\"user:{key.id}\", \"user:email:{old.email}\", "
                       "\"user:email:{new.email}\"]\n"
                       "  \"public.*\": [\"{table}:{key.id}\", \"{table}:list\"]\n"
                       "  \"*\": \"other:{entity}\"\n",
                   metrics_);
  ASSERT_NE(sink, nullptr);
  fill({"user:1", "user:email:a@x", "user:email:b@x", "user:2", "users:1", "orders:7",
        "orders:list", "other:audit.log", "untouched"});
  auto report = write_and_wait(
      *sink, batch_of({change_of("public.users", 10, R"({"id":1})", R"({"id":1,"email":"b@x"})",
                                 R"({"id":1,"email":"a@x"})"),
                       change_of("public.orders", 11, R"({"id":7})", R"({"id":7})"),
                       change_of("audit.log", 12, R"({"id":3})", R"({"id":3})")}));
  ASSERT_FALSE(report.failure) << report.failure->message;
  EXPECT_TRUE(report.rejected.empty());
  for (const char* key : {"user:1", "user:email:a@x", "user:email:b@x", "orders:7", "orders:list",
                          "other:audit.log"}) {
    EXPECT_FALSE(client_.exists(key)) << key;
  }
  // The first matching rule only: public.users never used "{table}:{key.id}".
  EXPECT_TRUE(client_.exists("users:1"));
  EXPECT_TRUE(client_.exists("user:2"));
  EXPECT_TRUE(client_.exists("untouched"));
  EXPECT_EQ(metric(metrics_, "cdcd_redis_keys_invalidated_total"), 6);
  EXPECT_EQ(metric(metrics_, "cdcd_redis_templates_skipped_total"), 0);
}

TEST_F(RedisSinkTest, ATemplateNamingAMissingFieldIsSkippedAndCounted) {
  auto sink = started_sink("url: " + server_.url() +
                               "\ncommand: del\nkeys:\n  \"*\": [\"user:{key.id}\", "
                               "\"user:email:{old.email}\", \"user:email:{new.email}\"]\n",
                           metrics_);
  ASSERT_NE(sink, nullptr);
  fill({"user:5", "user:email:c@x"});
  auto report = write_and_wait(
      *sink, batch_of({change_of("public.users", 20, R"({"id":5})", R"({"id":5,"email":"c@x"})", "",
                                 Operation::kInsert)}));
  ASSERT_FALSE(report.failure);
  EXPECT_FALSE(client_.exists("user:5"));
  EXPECT_FALSE(client_.exists("user:email:c@x"));
  EXPECT_EQ(metric(metrics_, "cdcd_redis_templates_skipped_total"), 1);
}

TEST_F(RedisSinkTest, AnUpdateThatChangedTheKeyInvalidatesTheOldKeyToo) {
  auto sink =
      started_sink("url: " + server_.url() + "\nkeys:\n  \"*\": [\"user:{key.id}\"]\n", metrics_);
  ASSERT_NE(sink, nullptr);
  fill({"user:1", "user:2"});
  Change change = change_of("public.users", 30, R"({"id":2})", R"({"id":2})");
  change.old_key = R"({"id":1})";
  ASSERT_FALSE(write_and_wait(*sink, batch_of({change})).failure);
  EXPECT_FALSE(client_.exists("user:1"));
  EXPECT_FALSE(client_.exists("user:2"));
}

TEST_F(RedisSinkTest, AuthenticatesAsAUserAndRejectsAKeyItMayNotTouch) {
  client_.run({"ACL", "SETUSER", "cdcd", "on", ">s3cret-pw", "~user:*", "+@all"});
  auto sink =
      started_sink("url: redis://cdcd:s3cret-pw@127.0.0.1:" + std::to_string(server_.port()) +
                       "\nkeys:\n  \"*\": [\"{entity}:{key.id}\"]\n",
                   metrics_);
  ASSERT_NE(sink, nullptr);
  fill({"user:1", "user:2", "secret:1"});
  auto report = write_and_wait(*sink, batch_of({change_of("user", 40, R"({"id":1})", "{}"),
                                                change_of("secret", 41, R"({"id":1})", "{}"),
                                                change_of("user", 42, R"({"id":2})", "{}")}));
  ASSERT_FALSE(report.failure);
  ASSERT_EQ(report.rejected.size(), 1u);
  EXPECT_EQ(report.rejected[0].index, 1u);
  EXPECT_NE(report.rejected[0].reason.find("NOPERM"), std::string::npos)
      << report.rejected[0].reason;
  EXPECT_EQ(report.rejected[0].reason.find("s3cret"), std::string::npos);
  EXPECT_FALSE(client_.exists("user:1"));
  EXPECT_FALSE(client_.exists("user:2"));
  EXPECT_TRUE(client_.exists("secret:1"));
  EXPECT_EQ(metric(metrics_, "cdcd_redis_reply_errors_total"), 1);
}

TEST_F(RedisSinkTest, AWrongPasswordFailsStartWithoutQuotingIt) {
  client_.run({"ACL", "SETUSER", "cdcd", "on", ">right-pw", "~*", "+@all"});
  auto sink =
      build_plugin_sink("redis",
                        "url: redis://cdcd:wrong-pw@127.0.0.1:" + std::to_string(server_.port()) +
                            "\nkeys: {\"*\": \"k\"}\n",
                        metrics_);
  ASSERT_NE(sink, nullptr);
  auto started = sink->start();
  ASSERT_FALSE(started);
  EXPECT_FALSE(started.error().retryable);
  EXPECT_EQ(started.error().message.find("wrong-pw"), std::string::npos) << started.error().message;
}

TEST_F(RedisSinkTest, BusyIsRetriedUntilRedisTakesTheCommands) {
  auto sink =
      started_sink("url: " + server_.url() + "\nkeys:\n  \"*\": [\"k:{key.id}\"]\n", metrics_);
  ASSERT_NE(sink, nullptr);
  fill({"k:1", "k:2"});
  // A script that runs until killed: past busy-reply-threshold, Redis answers everyone else BUSY.
  client_.run({"CONFIG", "SET", "busy-reply-threshold", "50"});
  std::thread busy([port = server_.port()] {
    Client blocker(port);
    blocker.run({"EVAL", "while true do end", "0"});
  });
  ASSERT_TRUE(wait_until([&] {
    Client probe(server_.port());
    return probe.run({"PING"}).starts_with("BUSY");
  }));
  auto batch =
      batch_of({change_of("t", 50, R"({"id":1})", "{}"), change_of("t", 51, R"({"id":2})", "{}")});
  // write() returns once Redis confirmed the batch: it runs on a thread of its own.
  auto done = std::async(std::launch::async, [&] { return write_and_wait(*sink, batch); });
  ASSERT_TRUE(wait_until([&] { return metric(metrics_, "cdcd_redis_reply_errors_total") >= 3; }));
  EXPECT_FALSE(sink->healthy());
  {
    Client killer(server_.port());
    EXPECT_EQ(killer.run({"SCRIPT", "KILL"}), "OK");
  }
  busy.join();
  auto report = done.get();
  ASSERT_FALSE(report.failure);
  EXPECT_TRUE(report.rejected.empty());
  EXPECT_FALSE(client_.exists("k:1"));
  EXPECT_FALSE(client_.exists("k:2"));
  EXPECT_TRUE(sink->healthy());
}

TEST_F(RedisSinkTest, AFlushedScriptCacheIsReloaded) {
  auto sink = started_sink(
      "url: " + server_.url() + "\nfence: {ttl: 1m}\nkeys:\n  \"*\": [\"k:{key.id}\"]\n", metrics_);
  ASSERT_NE(sink, nullptr);
  client_.run({"SCRIPT", "FLUSH"});
  fill({"k:1"});
  auto report = write_and_wait(*sink, batch_of({change_of("t", 60, R"({"id":1})", "{}")}));
  ASSERT_FALSE(report.failure);
  EXPECT_TRUE(report.rejected.empty());
  EXPECT_FALSE(client_.exists("k:1"));
}

TEST_F(RedisSinkTest, AWrongTypeFenceRejectsTheChange) {
  auto sink = started_sink(
      "url: " + server_.url() + "\nfence: {ttl: 1m}\nkeys:\n  \"*\": [\"k:{key.id}\"]\n", metrics_);
  ASSERT_NE(sink, nullptr);
  client_.run({"LPUSH", "cdcd:fence:{k:1}", "x"});
  fill({"k:1", "k:2"});
  auto report = write_and_wait(*sink, batch_of({change_of("t", 70, R"({"id":1})", "{}"),
                                                change_of("t", 71, R"({"id":2})", "{}")}));
  ASSERT_FALSE(report.failure);
  ASSERT_EQ(report.rejected.size(), 1u);
  EXPECT_EQ(report.rejected[0].index, 0u);
  EXPECT_NE(report.rejected[0].reason.find("WRONGTYPE"), std::string::npos)
      << report.rejected[0].reason;
  EXPECT_FALSE(client_.exists("k:2"));
}

// The shipped fill script (sinks/redis/cdcd_fill.lua), called as an application would.
class Fill {
 public:
  explicit Fill(Client& client)
      : client_(client),
        sha_(client.run(
            {"SCRIPT", "LOAD", read_file(source_dir() + "/sinks/redis/cdcd_fill.lua")})) {}
  // The token of a miss ("" on a hit: the test only fills missing keys).
  std::string token(const std::string& key) {
    auto* reply = call({"EVALSHA", sha_, "2", key, fence(key), "get"});
    std::string token =
        reply->element[0]->integer == 0 ? Client::describe(*reply->element[1]) : "(hit)";
    freeReplyObject(reply);
    return token;
  }
  bool set(const std::string& key, const std::string& token, const std::string& value) {
    return client_.run({"EVALSHA", sha_, "2", key, fence(key), "set", token, value, "60000"}) ==
           "1";
  }

 private:
  static std::string fence(const std::string& key) { return "cdcd:fence:{" + key + "}"; }
  redisReply* call(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    for (const auto& arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    return static_cast<redisReply*>(redisCommandArgv(
        client_.context(), static_cast<int>(argv.size()), argv.data(), lengths.data()));
  }
  Client& client_;
  std::string sha_;
};

TEST_F(RedisSinkTest, AFillStartedBeforeAnInvalidationIsRefusedAndAReplayNeverHidesANewerValue) {
  auto sink = started_sink(
      "url: " + server_.url() + "\nfence: {ttl: 10m}\nkeys:\n  \"*\": [\"item:{key.id}\"]\n",
      metrics_);
  ASSERT_NE(sink, nullptr);
  Fill fill(client_);
  // A reader misses and takes its token, reads the old row; the change commits and is
  // invalidated; the reader's fill must be refused.
  const std::string early = fill.token("item:1");
  ASSERT_FALSE(write_and_wait(*sink, batch_of({change_of("t", 100, R"({"id":1})", "{}")})).failure);
  EXPECT_FALSE(fill.set("item:1", early, "old")) << "a stale fill outlived the invalidation";
  EXPECT_FALSE(client_.exists("item:1"));
  // A reader that misses after the invalidation fills the new value.
  const std::string late = fill.token("item:1");
  EXPECT_TRUE(fill.set("item:1", late, "new"));
  // A replay of older changes (restart, checkpoint set backwards), and of the same one, leaves the
  // newer value alone.
  Change older = change_of("t", 90, R"({"id":1})", "{}");
  Change same = change_of("t", 100, R"({"id":1})", "{}");
  ASSERT_FALSE(write_and_wait(*sink, batch_of({older, same})).failure);
  EXPECT_EQ(client_.run({"GET", "item:1"}), "new");
  EXPECT_EQ(metric(metrics_, "cdcd_redis_fenced_total"), 2);
  // Positions compare exactly beyond double precision: lsn 2^53 + 1 after 2^53.
  const std::uint64_t big = std::uint64_t{1} << 53;
  ASSERT_FALSE(write_and_wait(*sink, batch_of({change_of("t", big, R"({"id":2})", "{}")})).failure);
  const std::string token = fill.token("item:2");
  ASSERT_FALSE(
      write_and_wait(*sink, batch_of({change_of("t", big + 1, R"({"id":2})", "{}")})).failure);
  EXPECT_FALSE(fill.set("item:2", token, "stale"));
  EXPECT_EQ(metric(metrics_, "cdcd_redis_fenced_total"), 2);
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t at = 0;
  while (at < text.size()) {
    auto end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  return lines;
}

// Acks recorded in the order they fire.
class AckRecorder {
 public:
  AckFn ack_for(int batch) {
    return [this, batch](DeliveryReport report) {
      std::lock_guard lock(mutex_);
      acks_.push_back({batch, report.failure ? report.failure->message : ""});
    };
  }
  std::vector<std::pair<int, std::string>> acks() {
    std::lock_guard lock(mutex_);
    return acks_;
  }
  std::size_t count() { return acks().size(); }

 private:
  std::mutex mutex_;
  std::vector<std::pair<int, std::string>> acks_;
};

BatchPtr numbered_batch(int batch, int size) {
  std::vector<Change> changes;
  for (int i = 0; i < size; ++i) {
    const int id = batch * size + i;
    changes.push_back(change_of("t", static_cast<std::uint64_t>(id + 1),
                                "{\"id\":" + std::to_string(id) + "}", "{}"));
  }
  return batch_of(std::move(changes));
}

TEST_F(RedisSinkTest, BatchesArePipelinedUpToTheWindowAndAFullWindowBlocksTheWriter) {
  auto sink = started_sink(
      "url: " + server_.url() + "\nwindow: {commands: 100}\nkeys:\n  \"*\": [\"k:{key.id}\"]\n",
      metrics_);
  ASSERT_NE(sink, nullptr);
  for (int i = 0; i < 150; ++i) client_.run({"SET", "k:" + std::to_string(i), "cached"});
  server_.pause();
  AckRecorder recorder;
  // Two batches of 50 fill the window of 100 commands: both are queued (sent behind each other)
  // before Redis confirmed anything.
  sink->write(numbered_batch(0, 50), recorder.ack_for(0));
  sink->write(numbered_batch(1, 50), recorder.ack_for(1));
  std::atomic<bool> third_returned{false};
  std::thread third([&] {
    sink->write(numbered_batch(2, 50), recorder.ack_for(2));
    third_returned = true;
  });
  std::this_thread::sleep_for(300ms);  // a window for a wrong sink to return or ack
  EXPECT_FALSE(third_returned) << "write() did not wait for room in the window";
  EXPECT_EQ(recorder.count(), 0u) << "acknowledged although Redis answered nothing";
  server_.resume();
  ASSERT_TRUE(wait_until([&] { return recorder.count() == 3; }));
  third.join();
  const auto acks = recorder.acks();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(acks[static_cast<std::size_t>(i)].first, i) << "acks out of write order";
    EXPECT_EQ(acks[static_cast<std::size_t>(i)].second, "");
  }
  for (int i = 0; i < 150; ++i) EXPECT_FALSE(client_.exists("k:" + std::to_string(i))) << i;
}

TEST(RedisSinkRestartTest, BatchesInFlightAcrossRestartsAreResentInOrderAndAckedInOrder) {
  RedisServerOptions options;
  options.persistent = true;
  RedisServer server(options);
  constexpr int kBatches = 80;
  constexpr int kPerBatch = 50;
  {
    Client client(server.port());
    for (int i = 0; i < kBatches * kPerBatch; ++i) {
      client.run({"SET", "k:" + std::to_string(i), "cached"});
    }
  }
  Metrics metrics;
  auto sink =
      started_sink("url: " + server.url() +
                       "\ntimeout: 1s\nfence: {ttl: 10m}\nkeys:\n  \"*\": [\"k:{key.id}\"]\n",
                   metrics);
  ASSERT_NE(sink, nullptr);
  AckRecorder recorder;
  std::thread writer([&] {
    for (int b = 0; b < kBatches; ++b) {
      sink->write(numbered_batch(b, kPerBatch), recorder.ack_for(b));  // no wait for the ack
      std::this_thread::sleep_for(5ms);  // pacing only: spreads the stream over the restarts
    }
  });
  for (int restart = 0; restart < 3; ++restart) {
    const std::size_t before = recorder.count();
    ASSERT_TRUE(wait_until([&] { return recorder.count() > before; }, 60s));
    if (restart % 2 == 0) {
      server.kill();
    } else {
      server.stop();
    }
    server.start();
  }
  writer.join();
  ASSERT_TRUE(wait_until([&] { return recorder.count() == kBatches; }, 60s));
  const auto acks = recorder.acks();
  for (int b = 0; b < kBatches; ++b) {
    EXPECT_EQ(acks[static_cast<std::size_t>(b)].first, b) << "acks out of write order";
    EXPECT_EQ(acks[static_cast<std::size_t>(b)].second, "");
  }
  Client client(server.port());
  int left = 0;
  for (int i = 0; i < kBatches * kPerBatch; ++i) {
    if (client.exists("k:" + std::to_string(i))) ++left;
  }
  EXPECT_EQ(left, 0) << "keys still cached after their invalidation was acknowledged";
  // Each key's fence holds its own change's position: no later command was overtaken by an
  // earlier one on a resend.
  for (int i = 0; i < kBatches * kPerBatch; i += 97) {
    EXPECT_EQ(client.run({"GET", "cdcd:fence:{k:" + std::to_string(i) + "}"}),
              fmt::format("{:020}{:010}", i + 1, 0));
  }
}

TEST_F(RedisSinkTest, DoubleDeleteRemovesAStaleFillAfterTheDelayWithoutHoldingTheAck) {
  auto sink = started_sink(
      "url: " + server_.url() + "\ndouble_delete: 400ms\nkeys:\n  \"*\": [\"k:{key.id}\"]\n",
      metrics_);
  ASSERT_NE(sink, nullptr);
  fill({"k:1"});
  const auto written = std::chrono::steady_clock::now();
  auto report = write_and_wait(*sink, batch_of({change_of("t", 1, R"({"id":1})", "{}")}));
  const auto acked = std::chrono::steady_clock::now();
  ASSERT_FALSE(report.failure);
  EXPECT_LT(acked - written, 400ms) << "the ack waited for the second delete";
  EXPECT_FALSE(client_.exists("k:1"));
  // A reader's stale SET lands right after the first delete: the second one removes it.
  fill({"k:1"});
  ASSERT_TRUE(wait_until([&] { return !client_.exists("k:1"); }, 5s))
      << "the second delete never came";
  EXPECT_GE(std::chrono::steady_clock::now() - written, 400ms) << "the second delete came early";
  EXPECT_EQ(metric(metrics_, "cdcd_redis_second_deletes_total"), 1);
  // flush() waits for second deletes still due.
  fill({"k:2"});
  ASSERT_FALSE(write_and_wait(*sink, batch_of({change_of("t", 2, R"({"id":2})", "{}")})).failure);
  fill({"k:2"});
  ASSERT_TRUE(sink->flush(std::chrono::steady_clock::now() + 5s));
  EXPECT_FALSE(client_.exists("k:2"));
  EXPECT_EQ(metric(metrics_, "cdcd_redis_second_deletes_total"), 2);
}

TEST_F(RedisSinkTest, SecondDeletesStillDueAtStopAreDroppedAndCounted) {
  auto sink = started_sink(
      "url: " + server_.url() + "\ndouble_delete: 1m\nkeys:\n  \"*\": [\"k:{key.id}\"]\n",
      metrics_);
  ASSERT_NE(sink, nullptr);
  ASSERT_FALSE(write_and_wait(*sink, batch_of({change_of("t", 1, R"({"id":1})", "{}"),
                                               change_of("t", 2, R"({"id":2})", "{}")}))
                   .failure);
  // flush() honours its deadline while a second delete is a minute away.
  const auto flush_began = std::chrono::steady_clock::now();
  EXPECT_FALSE(sink->flush(flush_began + 200ms));
  EXPECT_LT(std::chrono::steady_clock::now() - flush_began, 2s);
  const auto stop_began = std::chrono::steady_clock::now();
  sink->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - stop_began, 2s) << "stop() waited for the delay";
  EXPECT_EQ(metric(metrics_, "cdcd_redis_second_deletes_dropped_total"), 2);
  EXPECT_EQ(metric(metrics_, "cdcd_redis_second_deletes_total"), 0);
}

// A subscriber in Python (redis-py), independent of cdcd's code: prints "subscribed", then each
// message's data on a line, until `count` messages came.
std::unique_ptr<ChildProcess> python_subscriber(const RedisServer& server, const TempDir& dir,
                                                const std::string& pattern, int count) {
  const std::string script =
      "import redis, sys\n"
      "r = redis.Redis(port=" +
      std::to_string(server.port()) +
      ")\n"
      "p = r.pubsub(ignore_subscribe_messages=True)\n"
      "p.psubscribe('" +
      pattern +
      "')\n"
      "p.get_message(timeout=5)\n"
      "print('subscribed', flush=True)\n"
      "seen = 0\n"
      "while seen < " +
      std::to_string(count) +
      ":\n"
      "    m = p.get_message(timeout=10)\n"
      "    if m is None: sys.exit(2)\n"
      "    print(m['channel'].decode() + '\\t' + m['data'].decode(), flush=True)\n"
      "    seen += 1\n";
  return std::make_unique<ChildProcess>(std::vector<std::string>{"/usr/bin/python3", "-c", script},
                                        dir.path());
}

TEST_F(RedisSinkTest, PublishesAJsonNoticeOfEachChangeWithItsKeys) {
  TempDir dir;
  auto subscriber = python_subscriber(server_, dir, "cdc:*", 2);
  ASSERT_TRUE(wait_until(
      [&] { return subscriber->stdout_text().find("subscribed") != std::string::npos; }));
  auto sink = started_sink("url: " + server_.url() +
                               "\npublish: \"cdc:{entity}\"\nkeys:\n  \"public.users\": "
                               "[\"user:{key.id}\", \"user:email:{new.email}\"]\n",
                           metrics_);
  ASSERT_NE(sink, nullptr);
  fill({"user:1"});
  auto report = write_and_wait(
      *sink, batch_of({change_of("public.users", 10, R"({"id":1})", R"({"id":1,"email":"a@x"})"),
                       change_of("public.orders", 11, R"({"id":7})", "", "", Operation::kDelete)}));
  ASSERT_FALSE(report.failure);
  ASSERT_EQ(subscriber->wait(15s), 0) << subscriber->stderr_text();
  EXPECT_FALSE(client_.exists("user:1"));
  auto lines = split_lines(subscriber->stdout_text());
  ASSERT_EQ(lines.size(), 3u) << subscriber->stdout_text();
  auto first_tab = lines[1].find('\t');
  EXPECT_EQ(lines[1].substr(0, first_tab), "cdc:public.users");
  auto first = nlohmann::json::parse(lines[1].substr(first_tab + 1));
  EXPECT_EQ(first, nlohmann::json::parse(R"({"entity":"public.users","key":{"id":1},
      "operation":"update","lsn":10,"keys":["user:1","user:email:a@x"]})"));
  auto second_tab = lines[2].find('\t');
  EXPECT_EQ(lines[2].substr(0, second_tab), "cdc:public.orders");
  auto second = nlohmann::json::parse(lines[2].substr(second_tab + 1));
  EXPECT_EQ(second, nlohmann::json::parse(R"({"entity":"public.orders","key":{"id":7},
      "operation":"delete","lsn":11,"keys":[]})"));
  EXPECT_EQ(metric(metrics_, "cdcd_redis_notices_published_total"), 2);
}

// The entries of a stream as redis-py reads them: "ID<TAB>FIELD=VALUE" lines.
std::vector<std::string> python_stream_entries(const RedisServer& server, const std::string& key) {
  const std::string script = "import redis\nr = redis.Redis(port=" + std::to_string(server.port()) +
                             ")\nfor id, fields in r.xrange('" + key +
                             "'):\n"
                             "    for f, v in fields.items():\n"
                             "        print(id.decode() + '\\t' + f.decode() + '=' + v.decode())\n";
  std::string output;
  EXPECT_EQ(run_command({"/usr/bin/python3", "-c", script}, &output), 0);
  return split_lines(output);
}

TEST_F(RedisSinkTest, StreamModeAddsEachChangeUnderItsPositionAndRedisRefusesAReplay) {
  auto sink = started_sink(
      "url: " + server_.url() + "\nmode: stream\nstream: {key: \"cdc:{table}\", format: native}\n",
      metrics_);
  ASSERT_NE(sink, nullptr);
  Change a = change_of("public.users", 100, R"({"id":1})", R"({"id":1})");
  Change b = change_of("public.users", 100, R"({"id":2})", R"({"id":2})");
  b.seq = 1;
  Change c = change_of("public.users", 120, R"({"id":3})", R"({"id":3})");
  auto report = write_and_wait(*sink, batch_of({a, b, c}));
  ASSERT_FALSE(report.failure);
  EXPECT_TRUE(report.rejected.empty());
  auto entries = python_stream_entries(server_, "cdc:users");
  ASSERT_EQ(entries.size(), 3u);
  const std::vector<std::string> ids = {"100-0", "100-1", "120-0"};
  for (std::size_t i = 0; i < 3; ++i) {
    auto tab = entries[i].find('\t');
    EXPECT_EQ(entries[i].substr(0, tab), ids[i]);
    ASSERT_EQ(entries[i].substr(tab + 1, 7), "change=");
    auto change = nlohmann::json::parse(entries[i].substr(tab + 8));
    EXPECT_EQ(change["entity"], "public.users");
    EXPECT_EQ(change["key"]["id"], static_cast<int>(i) + 1);
  }
  // A replay (restart from an older checkpoint): Redis refuses the ids, nothing is duplicated,
  // and the batch is delivered; a new change after it is added.
  Change d = change_of("public.users", 130, R"({"id":4})", R"({"id":4})");
  report = write_and_wait(*sink, batch_of({b, c, d}));
  ASSERT_FALSE(report.failure);
  EXPECT_TRUE(report.rejected.empty());
  entries = python_stream_entries(server_, "cdc:users");
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[3].substr(0, entries[3].find('\t')), "130-0");
  EXPECT_EQ(metric(metrics_, "cdcd_redis_stream_duplicates_total"), 2);
  EXPECT_EQ(metric(metrics_, "cdcd_redis_stream_entries_total"), 4);
  // A key holding another type is refused for good: the change is rejected.
  client_.run({"SET", "cdc:orders", "not a stream"});
  report = write_and_wait(*sink, batch_of({change_of("public.orders", 140, R"({"id":1})", "{}")}));
  ASSERT_FALSE(report.failure);
  ASSERT_EQ(report.rejected.size(), 1u);
  EXPECT_NE(report.rejected[0].reason.find("WRONGTYPE"), std::string::npos)
      << report.rejected[0].reason;
}

TEST_F(RedisSinkTest, StreamModeTrimsApproximatelyToMaxlen) {
  auto sink = started_sink(
      "url: " + server_.url() + "\nmode: stream\nstream: {key: \"s\", maxlen: 10}\n", metrics_);
  ASSERT_NE(sink, nullptr);
  std::vector<Change> changes;
  for (int i = 1; i <= 1000; ++i) {
    changes.push_back(
        change_of("t", static_cast<std::uint64_t>(i), "{\"id\":" + std::to_string(i) + "}", "{}"));
  }
  ASSERT_FALSE(write_and_wait(*sink, batch_of(std::move(changes))).failure);
  // MAXLEN ~ trims whole stream nodes (100 entries each by default): at least 10 entries are
  // kept, far fewer than 1000.
  const int length = std::stoi(client_.run({"XLEN", "s"}));
  EXPECT_GE(length, 10);
  EXPECT_LE(length, 200);
  EXPECT_EQ(server_.cli({"XREVRANGE", "s", "+", "-", "COUNT", "1"}).substr(0, 6), "1000-0");
}

TEST(RedisSinkConfigTest, ModeOptionsAreCheckedWithTheirPositions) {
  TempDir dir;
  write_file(dir.file("cdcd.yaml"), R"(sources:
  demo: {type: jsonl, path: changes.jsonl}
sinks:
  streamed:
    type: redis
    url: redis://127.0.0.1:6379
    mode: stream
    keys: {"*": "k:{key.id}"}
    fence: {ttl: 10m}
    stream: {key: "cdc:{key.id}", maxlen: 0, format: avro}
  published:
    type: redis
    url: redis://127.0.0.1:6379
    mode: publish
    stream: {key: "cdc:{entity}"}
  invalidated:
    type: redis
    url: redis://127.0.0.1:6379
    keys: {"*": "k:{key.id}"}
    double_delete: 0ms
    window: {commands: 0, bytes: 1KiB, byte: 1}
checkpoints: {type: file, dir: checkpoints}
consumers:
  everything:
    source: demo
    sinks: [streamed, published, invalidated]
)");
  ChildProcess validate({cdcd_binary(), "validate", "--config", dir.file("cdcd.yaml")}, dir.path());
  ASSERT_EQ(validate.wait(), 2);
  const std::string f = dir.file("cdcd.yaml");
  const std::vector<std::string> expected = {
      f + ":8:11: error: sinks.streamed.keys: keys applies to mode: invalidate or publish",
      f + ":9:12: error: sinks.streamed.fence: fence applies to mode: invalidate only",
      f + ":10:19: error: sinks.streamed.stream.key: unknown placeholder {key.id}; known: {source} "
          "{entity} {schema} {table} {operation}",
      f + ":10:43: error: sinks.streamed.stream.maxlen: expected an integer between 1 and "
          "4611686018427387904, got \"0\"",
      f + ":10:54: error: sinks.streamed.stream.format: expected one of native, debezium, "
          "mongodb, got \"avro\"",
      f + ":12:5: error: sinks.published: missing required key \"publish\"",
      f + ":15:13: error: sinks.published.stream: stream settings need mode: stream",
      f + ":20:20: error: sinks.invalidated.double_delete: must be longer than 0ms",
      f + ":21:24: error: sinks.invalidated.window.commands: expected an integer between 1 and "
          "16777216, got \"0\"",
      f + ":21:34: error: sinks.invalidated.window.bytes: must be at least 4KiB",
      f + ":21:40: error: sinks.invalidated.window.byte: unknown key \"byte\" (did you mean "
          "\"bytes\"?)",
  };
  EXPECT_EQ(split_lines(validate.stdout_text() + validate.stderr_text()), expected);
}

TEST(RedisSinkTlsTest, InvalidatesOverTlsAndRefusesAnUntrustedServer) {
  RedisServerOptions options;
  options.tls = true;
  options.password = "tls-pw";
  RedisServer server(options);
  server.cli({"SET", "k:1", "cached"});
  Metrics metrics;
  auto sink = started_sink("url: " + server.url() + "\ntls: {ca_file: " + server.ca_file() +
                               "}\nkeys:\n  \"*\": [\"k:{key.id}\"]\n",
                           metrics);
  ASSERT_NE(sink, nullptr);
  auto report = write_and_wait(*sink, batch_of({change_of("t", 1, R"({"id":1})", "{}")}));
  ASSERT_FALSE(report.failure);
  EXPECT_EQ(server.cli({"EXISTS", "k:1"}), "0");

  // The system CA store does not know the throwaway certificate: a permanent start failure.
  auto untrusted = build_plugin_sink(
      "redis", "url: " + server.url() + "\nkeys:\n  \"*\": [\"k:{key.id}\"]\n", metrics);
  ASSERT_NE(untrusted, nullptr);
  auto started = untrusted->start();
  ASSERT_FALSE(started);
  EXPECT_FALSE(started.error().retryable) << started.error().message;
  EXPECT_NE(started.error().message.find("TLS"), std::string::npos) << started.error().message;
  EXPECT_EQ(started.error().message.find("tls-pw"), std::string::npos);
}

TEST(RedisSinkRestartTest, RedisRestartedMidStreamLosesNoInvalidation) {
  RedisServerOptions options;
  options.persistent = true;
  RedisServer server(options);
  constexpr int kBatches = 60;
  constexpr int kPerBatch = 50;
  {
    Client client(server.port());
    for (int i = 0; i < kBatches * kPerBatch; ++i) {
      client.run({"SET", "k:" + std::to_string(i), "cached"});
    }
    client.run({"SET", "untouched", "cached"});
  }
  Metrics metrics;
  auto sink = started_sink(
      "url: " + server.url() + "\ntimeout: 1s\nkeys:\n  \"*\": [\"k:{key.id}\"]\n", metrics);
  ASSERT_NE(sink, nullptr);
  std::atomic<int> acked{0};
  std::thread writer([&] {
    for (int b = 0; b < kBatches; ++b) {
      std::vector<Change> changes;
      for (int i = 0; i < kPerBatch; ++i) {
        const int id = b * kPerBatch + i;
        changes.push_back(change_of("t", static_cast<std::uint64_t>(id + 1),
                                    "{\"id\":" + std::to_string(id) + "}", "{}"));
      }
      auto report = write_and_wait(*sink, batch_of(std::move(changes)));
      EXPECT_FALSE(report.failure);
      ++acked;
      std::this_thread::sleep_for(5ms);  // pacing only: spreads the stream over the restarts
    }
  });
  for (int restart = 0; restart < 3; ++restart) {
    const int before = acked;
    ASSERT_TRUE(wait_until([&] { return acked > before; }, 60s));
    if (restart % 2 == 0) {
      server.kill();
    } else {
      server.stop();
    }
    server.start();
  }
  writer.join();
  EXPECT_EQ(acked, kBatches);
  Client client(server.port());
  int left = 0;
  for (int i = 0; i < kBatches * kPerBatch; ++i) {
    if (client.exists("k:" + std::to_string(i))) ++left;
  }
  EXPECT_EQ(left, 0) << "keys still cached after their invalidation was acknowledged";
  EXPECT_TRUE(client.exists("untouched"));
}

}  // namespace
}  // namespace cdcd::test
