#include "daemon/config/daemon_config.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>

#include "daemon/cli/commands.h"
#include "daemon/metrics/metrics.h"
#include "tests/support/test_util.h"

namespace cdcd {
namespace {

using std::chrono::milliseconds;

// Stand-ins for the real plugins, with the options the quickstart uses, so that these tests pin
// the runtime's config handling without depending on any plugin.
class FakeSource : public Source {
 public:
  FakeSource(std::string path, bool follow, SourceContext context, bool snapshot = false)
      : path(std::move(path)), follow(follow), context(std::move(context)), snapshot(snapshot) {}
  Status start(const StartPosition&) override { return ok(); }
  Result<PollOutcome> poll(Emitter&, Deadline) override { return PollOutcome::kEnd; }
  std::uint64_t bytes_behind(std::uint64_t, std::uint64_t) const override { return 0; }
  bool connected() const override { return true; }
  bool emits_reads() const override { return snapshot; }

  std::string path;
  bool follow;
  SourceContext context;
  bool snapshot;
};

class FakeSink : public Sink {
 public:
  FakeSink(std::string path, std::string format, SinkContext context)
      : path(std::move(path)), format(std::move(format)), context(std::move(context)) {}
  Status start() override { return ok(); }
  void write(BatchPtr, AckFn ack) override { ack({}); }
  Status flush(Deadline) override { return ok(); }
  void stop() override {}

  std::string path;
  std::string format;
  SinkContext context;
};

class FakeStore : public CheckpointStore {
 public:
  explicit FakeStore(std::string dir) : dir(std::move(dir)) {}
  Status start() override { return ok(); }
  Result<std::optional<Checkpoint>> load(const std::string&) override { return std::nullopt; }
  Status save(const std::string&, const Checkpoint&) override { return ok(); }
  Status remove(const std::string&) override { return ok(); }

