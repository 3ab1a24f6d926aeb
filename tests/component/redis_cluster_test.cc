// Redis Cluster (`cluster: true`) against three real cluster-enabled redis-server masters: slots
// computed as Redis computes them, invalidation across every node, redirections (ASK and MOVED)
// while slots migrate, a node killed and restarted, NOSCRIPT on one node, and the sink conformance
// suite. Keys are read back with plain hiredis (following MOVED/ASK by hand), never through the
// code under test.

#include <hiredis/hiredis.h>

#include <atomic>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include <yaml-cpp/yaml.h>

#include "daemon/config/node.h"
#include "daemon/metrics/metrics.h"
#include "daemon/redis/cluster_connection.h"
#include "daemon/redis/cluster_slots.h"
#include "sinks/redis/redis_sink_config.h"
#include "tests/support/redis_server.h"
#include "tests/support/redis_sink_support.h"
#include "tests/support/sink_conformance.h"
#include "tests/support/test_util.h"

namespace cdcd::test {
namespace {

using namespace std::chrono_literals;

std::string describe(const redisReply& reply) {
  switch (reply.type) {
    case REDIS_REPLY_INTEGER:
      return std::to_string(reply.integer);
    case REDIS_REPLY_NIL:
      return "(nil)";
    case REDIS_REPLY_ARRAY: {
      std::string text;
      for (std::size_t i = 0; i < reply.elements; ++i) {
        text += (i == 0 ? "" : ",") + describe(*reply.element[i]);
      }
      return "[" + text + "]";
    }
    default:
      return std::string(reply.str, reply.len);
  }
}

// Plain hiredis against every node; a command goes to the first node and follows MOVED and ASK
// by hand (what `redis-cli -c` does), independent of the sink's cluster code.
class PlainClusterClient {
 public:
  explicit PlainClusterClient(RedisCluster& cluster) : cluster_(cluster) {}
  ~PlainClusterClient() {
    for (auto& [port, context] : contexts_) redisFree(context);
  }

  std::string run(const std::vector<std::string>& args) {
    int first = 0;
    while (first + 1 < cluster_.size() && !cluster_.node(first).running()) ++first;
    int port = cluster_.node(first).port();
    bool asking = false;
    for (int hop = 0; hop < 10; ++hop) {
      if (asking) raw(port, {"ASKING"});
      std::string reply = raw(port, args);
      asking = reply.starts_with("ASK ");
      if (!asking && !reply.starts_with("MOVED ")) return reply;
      port = std::stoi(reply.substr(reply.rfind(':') + 1));
    }
    throw std::runtime_error("too many redirections");
  }
  bool exists(const std::string& key) { return run({"EXISTS", key}) == "1"; }

  // One command to one node, no redirection followed; once more on a new connection when the
  // node was restarted since the last command.
  std::string raw(int port, const std::vector<std::string>& args) {
    try {
      return raw_once(port, args);
    } catch (const std::runtime_error&) {
      return raw_once(port, args);
    }
  }

 private:
  std::string raw_once(int port, const std::vector<std::string>& args) {
    redisContext*& context = contexts_[port];
    if (context == nullptr) {
      context = redisConnect("127.0.0.1", port);
      if (context == nullptr || context->err != 0) throw std::runtime_error("cannot connect");
    }
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    for (const auto& arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(context, static_cast<int>(argv.size()), argv.data(), lengths.data()));
    if (reply == nullptr) {
      redisFree(context);
      context = nullptr;
      throw std::runtime_error("connection lost");
    }
    std::string text = describe(*reply);
    freeReplyObject(reply);
    return text;
  }