  std::string dir;
};

// Follows the factory contract: read everything, check unknown keys, nullptr after any error.
template <typename Make>
auto checked(config::Node& options, Make make) -> decltype(make()) {
  std::size_t before = options.diagnostics().items().size();
  auto instance = make();
  options.check_unknown_keys();
  if (options.diagnostics().items().size() != before) return nullptr;
  return instance;
}

const std::vector<std::string> kFormats = {"native", "debezium", "mongodb"};

PluginRegistry fake_registry() {
  PluginRegistry registry;
  registry.add_source("jsonl", [](config::Node& options, const SourceContext& context) {
    return checked(options, [&]() -> std::unique_ptr<Source> {
      auto path = options.string("path", true);
      auto follow = options.boolean("follow");
      return std::make_unique<FakeSource>(path.value_or(""), follow.value_or(false), context);
    });
  });
  // Stands for a database source: `snapshot: initial` makes it emit read changes.
  registry.add_source("postgres", [](config::Node& options, const SourceContext& context) {
    return checked(options, [&]() -> std::unique_ptr<Source> {
      auto dsn = options.string("dsn", true);
      auto snapshot = options.one_of("snapshot", {"never", "initial"});
      return std::make_unique<FakeSource>(dsn.value_or(""), false, context, snapshot == "initial");
    });
  });
  registry.add_sink("stdout", [](config::Node& options, const SinkContext& context) {
    return checked(options, [&]() -> std::unique_ptr<Sink> {
      auto format = options.one_of("format", kFormats);
      return std::make_unique<FakeSink>("", format.value_or("native"), context);
    });
  });
  registry.add_sink("file", [](config::Node& options, const SinkContext& context) {
    return checked(options, [&]() -> std::unique_ptr<Sink> {
      auto path = options.string("path", true);
      auto format = options.one_of("format", kFormats);
      options.one_of("fsync", {"always", "interval", "never"});
      return std::make_unique<FakeSink>(path.value_or(""), format.value_or("native"), context);
    });
  });
  registry.add_checkpoint_store("file", [](config::Node& options, const CheckpointStoreContext&) {
    return checked(options, [&]() -> std::unique_ptr<CheckpointStore> {
      return std::make_unique<FakeStore>(options.string("dir", true).value_or(""));
    });
  });
  // A URL scheme whose options the store then reads (and may refuse) like any others.
  registry.add_checkpoint_store_scheme("file", "file", [](const std::string& url) {
    YAML::Node options;
    options["dir"] = url.substr(std::string("file://").size());
    return Result<YAML::Node>(options);
  });
  return registry;
}

config::EnvLookup env_of(std::map<std::string, std::string> variables) {
  return [variables = std::move(variables)](const std::string& name) -> std::optional<std::string> {
    auto it = variables.find(name);
    if (it == variables.end()) return std::nullopt;
    return it->second;
  };
}

// Loggers that go nowhere, remembering which names were asked for.
struct QuietLoggers {
  PluginEnvironment environment(Metrics* metrics = nullptr) {
    PluginEnvironment plugins;
    plugins.metrics = metrics;
    plugins.logger = [this](const std::string& name) {
      names.push_back(name);
      return std::make_shared<spdlog::logger>(name,
                                              std::make_shared<spdlog::sinks::null_sink_mt>());
    };
    return plugins;
  }
  std::vector<std::string> names;
};

const char* const kQuickstart = R"(sources:
  demo: {type: jsonl, path: configs/sample-changelog.jsonl, follow: true}
sinks:
  console: {type: stdout, format: native}
  archive: {type: file, path: ./out/changes.jsonl, format: debezium}
checkpoints: {type: file, dir: ./.cdcd/checkpoints, interval: 1s}
consumers:
  everything:
    source: demo
    sinks: [console, archive]
    entities: ["*"]
    operations: [insert, update, delete, truncate]
    start: checkpoint
    batch: {max_events: 500, max_wait: 100ms}
    on_error: stop
metrics: {listen: 127.0.0.1:9187}
log: {level: info, format: text}
)";

TEST(DaemonConfig, ParsesTheQuickstartShape) {
  PluginRegistry registry = fake_registry();
  QuietLoggers loggers;
  Metrics metrics;
  config::Diagnostics diagnostics;
  auto config = parse_config(kQuickstart, "quickstart.yaml", registry,
                             loggers.environment(&metrics), diagnostics, env_of({}));
  ASSERT_TRUE(config.has_value()) << diagnostics.to_string();
  EXPECT_EQ(diagnostics.to_string(), "");
  EXPECT_EQ(config->file, "quickstart.yaml");

  ASSERT_EQ(config->sources.size(), 1u);
  EXPECT_EQ(config->sources[0].name, "demo");
  EXPECT_EQ(config->sources[0].type, "jsonl");
  auto* source = dynamic_cast<FakeSource*>(config->sources[0].source.get());
  ASSERT_NE(source, nullptr);
  EXPECT_EQ(source->path, "configs/sample-changelog.jsonl");
  EXPECT_TRUE(source->follow);
  EXPECT_EQ(source->context.name, "demo");
  EXPECT_EQ(source->context.registry, metrics.registry());
  EXPECT_NE(source->context.metrics.read_lsn, nullptr);
  EXPECT_NE(source->context.metrics.lsn_gaps, nullptr);

  ASSERT_EQ(config->sinks.size(), 2u);
  EXPECT_EQ(config->sinks[0].name, "console");
  EXPECT_EQ(config->sinks[0].type, "stdout");
  EXPECT_EQ(config->sinks[1].name, "archive");
  EXPECT_EQ(config->sinks[1].type, "file");
  auto* archive = dynamic_cast<FakeSink*>(config->sinks[1].sink.get());
  ASSERT_NE(archive, nullptr);
  EXPECT_EQ(archive->path, "./out/changes.jsonl");
  EXPECT_EQ(archive->format, "debezium");
  EXPECT_EQ(archive->context.name, "archive");
  EXPECT_NE(archive->context.metrics.errors, nullptr);

  ASSERT_EQ(config->checkpoint_stores.size(), 1u);
  EXPECT_EQ(config->checkpoint_stores[0].name, "checkpoints");
  EXPECT_EQ(config->checkpoint_stores[0].type, "file");
  EXPECT_EQ(config->checkpoint_stores[0].interval, milliseconds(1000));
  auto* store = dynamic_cast<FakeStore*>(config->checkpoint_stores[0].store.get());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->dir, "./.cdcd/checkpoints");

  ASSERT_EQ(config->consumers.size(), 1u);
  const ConsumerConfig& consumer = config->consumers[0];
  EXPECT_EQ(consumer.name, "everything");
  EXPECT_EQ(consumer.source, "demo");
  EXPECT_EQ(consumer.sinks, (std::vector<std::string>{"console", "archive"}));
  EXPECT_EQ(consumer.entities, (std::vector<std::string>{"*"}));
  EXPECT_TRUE(consumer.exclude_entities.empty());
  EXPECT_EQ(consumer.operations,
            (std::vector<Operation>{Operation::kInsert, Operation::kUpdate, Operation::kDelete,
                                    Operation::kTruncate}));
  EXPECT_EQ(consumer.start.kind, StartConfig::Kind::kCheckpoint);
  EXPECT_EQ(consumer.batch.max_events, 500u);
  EXPECT_EQ(consumer.batch.max_wait, milliseconds(100));
  EXPECT_EQ(consumer.batch.max_bytes, 1u << 20);
  EXPECT_EQ(consumer.batch.max_in_flight, 16u);
  EXPECT_TRUE(consumer.batch.send_when_caught_up);
  EXPECT_EQ(consumer.on_error, OnError::kStop);
  EXPECT_EQ(consumer.dead_letter_sink, "");
  EXPECT_EQ(consumer.max_queue_bytes, 16u << 20);

  EXPECT_EQ(config->metrics.listen, "127.0.0.1:9187");
  EXPECT_EQ(config->log.level, "info");
  EXPECT_EQ(config->log.format, "text");
  EXPECT_EQ(config->shutdown_timeout, milliseconds(30000));
  EXPECT_EQ(loggers.names, (std::vector<std::string>{"source.demo", "sink.console", "sink.archive",
                                                     "checkpoints"}));
}

// The forms docs/metrics.md promises: all interfaces as a bare ":PORT", a host name, and port 0
// (the kernel picks a free port; tests read it from the log).
TEST(DaemonConfig, AcceptsEveryDocumentedMetricsListenForm) {
  PluginRegistry registry = fake_registry();
  for (const std::string listen :
       {"127.0.0.1:9187", ":9187", "0.0.0.0:9187", "localhost:9187", "127.0.0.1:0", ":0"}) {
    std::string text = kQuickstart;
    text.replace(text.find("127.0.0.1:9187"), std::string("127.0.0.1:9187").size(),
                 "\"" + listen + "\"");
    QuietLoggers loggers;
    config::Diagnostics diagnostics;
    auto config =
        parse_config(text, "t.yaml", registry, loggers.environment(), diagnostics, env_of({}));
    ASSERT_TRUE(config.has_value()) << listen << ": " << diagnostics.to_string();
    EXPECT_EQ(config->metrics.listen, listen);
  }
}

TEST(DaemonConfig, RefusesMetricsListenFormsTheServerCannotBind) {
  PluginRegistry registry = fake_registry();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"9187", "expected HOST:PORT or :PORT such as 127.0.0.1:9187, got \"9187\""},
      {"127.0.0.1:", "expected HOST:PORT or :PORT such as 127.0.0.1:9187, got \"127.0.0.1:\""},
      {"127.0.0.1:65536", "port 65536 is out of range 0-65535"},
      {"127.0.0.1:http",
       "expected HOST:PORT or :PORT such as 127.0.0.1:9187, got \"127.0.0.1:http\""},
      {"[::1]:9187",
       "IPv6 addresses are not supported (the HTTP server is built without IPv6), got "
       "\"[::1]:9187\""},
  };
  for (const auto& [listen, message] : cases) {
    const std::string text =
        "sources: {demo: {type: jsonl, path: p}}\n"
        "sinks: {console: {type: stdout}}\n"
        "checkpoints: {type: file, dir: d}\n"
        "consumers: {c: {source: demo, sinks: [console]}}\n"
        "metrics: {listen: \"" +
        listen + "\"}\n";
    QuietLoggers loggers;
    config::Diagnostics diagnostics;
    EXPECT_FALSE(
        parse_config(text, "t.yaml", registry, loggers.environment(), diagnostics, env_of({})));
    EXPECT_EQ(diagnostics.to_string(), "t.yaml:5:19: error: metrics.listen: " + message + "\n")
        << listen;
  }
}