  RedisCluster& cluster_;
  std::map<int, redisContext*> contexts_;
};

Change change_of(std::uint64_t lsn, std::uint64_t id) {
  Change change;
  change.entity = "public.users";
  change.lsn = lsn;
  change.operation = Operation::kUpdate;
  change.key = "{\"id\":" + std::to_string(id) + "}";
  change.new_row =
      "{\"id\":" + std::to_string(id) + ",\"email\":\"u" + std::to_string(id) + "@x\"}";
  return change;
}

// Ids whose key "user:ID" falls into `slot`.
std::vector<std::uint64_t> ids_in_slot(int slot, std::size_t count) {
  std::vector<std::uint64_t> ids;
  for (std::uint64_t id = 0; ids.size() < count; ++id) {
    if (redis::key_slot("user:" + std::to_string(id)) == slot) ids.push_back(id);
  }
  return ids;
}

// "errorstat_MOVED:count=N" or "cmdstat_asking:calls=N" of one node's INFO.
long info_count(RedisServer& node, const std::string& section, const std::string& prefix) {
  std::string info = node.cli({"INFO", section});
  auto at = info.find(prefix);
  if (at == std::string::npos) return 0;
  return std::stol(info.substr(at + prefix.size()));
}

long redirections(RedisCluster& cluster, const std::string& kind) {
  long total = 0;
  for (int n = 0; n < cluster.size(); ++n) {
    total += info_count(cluster.node(n), "errorstats", "errorstat_" + kind + ":count=");
  }
  return total;
}

TEST(RedisClusterSlots, KeySlotAgreesWithRedis) {
  RedisServerOptions options;
  options.cluster_node = true;
  RedisServer node(options);
  for (std::string key : {"", "a", "user:1000", "{user1000}.following", "foo{}{bar}",
                          "foo{{bar}}zap", "foo{bar}{zap}", "{}", "a{b", "x}y{z}", "{a}{b}",
                          "cdcd:fence:{user:7}", "\xff\xfe binary"}) {
    EXPECT_EQ(std::to_string(redis::key_slot(key)), node.cli({"CLUSTER", "KEYSLOT", key})) << key;
  }
  redisContext* context = redisConnect("127.0.0.1", node.port());
  ASSERT_TRUE(context != nullptr && context->err == 0);
  for (int i = 0; i < 5000; ++i) {
    const std::string key = "k:" + std::to_string(i * 7919);
    auto* reply =
        static_cast<redisReply*>(redisCommand(context, "CLUSTER KEYSLOT %s", key.c_str()));
    ASSERT_NE(reply, nullptr);
    const long long slot = reply->integer;
    freeReplyObject(reply);
    ASSERT_EQ(redis::key_slot(key), slot) << key;
  }
  redisFree(context);
}

TEST(RedisClusterSlots, RoutingKeyAndGroupingBySlot) {
  EXPECT_EQ(redis::routing_key({"UNLINK", "a", "b"}), "a");
  EXPECT_EQ(redis::routing_key({"evalsha", "sha", "2", "k", "f", "arg"}), "k");
  EXPECT_EQ(redis::routing_key({"EVALSHA", "sha", "0", "arg"}), std::nullopt);
  EXPECT_EQ(redis::routing_key({"SCRIPT", "LOAD", "return 1"}), std::nullopt);
  EXPECT_EQ(redis::routing_key({"PING"}), std::nullopt);
  auto groups = redis::group_by_slot({"a{x}", "b", "c{x}", "d{b}"});
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0], (std::vector<std::string>{"a{x}", "c{x}"}));
  EXPECT_EQ(groups[1], (std::vector<std::string>{"b", "d{b}"}));
}

std::string config_errors(const std::string& yaml) {
  config::Diagnostics diagnostics;
  auto context = std::make_shared<config::ParseContext>();
  context->file = "cdcd.yaml";
  context->diagnostics = &diagnostics;
  context->env = [](const std::string&) { return std::optional<std::string>(); };
  config::Node options(YAML::Load(yaml), "sinks.cache", context);
  auto config = redis::parse_redis_sink_config(options);
  EXPECT_EQ(config.has_value(), diagnostics.errors() == 0);
  return diagnostics.to_string();
}

TEST(RedisClusterConfig, ClusterTrueIsAcceptedAndADatabaseIsRefused) {
  EXPECT_EQ(config_errors("url: redis://127.0.0.1:7000\ncluster: true\nkeys: {\"*\": \"k\"}\n"),
            "");
  EXPECT_NE(config_errors("url: redis://127.0.0.1:7000/2\ncluster: true\nkeys: {\"*\": \"k\"}\n")
                .find("cdcd.yaml:1:6: error: sinks.cache.url: a Redis Cluster has only database 0"),
            std::string::npos);
}

class RedisClusterSinkTest : public ::testing::Test {
 protected:
  std::string options(const std::string& extra = "") const {
    return "url: " + cluster_.url() + "\ncluster: true\ntimeout: 2s\nkeys:\n" +
           "  \"*\": [\"user:{key.id}\", \"email:{new.email}\"]\n" + extra;
  }
  void fill(std::uint64_t first, std::uint64_t count) {
    for (std::uint64_t id = first; id < first + count; ++id) {
      client_.run({"SET", "user:" + std::to_string(id), "cached"});
      client_.run({"SET", "email:u" + std::to_string(id) + "@x", "cached"});
    }
  }
  std::vector<std::string> remaining(std::uint64_t first, std::uint64_t count) {
    std::vector<std::string> left;
    for (std::uint64_t id = first; id < first + count; ++id) {
      for (auto key : {"user:" + std::to_string(id), "email:u" + std::to_string(id) + "@x"}) {
        if (client_.exists(key)) left.push_back(key);
      }
    }
    return left;
  }

  RedisCluster cluster_;
  PlainClusterClient client_{cluster_};
  Metrics metrics_;
};

TEST_F(RedisClusterSinkTest, ClusterFalseAgainstAClusterIsRefusedByRedisNotSilent) {
  // Without cluster: true a cluster node answers MOVED for most keys: the change is rejected with
  // Redis' reason, never acknowledged as done.
  auto sink =
      started_sink("url: " + cluster_.url() + "\nkeys: {\"*\": \"user:{key.id}\"}\n", metrics_);
  ASSERT_NE(sink, nullptr);
  std::vector<Change> changes;
  for (std::uint64_t id = 0; id < 30; ++id) changes.push_back(change_of(100 + id, id));
  auto report = write_and_wait(*sink, batch_of(changes));
  ASSERT_FALSE(report.failure);
  EXPECT_GT(report.rejected.size(), 0u);
  EXPECT_NE(report.rejected[0].reason.find("MOVED"), std::string::npos);
}

TEST_F(RedisClusterSinkTest, AStandaloneServerIsRefusedAtStart) {
  RedisServer standalone;
  auto sink = build_plugin_sink(
      "redis", "url: " + standalone.url() + "\ncluster: true\nkeys: {\"*\": \"k\"}\n", metrics_);
  ASSERT_NE(sink, nullptr);
  auto started = sink->start();
  ASSERT_FALSE(started);
  EXPECT_FALSE(started.error().retryable);
  EXPECT_NE(started.error().message.find("cluster"), std::string::npos) << started.error().message;
}

TEST_F(RedisClusterSinkTest, InvalidatesKeysSpreadOverEveryNode) {
  for (bool fenced : {false, true}) {
    SCOPED_TRACE(fenced ? "fenced" : "unlink");
    const std::uint64_t first = fenced ? 10000 : 0, count = 2000;
    fill(first, count);
    for (int n = 0; n < cluster_.size(); ++n) {
      EXPECT_GT(std::stol(cluster_.node(n).cli({"DBSIZE"})), 300) << "node " << n;
    }
    Metrics metrics;
    auto sink = started_sink(options(fenced ? "fence: {ttl: 10m}\n" : ""), metrics);
    ASSERT_NE(sink, nullptr);
    for (std::uint64_t at = first; at < first + count; at += 500) {
      std::vector<Change> changes;
      for (std::uint64_t id = at; id < at + 500; ++id) changes.push_back(change_of(id + 1, id));
      auto report = write_and_wait(*sink, batch_of(changes));
      ASSERT_FALSE(report.failure) << report.failure->message;
      ASSERT_TRUE(report.rejected.empty()) << report.rejected[0].reason;
    }
    EXPECT_EQ(remaining(first, count), std::vector<std::string>{});
    EXPECT_EQ(metric(metrics, "cdcd_redis_keys_invalidated_total"), 2.0 * count);
    if (fenced) {
      // Each fence sits in its key's slot and holds the change's position.
      const std::string key = "user:" + std::to_string(first + 7);
      EXPECT_EQ(client_.run({"GET", "cdcd:fence:{" + key + "}"}),
                "00000000000000010008" + std::string(10, '0'));
      EXPECT_EQ(client_.run({"CLUSTER", "KEYSLOT", "cdcd:fence:{" + key + "}"}),
                client_.run({"CLUSTER", "KEYSLOT", key}));
    }
  }
}