TEST(DaemonConfig, ReadsEveryConsumerOptionAndInterpolates) {
  const char* text = R"(sources:
  demo: {type: jsonl, path: "${LOG_DIR:-/var/log}/changes.jsonl"}
sinks:
  main: {type: file, path: "${OUT}/main.jsonl"}
  dlq: {type: file, path: "${OUT}/dead.jsonl"}
checkpoints: {type: file, dir: "${OUT}/checkpoints", interval: 250ms}
consumers:
  orders:
    source: demo
    sinks: [main]
    entities: ["public.order*", "public.customers"]
    exclude_entities: ["public.order_audit"]
    operations: [insert, read, insert]
    start: {timestamp: "2025-11-21T12:00:00.123456+02:00"}
    batch: {max_events: 1000000, max_bytes: 4MiB, max_wait: 1.5s, max_in_flight: 1024,
            send_when_caught_up: false}
    on_error: dead_letter
    dead_letter_sink: dlq
    max_queue_bytes: 64KiB
  replay:
    source: demo
    sinks: [dlq]
    start: {lsn: 1042}
  fresh:
    source: demo
    sinks: [main]
    start: beginning
log: {level: debug, format: json}
shutdown_timeout: 2m
)";
  PluginRegistry registry = fake_registry();
  QuietLoggers loggers;
  config::Diagnostics diagnostics;
  auto config = parse_config(text, "full.yaml", registry, loggers.environment(), diagnostics,
                             env_of({{"OUT", "/tmp/out"}}));
  ASSERT_TRUE(config.has_value()) << diagnostics.to_string();

  auto* source = dynamic_cast<FakeSource*>(config->sources[0].source.get());
  ASSERT_NE(source, nullptr);
  EXPECT_EQ(source->path, "/var/log/changes.jsonl");
  EXPECT_EQ(source->context.registry, nullptr);  // no Metrics given: plugins get none
  EXPECT_EQ(dynamic_cast<FakeStore*>(config->checkpoint_stores[0].store.get())->dir,
            "/tmp/out/checkpoints");
  EXPECT_EQ(config->checkpoint_stores[0].interval, milliseconds(250));

  ASSERT_EQ(config->consumers.size(), 3u);
  const ConsumerConfig& orders = config->consumers[0];
  EXPECT_EQ(orders.entities, (std::vector<std::string>{"public.order*", "public.customers"}));
  EXPECT_EQ(orders.exclude_entities, (std::vector<std::string>{"public.order_audit"}));
  EXPECT_EQ(orders.operations, (std::vector<Operation>{Operation::kInsert, Operation::kRead}));
  EXPECT_EQ(orders.start.kind, StartConfig::Kind::kTimestamp);
  EXPECT_EQ(orders.start.timestamp_us, 1763719200123456);  // 10:00:00.123456Z
  EXPECT_EQ(orders.batch.max_events, 1'000'000u);
  EXPECT_EQ(orders.batch.max_bytes, 4u << 20);
  EXPECT_EQ(orders.batch.max_wait, milliseconds(1500));
  EXPECT_EQ(orders.batch.max_in_flight, 1024u);
  EXPECT_FALSE(orders.batch.send_when_caught_up);
  EXPECT_EQ(orders.on_error, OnError::kDeadLetter);
  EXPECT_EQ(orders.dead_letter_sink, "dlq");
  EXPECT_EQ(orders.max_queue_bytes, 64u << 10);

  EXPECT_EQ(config->consumers[1].start.kind, StartConfig::Kind::kLsn);
  EXPECT_EQ(config->consumers[1].start.lsn, 1042u);
  EXPECT_TRUE(config->consumers[1].operations.empty());  // all operations
  EXPECT_EQ(config->consumers[2].start.kind, StartConfig::Kind::kBeginning);
  EXPECT_EQ(config->metrics.listen, "");
  EXPECT_EQ(config->log.level, "debug");
  EXPECT_EQ(config->log.format, "json");
  EXPECT_EQ(config->shutdown_timeout, milliseconds(120'000));
}

// Start timestamps: RFC 3339 with fractions, Z or offsets, checked against known epoch values.
TEST(DaemonConfig, ParsesRfc3339StartTimestamps) {
  const std::vector<std::pair<std::string, std::int64_t>> cases = {
      {"1970-01-01T00:00:00Z", 0},
      {"2025-11-21T10:00:00Z", 1763719200000000},
      {"2025-11-21t10:00:00.5z", 1763719200500000},
      {"2025-11-21T10:00:00.1234569Z", 1763719200123456},
      {"2024-02-29T18:29:59.999999-05:30", 1709251199999999},
      {"1969-12-31T23:59:59Z", -1000000},
  };
  PluginRegistry registry = fake_registry();
  QuietLoggers loggers;
  for (const auto& [timestamp, expected] : cases) {
    std::string text =
        "sources: {demo: {type: jsonl, path: x}}\nsinks: {out: {type: stdout}}\n"
        "checkpoints: {type: file, dir: d}\n"
        "consumers: {c: {source: demo, sinks: [out], start: {timestamp: \"" +
        timestamp + "\"}}}\n";
    config::Diagnostics diagnostics;
    auto config = parse_config(text, "t.yaml", registry, loggers.environment(), diagnostics);
    ASSERT_TRUE(config.has_value()) << timestamp << "\n" << diagnostics.to_string();
    EXPECT_EQ(config->consumers[0].start.timestamp_us, expected) << timestamp;
  }
}

TEST(DaemonConfig, DefaultEnvironmentIsTheProcessEnvironment) {
  ASSERT_EQ(setenv("CDCD_CONFIG_TEST_PATH", "/from/env.jsonl", 1), 0);
  const char* text =
      "sources: {demo: {type: jsonl, path: \"${CDCD_CONFIG_TEST_PATH}\"}}\n"
      "sinks: {out: {type: stdout}}\ncheckpoints: {type: file, dir: d}\n"
      "consumers: {c: {source: demo, sinks: [out]}}\n";
  PluginRegistry registry = fake_registry();
  QuietLoggers loggers;
  config::Diagnostics diagnostics;
  auto config = parse_config(text, "t.yaml", registry, loggers.environment(), diagnostics);
  unsetenv("CDCD_CONFIG_TEST_PATH");
  ASSERT_TRUE(config.has_value()) << diagnostics.to_string();
  EXPECT_EQ(dynamic_cast<FakeSource*>(config->sources[0].source.get())->path, "/from/env.jsonl");
}

TEST(DaemonConfig, LoadConfigReadsTheFileAndNamesItInDiagnostics) {
  test::TempDir dir;
  PluginRegistry registry = fake_registry();
  QuietLoggers loggers;
  test::write_file(dir.file("good.yaml"), kQuickstart);
  config::Diagnostics diagnostics;
  auto config = load_config(dir.file("good.yaml"), registry, loggers.environment(), diagnostics);
  ASSERT_TRUE(config.has_value()) << diagnostics.to_string();
  EXPECT_EQ(config->file, dir.file("good.yaml"));

  test::write_file(dir.file("bad.yaml"), "sources: {}\n");
  config::Diagnostics bad;
  EXPECT_FALSE(load_config(dir.file("bad.yaml"), registry, loggers.environment(), bad));
  EXPECT_EQ(bad.items().front().where.file, dir.file("bad.yaml"));
}

// The file as a whole is the problem: no made-up position such as 1:1.
TEST(DaemonConfig, UnreadableFileIsOneDiagnosticWithoutAPosition) {
  test::TempDir dir;
  PluginRegistry registry = fake_registry();
  QuietLoggers loggers;
  config::Diagnostics missing;
  EXPECT_FALSE(load_config(dir.file("nope.yaml"), registry, loggers.environment(), missing));
  EXPECT_EQ(missing.to_string(),
            "error: cannot read " + dir.file("nope.yaml") + ": No such file or directory\n");
  config::Diagnostics directory;
  EXPECT_FALSE(load_config(dir.path(), registry, loggers.environment(), directory));
  EXPECT_EQ(directory.to_string(), "error: cannot read " + dir.path() + ": Is a directory\n");
  config::Diagnostics empty_path;
  EXPECT_FALSE(load_config("", registry, loggers.environment(), empty_path));
  EXPECT_EQ(empty_path.to_string(), "error: no config file given (the path is empty)\n");
}

// yaml-cpp's own words for a tab in indentation are "illegal map value" or "end of map not found".
TEST(DaemonConfig, TabInIndentationIsNamed) {
  PluginRegistry registry = fake_registry();
  QuietLoggers loggers;
  for (const std::string text :
       {"sources:\n\tdemo:\n    type: jsonl\n", "sources:\n  demo:\n\ttype: jsonl\n",
        "sources:\n  demo:\n  \t  type: jsonl\n"}) {
    config::Diagnostics diagnostics;
    EXPECT_FALSE(parse_config(text, "t.yaml", registry, loggers.environment(), diagnostics));
    int line = text.find("\tdemo") != std::string::npos ? 2 : 3;
    int column = static_cast<int>(text.find('\t') - text.rfind('\n', text.find('\t')));
    EXPECT_EQ(diagnostics.to_string(),
              "t.yaml:" + std::to_string(line) + ":" + std::to_string(column) +
                  ": error: invalid YAML: a tab in indentation (YAML indents with spaces only)\n")
        << text;
  }
}

// A start lsn copied from PostgreSQL (pg_current_wal_lsn(), the postgres source's messages) is in
// its X/Y form; a malformed one names where it is and what was expected.
TEST(DaemonConfig, StartLsnInPostgresForm) {
  PluginRegistry registry = fake_registry();
  QuietLoggers loggers;
  auto config_with = [](const std::string& lsn) {
    return "sources: {log: {type: jsonl, path: l}}\n"
           "sinks: {out: {type: stdout}}\n"
           "checkpoints: {type: file, dir: d}\n"
           "consumers:\n"
           "  c: {source: log, sinks: [out], start: {lsn: " +
           lsn + "}}\n";
  };
  config::Diagnostics diagnostics;
  auto config = parse_config(config_with("\"0/16B3748\""), "t.yaml", registry,
                             loggers.environment(), diagnostics);
  ASSERT_TRUE(config.has_value()) << diagnostics.to_string();
  EXPECT_EQ(config->consumers[0].start.kind, StartConfig::Kind::kLsn);
  EXPECT_EQ(config->consumers[0].start.lsn, 23803720u);

  config::Diagnostics bad;
  EXPECT_FALSE(parse_config(config_with("1/XYZ"), "t.yaml", registry, loggers.environment(), bad));
  EXPECT_EQ(bad.to_string(),
            "t.yaml:5:47: error: consumers.c.start.lsn: expected an lsn: a number, or "
            "PostgreSQL's X/Y form such as 0/16B3748, got \"1/XYZ\"\n");
}

// Tabs elsewhere (inside a value, after the indentation) are not blamed for other YAML errors.
TEST(DaemonConfig, TabOutsideIndentationKeepsYamlCppsMessage) {
  PluginRegistry registry = fake_registry();
  QuietLoggers loggers;
  config::Diagnostics diagnostics;
  EXPECT_FALSE(parse_config("sources:\n  demo: {type:\tjsonl\n", "t.yaml", registry,
                            loggers.environment(), diagnostics));
  EXPECT_EQ(diagnostics.items().size(), 1u);
  EXPECT_EQ(diagnostics.to_string().find("tab"), std::string::npos) << diagnostics.to_string();
}

// yaml-cpp 0.7's LoadAll() loops forever, allocating, on a document starting with a stray ","
// (found by fuzz_config): before the fix this test hung until ctest's timeout.
TEST(DaemonConfig, DocumentStartingWithACommaIsAnErrorNotAHang) {
  PluginRegistry registry = fake_registry();
  QuietLoggers loggers;
  for (const std::string text : {",\n", "sources: {}\n---\n, x\n"}) {
    config::Diagnostics diagnostics;
    EXPECT_FALSE(parse_config(text, "c.yaml", registry, loggers.environment(), diagnostics));
    int line = text[0] == ',' ? 1 : 3;
    EXPECT_EQ(diagnostics.to_string(),
              "c.yaml:" + std::to_string(line) + ":1: error: invalid YAML: unexpected \",\"\n");
  }
}

constexpr const char* kSnapshotConfig =
    "sources:\n"
    "  db: {type: postgres, dsn: x, snapshot: initial}\n"
    "  log: {type: jsonl, path: l}\n"
    "sinks: {out: {type: stdout}}\n"
    "checkpoints: {type: file, dir: d}\n"
    "consumers:\n"
    "  changes_only: {source: db, sinks: [out], operations: [insert, update, delete]}\n"
    "  with_reads: {source: db, sinks: [out], operations: [insert, read]}\n"
    "  every_operation: {source: db, sinks: [out]}\n"
    "  no_snapshot: {source: log, sinks: [out], operations: [insert]}\n";

// A warning leaves the config valid: parse_config() returns it, the diagnostics hold the warning.
TEST(DaemonConfig, WarnsWhenAConsumerFiltersOutTheSnapshotsReads) {
  PluginRegistry registry = fake_registry();
  QuietLoggers loggers;
  config::Diagnostics diagnostics;
  auto config = parse_config(kSnapshotConfig, "s.yaml", registry, loggers.environment(),
                             diagnostics, env_of({}));
  ASSERT_TRUE(config.has_value()) << diagnostics.to_string();
  EXPECT_EQ(diagnostics.errors(), 0u);
  EXPECT_EQ(diagnostics.to_string(),
            "s.yaml:7:56: warning: consumers.changes_only.operations: source \"db\" takes an "
            "initial snapshot, whose rows arrive as read changes; this list leaves out read, so "
            "they never reach the sinks (add read to deliver them)\n");
}

TEST(DaemonConfig, ValidatePrintsWarningsAndStillSucceeds) {
  test::TempDir dir;
  test::write_file(dir.file("s.yaml"), kSnapshotConfig);
  PluginRegistry registry = fake_registry();
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  int code = command_validate(dir.file("s.yaml"), registry);
  std::string out = testing::internal::GetCapturedStdout();
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, 0) << err;
  EXPECT_EQ(out, "ok\n");
  EXPECT_NE(err.find("s.yaml:7:56: warning: consumers.changes_only.operations: "),
            std::string::npos)
      << err;
}

TEST(DaemonConfig, PluginFailingWithoutADiagnosticIsStillReported) {
  PluginRegistry registry = fake_registry();
  registry.add_sink(
      "silent", [](config::Node&, const SinkContext&) -> std::unique_ptr<Sink> { return nullptr; });
  registry.add_sink("throwing", [](config::Node&, const SinkContext&) -> std::unique_ptr<Sink> {
    throw std::runtime_error("boom");
  });
  const char* text =
      "sources: {demo: {type: jsonl, path: x}}\n"
      "sinks: {a: {type: silent}, b: {type: throwing}}\ncheckpoints: {type: file, dir: d}\n"
      "consumers: {c: {source: demo, sinks: [a, b]}}\n";
  QuietLoggers loggers;
  config::Diagnostics diagnostics;
  EXPECT_FALSE(parse_config(text, "t.yaml", registry, loggers.environment(), diagnostics));
  EXPECT_EQ(diagnostics.to_string(),
            "t.yaml:2:12: error: sinks.a: the silent sink plugin rejected its options\n"
            "t.yaml:2:31: error: sinks.b: the throwing sink plugin failed: boom\n");
}

// ---- Golden cases: tests/golden/config/NAME.yaml holds an invalid config (or a valid one with
// warnings), NAME.expected the exact diagnostics. CDCD_UPDATE_GOLDEN=1 rewrites the .expected files
// (review them by eye).