TEST_F(RedisClusterSinkTest, FollowsAskWhileASlotMigratesAndMovedAfterwards) {
  auto sink = started_sink(
      "url: " + cluster_.url() + "\ncluster: true\ntimeout: 2s\nkeys: {\"*\": \"user:{key.id}\"}\n",
      metrics_);
  ASSERT_NE(sink, nullptr);
  const int slot = redis::key_slot("user:1");
  const int from = cluster_.owner_of(slot);
  const int to = (from + 1) % cluster_.size();
  const auto ids = ids_in_slot(slot, 20);
  auto fill_slot = [&] {
    for (auto id : ids) client_.run({"SET", "user:" + std::to_string(id), "cached"});
  };
  fill_slot();
  // Half of the slot's keys have moved to the target: those answer ASK on the source.
  cluster_.begin_slot_migration(slot, from, to);
  std::vector<std::string> moved;
  for (std::size_t i = 0; i < ids.size(); i += 2) moved.push_back("user:" + std::to_string(ids[i]));
  cluster_.migrate_keys(from, to, moved);
  std::vector<Change> changes;
  std::uint64_t lsn = 1;
  for (auto id : ids) changes.push_back(change_of(lsn++, id));
  auto report = write_and_wait(*sink, batch_of(changes));
  ASSERT_FALSE(report.failure) << report.failure->message;
  ASSERT_TRUE(report.rejected.empty()) << report.rejected[0].reason;
  EXPECT_GE(redirections(cluster_, "ASK"), static_cast<long>(moved.size()));
  EXPECT_GE(info_count(cluster_.node(to), "commandstats", "cmdstat_asking:calls="),
            static_cast<long>(moved.size()));
  cluster_.finish_slot_migration(slot, from, to);
  EXPECT_EQ(client_.run({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}), "0");
  for (auto id : ids) EXPECT_FALSE(client_.exists("user:" + std::to_string(id))) << id;

  // The sink's map still names the old owner: MOVED, then the new owner.
  fill_slot();
  const long moved_before = redirections(cluster_, "MOVED");
  changes.clear();
  for (auto id : ids) changes.push_back(change_of(lsn++, id));
  report = write_and_wait(*sink, batch_of(changes));
  ASSERT_FALSE(report.failure) << report.failure->message;
  ASSERT_TRUE(report.rejected.empty()) << report.rejected[0].reason;
  EXPECT_GT(redirections(cluster_, "MOVED"), moved_before);
  for (auto id : ids) EXPECT_FALSE(client_.exists("user:" + std::to_string(id))) << id;
}

TEST_F(RedisClusterSinkTest, ReloadsTheFenceScriptOnTheNodeThatLostIt) {
  auto sink = started_sink(options("fence: {ttl: 10m}\n"), metrics_);
  ASSERT_NE(sink, nullptr);
  fill(0, 300);
  cluster_.node(1).cli({"SCRIPT", "FLUSH"});
  std::vector<Change> changes;
  for (std::uint64_t id = 0; id < 300; ++id) changes.push_back(change_of(id + 1, id));
  auto report = write_and_wait(*sink, batch_of(changes));
  ASSERT_FALSE(report.failure) << report.failure->message;
  ASSERT_TRUE(report.rejected.empty()) << report.rejected[0].reason;
  EXPECT_EQ(remaining(0, 300), std::vector<std::string>{});
  EXPECT_GT(info_count(cluster_.node(1), "errorstats", "errorstat_NOSCRIPT:count="), 0);
}

// Lists grow by one element per RPUSH, so each reply says whether a command ran exactly once and
// in order: the n-th push to a key must answer n. Pushed while redis-cli reshards 200 slots
// from one node to another, every MOVED and ASK on the way followed by ClusterConnection.
TEST(RedisClusterConnection, KeepsPerKeyOrderThroughAReshard) {
  RedisCluster cluster;
  auto settings = redis::parse_url(cluster.url());
  ASSERT_TRUE(settings);
  settings->io_timeout = 10s;
  auto opened =
      redis::ClusterConnection::open(*settings, {{"127.0.0.1", cluster.node(0).port()}}, nullptr);
  ASSERT_TRUE(opened) << opened.error().message;
  auto& connection = **opened;

  std::vector<std::string> keys;
  // Keys of the 200 slots that move (redis-cli takes node 0's lowest), and some of elsewhere.
  const int from = 0, to = 1;
  ASSERT_EQ(cluster.owner_of(0), from);
  ASSERT_EQ(cluster.owner_of(199), from);
  for (int i = 0; keys.size() < 1000; ++i) {
    std::string key = "list:" + std::to_string(i);
    if (redis::key_slot(key) < 200 || i % 50 == 0) keys.push_back(key);
  }
  std::atomic<bool> resharded{false};
  std::string reshard_output;
  std::thread reshard([&] {
    run_command(
        {"redis-cli", "--cluster", "reshard", "127.0.0.1:" + std::to_string(cluster.node(0).port()),
         "--cluster-from", cluster.node_id(from), "--cluster-to", cluster.node_id(to),
         "--cluster-slots", "200", "--cluster-yes", "--cluster-pipeline", "5"},
        &reshard_output, 300s);
    resharded = true;
  });
  long round = 0;
  std::string problem;
  while (problem.empty() && (!resharded || round < 3)) {
    ++round;
    for (const auto& key : keys) connection.append({"RPUSH", key, std::to_string(round)});
    for (const auto& key : keys) {
      auto reply = connection.read_reply();
      if (!reply) {
        problem = "round " + std::to_string(round) + " " + key + ": " + reply.error().message;
        break;
      }
      if ((*reply)->type != REDIS_REPLY_INTEGER || (*reply)->integer != round) {
        if (problem.empty()) {
          problem = "round " + std::to_string(round) + " " + key + ": " + describe(**reply);
        }
      }
    }
  }
  reshard.join();
  ASSERT_EQ(problem, "") << reshard_output;
  ASSERT_NE(reshard_output.find("Moving slot"), std::string::npos) << reshard_output;
  EXPECT_GT(round, 3) << "the reshard ended before the pushes overlapped it";
  EXPECT_GT(redirections(cluster, "MOVED"), 0);
  EXPECT_GT(redirections(cluster, "ASK"), 0);
  PlainClusterClient client(cluster);
  std::string expected;
  for (long r = 1; r <= round; ++r) expected += (r == 1 ? "" : ",") + std::to_string(r);
  for (const auto& key : keys) {
    ASSERT_EQ(client.run({"LRANGE", key, "0", "-1"}), "[" + expected + "]") << key;
  }
}

// A pipeline formatted ahead of the connection (as the sink builds it) is split and routed per
// command, its replies in order.
TEST(RedisClusterConnection, RoutesCommandsAppendedAsRespByTheirKeys) {
  RedisCluster cluster;
  auto settings = redis::parse_url(cluster.url());
  ASSERT_TRUE(settings);
  auto opened =
      redis::ClusterConnection::open(*settings, {{"127.0.0.1", cluster.node(0).port()}}, nullptr);
  ASSERT_TRUE(opened) << opened.error().message;
  std::string resp;
  for (int i = 0; i < 100; ++i) {
    const std::string key = "k:" + std::to_string(i), value = "v" + std::to_string(i);
    resp += "*3\r\n$3\r\nSET\r\n$" + std::to_string(key.size()) + "\r\n" + key + "\r\n$" +
            std::to_string(value.size()) + "\r\n" + value + "\r\n";
  }
  (*opened)->append_formatted(resp);
  for (int i = 0; i < 100; ++i) {
    auto reply = (*opened)->read_reply();
    ASSERT_TRUE(reply) << reply.error().message;
    ASSERT_EQ(describe(**reply), "OK") << i;
  }
  PlainClusterClient client(cluster);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(client.run({"GET", "k:" + std::to_string(i)}), "v" + std::to_string(i));
  }
  for (int n = 0; n < cluster.size(); ++n) EXPECT_GT(std::stol(cluster.node(n).cli({"DBSIZE"})), 0);
}

// A command appended while an earlier one of its slot awaits its redirection goes where the
// earlier one went, and so is redirected after it: "1,2,3", never "1,3,2".
TEST(RedisClusterConnection, ACommandAppendedDuringARedirectionStaysBehindIt) {
  RedisCluster cluster;
  auto settings = redis::parse_url(cluster.url());
  ASSERT_TRUE(settings);
  auto opened =
      redis::ClusterConnection::open(*settings, {{"127.0.0.1", cluster.node(0).port()}}, nullptr);
  ASSERT_TRUE(opened) << opened.error().message;
  auto& connection = **opened;
  const std::string key = "list:order";
  const int slot = redis::key_slot(key);
  const int from = cluster.owner_of(slot);
  const int to = (from + 1) % cluster.size();
  // The connection's map still names `from`: every command below is first answered MOVED.
  cluster.begin_slot_migration(slot, from, to);
  cluster.finish_slot_migration(slot, from, to);
  cluster.wait_until_healthy();
  connection.append({"RPUSH", key, "1"});
  connection.append({"RPUSH", key, "2"});
  auto first = connection.read_reply();
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(describe(**first), "1");
  connection.append({"RPUSH", key, "3"});
  auto second = connection.read_reply();
  auto third = connection.read_reply();
  ASSERT_TRUE(second && third);
  EXPECT_EQ(describe(**second), "2");
  EXPECT_EQ(describe(**third), "3");
  PlainClusterClient client(cluster);
  EXPECT_EQ(client.run({"LRANGE", key, "0", "-1"}), "[1,2,3]");
}