std::string golden_dir() { return test::source_dir() + "/tests/golden/config"; }

std::vector<std::string> golden_cases() {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(golden_dir(), error)) {
    if (entry.path().extension() == ".yaml") names.push_back(entry.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// A line diff (longest common subsequence): "-" expected only, "+" actual only.
std::string line_diff(const std::string& expected, const std::string& actual) {
  auto a = split_lines(expected);
  auto b = split_lines(actual);
  std::vector<std::vector<std::size_t>> lcs(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = a.size(); i-- > 0;) {
    for (std::size_t j = b.size(); j-- > 0;) {
      lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  std::string out;
  std::size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (i < a.size() && j < b.size() && a[i] == b[j]) {
      out += "  " + a[i++] + "\n";
      ++j;
    } else if (i < a.size() && (j == b.size() || lcs[i + 1][j] >= lcs[i][j + 1])) {
      out += "- " + a[i++] + "\n";
    } else {
      out += "+ " + b[j++] + "\n";
    }
  }
  return out;
}

class GoldenConfig : public testing::TestWithParam<std::string> {};

TEST_P(GoldenConfig, ReportsExactlyTheExpectedDiagnostics) {
  const std::string name = GetParam();
  const std::string expected_path = golden_dir() + "/" + name + ".expected";
  std::string text = test::read_file(golden_dir() + "/" + name + ".yaml");
  PluginRegistry registry = fake_registry();
  QuietLoggers loggers;
  config::Diagnostics diagnostics;
  auto config = parse_config(text, name + ".yaml", registry, loggers.environment(), diagnostics,
                             env_of({{"DATA_DIR", "/srv/data"}}));
  // A case whose diagnostics are all warnings holds a valid config.
  EXPECT_EQ(config.has_value(), diagnostics.errors() == 0)
      << "accepted with errors, or rejected without one";
  std::string actual = diagnostics.to_string();

  const char* update = std::getenv("CDCD_UPDATE_GOLDEN");
  if (update && std::string(update) == "1") {
    test::write_file(expected_path, actual);
    GTEST_SKIP() << "rewrote " << expected_path;
  }
  ASSERT_TRUE(std::filesystem::exists(expected_path))
      << expected_path << " is missing; actual diagnostics:\n"
      << actual;
  std::string expected = test::read_file(expected_path);
  EXPECT_TRUE(expected == actual)
      << "diagnostics differ from " << expected_path << " (- expected, + actual):\n"
      << line_diff(expected, actual)
      << "(rerun with CDCD_UPDATE_GOLDEN=1 to accept the actual output)";
}

INSTANTIATE_TEST_SUITE_P(DaemonConfig, GoldenConfig, testing::ValuesIn(golden_cases()),
                         [](const testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST(DaemonConfigGoldenSet, HasAtLeastTwentyCases) {
  EXPECT_GE(golden_cases().size(), 20u) << "golden cases found in " << golden_dir();
}

// Issue 11: a consumer names its own checkpoint store, by URL or as a map; consumers naming the
// same URL share one store; the top-level store is then optional.
TEST(DaemonConfig, ConsumersNameTheirOwnCheckpointStores) {
  PluginRegistry registry = fake_registry();
  const std::string text =
      "sources: {demo: {type: jsonl, path: p}}\n"
      "sinks: {console: {type: stdout}}\n"
      "checkpoints: {type: file, dir: top, interval: 250ms}\n"
      "consumers:\n"
      "  a: {source: demo, sinks: [console]}\n"
      "  b: {source: demo, sinks: [console], checkpoints: \"file://${DIR}/b\"}\n"
      "  c: {source: demo, sinks: [console], checkpoints: \"file://${DIR}/b\"}\n"
      "  d: {source: demo, sinks: [console], checkpoints: {type: file, dir: own, interval: 2s}}\n";
  QuietLoggers loggers;
  config::Diagnostics diagnostics;
  auto config = parse_config(text, "stores.yaml", registry, loggers.environment(), diagnostics,
                             env_of({{"DIR", "/srv"}}));
  ASSERT_TRUE(config.has_value()) << diagnostics.to_string();
  ASSERT_EQ(config->checkpoint_stores.size(), 3u);
  auto dir_of = [&](const std::string& consumer) {
    for (const auto& c : config->consumers) {
      if (c.name == consumer) {
        return dynamic_cast<FakeStore*>(checkpoint_store_of(*config, c).store.get())->dir;
      }
    }
    return std::string("?");
  };
  EXPECT_EQ(dir_of("a"), "top");
  EXPECT_EQ(dir_of("b"), "/srv/b");
  EXPECT_EQ(dir_of("d"), "own");
  EXPECT_EQ(config->consumers[1].checkpoint_store, config->consumers[2].checkpoint_store)
      << "b and c name the same URL: one store";
  EXPECT_EQ(config->checkpoint_stores[1].name, "consumers.b.checkpoints");
  EXPECT_EQ(config->checkpoint_stores[1].interval, milliseconds(250)) << "the top level's";
  EXPECT_EQ(config->checkpoint_stores[2].interval, milliseconds(2000));

  // Without a top-level store, every consumer names its own.
  const std::string own_only =
      "sources: {demo: {type: jsonl, path: p}}\n"
      "sinks: {console: {type: stdout}}\n"
      "consumers:\n"
      "  a: {source: demo, sinks: [console], checkpoints: \"file:///a\"}\n";
  config::Diagnostics own_diagnostics;
  EXPECT_TRUE(parse_config(own_only, "own.yaml", registry, loggers.environment(), own_diagnostics)
                  .has_value())
      << own_diagnostics.to_string();
}

TEST(DaemonConfig, ConsumerCheckpointStoreErrorsNameFileLineAndColumn) {
  PluginRegistry registry = fake_registry();
  const std::string text =
      "sources: {demo: {type: jsonl, path: p}}\n"
      "sinks: {console: {type: stdout}}\n"
      "consumers:\n"
      "  a: {source: demo, sinks: [console]}\n"
      "  b: {source: demo, sinks: [console], checkpoints: \"s3://bucket/x\"}\n"
      "  c:\n"
      "    source: demo\n"
      "    sinks: [console]\n"
      "    checkpoints: {type: file}\n";
  QuietLoggers loggers;
  config::Diagnostics diagnostics;
  EXPECT_FALSE(parse_config(text, "bad.yaml", registry, loggers.environment(), diagnostics));
  const std::string report = diagnostics.to_string();
  EXPECT_THAT(report,
              ::testing::HasSubstr("bad.yaml:4:6: error: consumers.a: consumer a has no checkpoint "
                                   "store: set `checkpoints` at the top level"));
  EXPECT_THAT(report,
              ::testing::HasSubstr("bad.yaml:5:52: error: consumers.b.checkpoints: expected a "
                                   "checkpoint store URL (file://) or a map with `type`, got "
                                   "\"s3://bucket/x\""));
  EXPECT_THAT(report, ::testing::HasSubstr(
                          "bad.yaml:9:18: error: consumers.c.checkpoints: missing required "
                          "key \"dir\""));
}

TEST(DaemonConfig, OptionsAUrlStandsForAreReportedAtTheUrl) {
  PluginRegistry registry = fake_registry();
  const std::string text =
      "sources: {demo: {type: jsonl, path: p}}\n"
      "sinks: {console: {type: stdout}}\n"
      "consumers:\n"
      "  a: {source: demo, sinks: [console], checkpoints: \"file://${MISSING}\"}\n";
  QuietLoggers loggers;
  config::Diagnostics diagnostics;
  EXPECT_FALSE(
      parse_config(text, "url.yaml", registry, loggers.environment(), diagnostics, env_of({})));
  EXPECT_THAT(diagnostics.to_string(),
              ::testing::HasSubstr("url.yaml:4:52: error: consumers.a.checkpoints"))
      << diagnostics.to_string();
}

}  // namespace
}  // namespace cdcd