TEST(RedisClusterRestart, ANodeKilledAndRestartedMidStreamLosesNothing) {
  RedisClusterOptions options;
  options.node.persistent = true;  // the restarted node keeps its keys: they must still go
  RedisCluster cluster(options);
  PlainClusterClient client(cluster);
  constexpr std::uint64_t kChanges = 6000;
  for (std::uint64_t id = 0; id < kChanges; ++id)
    client.run({"SET", "user:" + std::to_string(id), "v"});
  Metrics metrics;
  auto sink = started_sink("url: " + cluster.url() +
                               "\ncluster: true\ntimeout: 2s\nkeys: {\"*\": \"user:{key.id}\"}\n"
                               "fence: {ttl: 10m}\n",
                           metrics);
  ASSERT_NE(sink, nullptr);
  std::atomic<std::uint64_t> written{0};
  auto writer = std::async(std::launch::async, [&] {
    std::string problem;
    for (std::uint64_t at = 0; at < kChanges; at += 100) {
      std::vector<Change> changes;
      for (std::uint64_t id = at; id < at + 100; ++id) changes.push_back(change_of(id + 1, id));
      auto report = write_and_wait(*sink, batch_of(changes));
      if (report.failure) return report.failure->message;
      if (!report.rejected.empty()) return report.rejected[0].reason;
      written = at + 100;
    }
    return problem;
  });
  ASSERT_TRUE(wait_until([&] { return written >= 1000; }, 60s));
  cluster.node(2).kill();
  // The writes for node 2's slots wait (healthy() false) while it is down...
  ASSERT_TRUE(wait_until([&] { return !sink->healthy(); }, 30s));
  const std::uint64_t while_down = written;
  cluster.node(2).start();
  EXPECT_EQ(writer.wait_for(120s), std::future_status::ready);
  EXPECT_EQ(writer.get(), "");
  EXPECT_LT(while_down, kChanges) << "the node was killed after the stream had ended";
  for (std::uint64_t id = 0; id < kChanges; ++id) {
    ASSERT_FALSE(client.exists("user:" + std::to_string(id))) << id;
  }
  EXPECT_GT(metric(metrics, "cdcd_sink_retries_total"), 0);
}

// The URL's node is gone for good; a new client starts from the masters the last one saw.
TEST(RedisClusterRestart, RediscoversThroughAnotherMasterWhenTheUrlsNodeIsDown) {
  RedisClusterOptions options;
  // The other masters keep serving their slots while node 0 is down.
  options.node.extra_args = {"--cluster-require-full-coverage", "no"};
  RedisCluster cluster(options);
  Metrics metrics;
  auto sink = started_sink(
      "url: " + cluster.url() + "\ncluster: true\ntimeout: 2s\nkeys: {\"*\": \"user:{key.id}\"}\n",
      metrics);
  ASSERT_NE(sink, nullptr);
  cluster.node(0).kill();
  // Node 1 restarts too: the sink's connection to it breaks, so it must discover the cluster anew.
  cluster.node(1).kill();
  cluster.node(1).start();
  PlainClusterClient client(cluster);
  ASSERT_TRUE(wait_until(
      [&] {
        return cluster.node(1).cli({"CLUSTER", "INFO"}).find("cluster_state:ok") !=
                   std::string::npos &&
               cluster.node(2).cli({"CLUSTER", "INFO"}).find("cluster_state:ok") !=
                   std::string::npos;
      },
      60s));
  std::vector<Change> changes;
  std::vector<std::string> keys;
  for (std::uint64_t id = 0; keys.size() < 50; ++id) {
    const std::string key = "user:" + std::to_string(id);
    if (cluster.owner_of(redis::key_slot(key)) == 0) continue;
    keys.push_back(key);
    changes.push_back(change_of(id + 1, id));
  }
  for (const auto& key : keys) {
    ASSERT_EQ(
        client.raw(cluster.node(cluster.owner_of(redis::key_slot(key))).port(), {"SET", key, "v"}),
        "OK");
  }
  auto done =
      std::async(std::launch::async, [&] { return write_and_wait(*sink, batch_of(changes)); });
  const bool acknowledged = done.wait_for(60s) == std::future_status::ready;
  if (!acknowledged) sink->stop();  // unblocks the write, so that the test ends
  ASSERT_TRUE(acknowledged) << "no new client could be opened";
  auto report = done.get();
  ASSERT_FALSE(report.failure) << report.failure->message;
  ASSERT_TRUE(report.rejected.empty()) << report.rejected[0].reason;
  for (const auto& key : keys) EXPECT_FALSE(client.exists(key)) << key;
}

TEST(RedisClusterTls, InvalidatesOverTlsWithAuthOnEveryNode) {
  RedisClusterOptions options;
  options.node.tls = true;  // the cluster bus too (tls-cluster yes)
  options.node.password = "cluster-pw";
  RedisCluster cluster(options);
  constexpr int kKeys = 30;
  for (int id = 0; id < kKeys; ++id) cluster.cli({"SET", "user:" + std::to_string(id), "v"});
  for (int n = 0; n < cluster.size(); ++n) {
    EXPECT_GT(std::stol(cluster.node(n).cli({"DBSIZE"})), 0) << "node " << n;
  }
  Metrics metrics;
  auto sink = started_sink("url: " + cluster.url() +
                               "\ncluster: true\ntls: {ca_file: " + cluster.node(0).ca_file() +
                               "}\nkeys: {\"*\": \"user:{key.id}\"}\nfence: {ttl: 1m}\n",
                           metrics);
  ASSERT_NE(sink, nullptr);
  std::vector<Change> changes;
  for (int id = 0; id < kKeys; ++id)
    changes.push_back(
        change_of(static_cast<std::uint64_t>(id) + 1, static_cast<std::uint64_t>(id)));
  auto report = write_and_wait(*sink, batch_of(changes));
  ASSERT_FALSE(report.failure) << report.failure->message;
  ASSERT_TRUE(report.rejected.empty()) << report.rejected[0].reason;
  for (int id = 0; id < kKeys; ++id) {
    EXPECT_EQ(cluster.cli({"EXISTS", "user:" + std::to_string(id)}), "0") << id;
  }
}

// The conformance suite needs one ordered stream: a cluster orders commands per slot only, so its
// harness puts every slot on node 0 (nodes 1 and 2 are masters without slots) and reads node 0's
// MONITOR. The sink still discovers the cluster, routes by slot and groups keys per slot.
class RedisClusterHarness : public SinkHarness {
 public:
  explicit RedisClusterHarness(std::string extra)
      : extra_(std::move(extra)),
        cluster_(RedisClusterOptions{.node = {}, .all_slots_on_first_node = true}),
        monitor_(cluster_.node(0).port()) {}

  std::unique_ptr<Sink> make_sink() override { return started_sink(options(), metrics_); }
  std::unique_ptr<Sink> make_blocked_sink() override {
    auto sink = started_sink(options(), metrics_);
    cluster_.node(0).pause();
    return sink;
  }
  // As with one server: a write() queues its commands and returns, its ack pending.
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
    return "url: " + cluster_.url() +
           "\ncluster: true\ntimeout: 2s\nkeys:\n  \"*\": [\"{entity}:{key.id}\"]\n" + extra_;
  }

  std::string extra_;
  RedisCluster cluster_;
  Monitor monitor_;
  Metrics metrics_;
};

CDCD_SINK_CONFORMANCE_SUITE(RedisCluster,
                            SinkConformanceCase{
                                "redis_cluster_unlink",
                                [] { return std::make_unique<RedisClusterHarness>(""); }},
                            SinkConformanceCase{"redis_cluster_fenced", [] {
                                                  return std::make_unique<RedisClusterHarness>(
                                                      "fence: {ttl: 10m}\n");
                                                }});

}  // namespace
}  // namespace cdcd::test
