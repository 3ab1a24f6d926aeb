#include "daemon/config/node.h"

#include <gtest/gtest.h>

namespace cdcd::config {
namespace {

using std::chrono::milliseconds;

EnvLookup env_of(std::map<std::string, std::string> variables) {
  return [variables = std::move(variables)](const std::string& name) -> std::optional<std::string> {
    auto it = variables.find(name);
    if (it == variables.end()) return std::nullopt;
    return it->second;
  };
}

// Parses YAML text into a root Node whose diagnostics name the file "test.yaml".
class ConfigNode : public testing::Test {
 protected:
  Node parse(const std::string& text, std::map<std::string, std::string> env = {}) {
    auto context =
        std::make_shared<ParseContext>(ParseContext{"test.yaml", &diagnostics_, env_of(env)});
    return Node(YAML::Load(text), "", context);
  }

  std::string errors() const { return diagnostics_.to_string(); }

  Diagnostics diagnostics_;
};

TEST(ConfigParseDuration, AcceptsIntegersAndFractionsWithUnits) {
  EXPECT_EQ(parse_duration("250ms"), milliseconds(250));
  EXPECT_EQ(parse_duration("5s"), milliseconds(5000));
  EXPECT_EQ(parse_duration("1m"), milliseconds(60'000));
  EXPECT_EQ(parse_duration("2h"), milliseconds(7'200'000));
  EXPECT_EQ(parse_duration("1.5s"), milliseconds(1500));
  EXPECT_EQ(parse_duration("0.25m"), milliseconds(15'000));
  EXPECT_EQ(parse_duration("0s"), milliseconds(0));
}

TEST(ConfigParseDuration, RejectsMissingUnitsSpacesSignsAndSubMilliseconds) {
  for (const char* text :
       {"5", "5 seconds", "5 s", "5S", "-1s", "+1s", "1.5", "s", "", "1.s", ".5s", "0.5ms", "1d",
        "1h30m", "99999999999999999999h", "9999999999999999h"}) {
    EXPECT_EQ(parse_duration(text), std::nullopt) << text;
  }
}

TEST(ConfigParseSize, AcceptsBareBytesAndBinaryAndDecimalUnits) {
  EXPECT_EQ(parse_size("512"), 512u);
  EXPECT_EQ(parse_size("0"), 0u);
  EXPECT_EQ(parse_size("10B"), 10u);
  EXPECT_EQ(parse_size("64KiB"), 65536u);
  EXPECT_EQ(parse_size("16MiB"), 16u << 20);
  EXPECT_EQ(parse_size("1GiB"), 1u << 30);
  EXPECT_EQ(parse_size("1KB"), 1000u);
  EXPECT_EQ(parse_size("2MB"), 2'000'000u);
  EXPECT_EQ(parse_size("3GB"), 3'000'000'000u);
}

TEST(ConfigParseSize, RejectsFractionsSpacesWrongCaseAndOverflow) {
  for (const char* text : {"1.5MiB", "16 MiB", "16mib", "16Mb", "-1", "KiB", "", "1TiB",
                           "99999999999999GiB", "1 megabyte"}) {
    EXPECT_EQ(parse_size(text), std::nullopt) << text;
  }
}

TEST(ConfigInterpolateEnv, ReplacesVariablesAndDefaults) {
  auto env = env_of({{"DIR", "/srv"}, {"EMPTY", ""}, {"N", "7"}});
  EXPECT_EQ(interpolate_env("${DIR}/log.jsonl", env).value, "/srv/log.jsonl");
  EXPECT_EQ(interpolate_env("${N}-${N}", env).value, "7-7");
  EXPECT_EQ(interpolate_env("${MISSING:-/tmp}", env).value, "/tmp");
  EXPECT_EQ(interpolate_env("${DIR:-/tmp}", env).value, "/srv");
  EXPECT_EQ(interpolate_env("${EMPTY:-fallback}", env).value, "fallback");
  EXPECT_EQ(interpolate_env("${EMPTY}", env).value, "");
  EXPECT_EQ(interpolate_env("${MISSING:-}", env).value, "");
  EXPECT_EQ(interpolate_env("${MISSING:-host:9092}", env).value, "host:9092");
  EXPECT_FALSE(interpolate_env("${MISSING:-x}", env).error.has_value());
}

TEST(ConfigInterpolateEnv, DoubleDollarEscapesAndLoneDollarStaysLiteral) {
  auto env = env_of({{"A", "x"}});
  EXPECT_EQ(interpolate_env("$${A}", env).value, "${A}");
  EXPECT_EQ(interpolate_env("pa$$word", env).value, "pa$word");
  EXPECT_EQ(interpolate_env("cost $5 and $", env).value, "cost $5 and $");
  EXPECT_EQ(interpolate_env("$$$${A}", env).value, "$${A}");
  EXPECT_EQ(interpolate_env("$$${A}", env).value, "$x");
}

TEST(ConfigInterpolateEnv, UnsetVariableWithoutDefaultIsAnError) {
  auto result = interpolate_env("postgres://u:${PGPASSWORD}@db", env_of({}));
  ASSERT_TRUE(result.error.has_value());
  EXPECT_EQ(*result.error, "environment variable \"PGPASSWORD\" is not set");
}

TEST(ConfigInterpolateEnv, MalformedReferencesAreErrors) {
  auto env = env_of({{"A", "x"}});
  EXPECT_EQ(interpolate_env("${A", env).error, "unterminated \"${\" in \"${A\"");
  EXPECT_EQ(interpolate_env("${}", env).error, "invalid environment variable name \"\" in \"${}\"");
  EXPECT_EQ(interpolate_env("${A-b}", env).error,
            "invalid environment variable name \"A-b\" in \"${A-b}\"");
  EXPECT_TRUE(interpolate_env("${1A}", env).error.has_value());
}

TEST(ConfigClosestMatch, SuggestsOnlyCloseCandidates) {
  std::vector<std::string> keys = {"max_events", "max_bytes", "max_wait", "max_in_flight"};
  EXPECT_EQ(closest_match("max_evnts", keys), "max_events");
  EXPECT_EQ(closest_match("max_evnets", keys), "max_events");  // a transposition is one edit
  EXPECT_EQ(closest_match("MAX_WAIT", keys), "max_wait");
  EXPECT_EQ(closest_match("stdot", {"stdout", "file"}), "stdout");
  EXPECT_EQ(closest_match("jsnol", {"jsonl"}), "jsonl");
  EXPECT_EQ(closest_match("sorces", {"sources", "sinks", "consumers"}), "sources");
  EXPECT_EQ(closest_match("foo", {"log"}), std::nullopt);
  EXPECT_EQ(closest_match("colour", keys), std::nullopt);
  EXPECT_EQ(closest_match("anything", {}), std::nullopt);
}

TEST(ConfigDiagnostics, FormatsAndSortsByPositionStably) {
  Diagnostics diagnostics;
  diagnostics.add({"f.yaml", 3, 5}, "b", "third");
  diagnostics.add({"f.yaml", 1, 9}, "a", "first");
  diagnostics.add({"f.yaml", 3, 5}, "c", "fourth");
  diagnostics.add({"f.yaml", 3, 1}, "", "second");
  EXPECT_EQ(diagnostics.items().front().format(), "f.yaml:3:5: error: b: third");
  EXPECT_EQ(diagnostics.to_string(),
            "f.yaml:1:9: error: a: first\n"
            "f.yaml:3:1: error: second\n"
            "f.yaml:3:5: error: b: third\n"
            "f.yaml:3:5: error: c: fourth\n");
  EXPECT_EQ(Diagnostics().to_string(), "");
}

TEST(ConfigDiagnostics, WarningsAndPositionlessDiagnosticsFormat) {
  Diagnostics diagnostics;
  diagnostics.warn({"f.yaml", 2, 3}, "consumers.c.operations", "leaves out read");
  diagnostics.add({"f.yaml", 0, 0}, "", "cannot read f.yaml: Is a directory");
  EXPECT_EQ(diagnostics.items()[0].format(),
            "f.yaml:2:3: warning: consumers.c.operations: leaves out read");
  EXPECT_EQ(diagnostics.items()[1].format(), "error: cannot read f.yaml: Is a directory");
  EXPECT_EQ(diagnostics.errors(), 1u);
}

TEST_F(ConfigNode, ReadsTypedValues) {
  Node root = parse(
      "name: demo\nfollow: true\ncount: 42\nwait: 250ms\nbytes: 64KiB\nformat: json\n"
      "list: [a, b]\nprops: {acks: all, retries: 3}\n");
  EXPECT_EQ(root.string("name"), "demo");
  EXPECT_EQ(root.boolean("follow"), true);
  EXPECT_EQ(root.integer("count", 0, 100), 42);
  EXPECT_EQ(root.duration("wait"), milliseconds(250));
  EXPECT_EQ(root.size("bytes"), 65536u);
  EXPECT_EQ(root.one_of("format", {"text", "json"}), "json");
  EXPECT_EQ(root.string_list("list"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(root.string_map("props"),
            (std::map<std::string, std::string>{{"acks", "all"}, {"retries", "3"}}));
  root.check_unknown_keys();
  EXPECT_EQ(errors(), "");
}

TEST_F(ConfigNode, AbsentOptionalKeysGiveNulloptSilently) {
  Node root = parse("a: 1\nempty:\n");
  EXPECT_EQ(root.string("missing"), std::nullopt);
  EXPECT_EQ(root.duration("empty"), std::nullopt);
  EXPECT_FALSE(root.has("empty"));
  EXPECT_FALSE(root.child("missing").defined());
  EXPECT_EQ(errors(), "");
}

TEST_F(ConfigNode, MissingRequiredKeyIsReportedAtTheParentMap) {
  Node root = parse("sources:\n  demo:\n    type: jsonl\n");
  Node demo = root.child("sources").child("demo");
  EXPECT_EQ(demo.string("path", /*required=*/true), std::nullopt);
  EXPECT_EQ(errors(), "test.yaml:3:5: error: sources.demo: missing required key \"path\"\n");
}

TEST_F(ConfigNode, RequiredKeyWithoutValueIsReportedAtTheKey) {
  Node root = parse("path:\nother: 1\n");
  EXPECT_EQ(root.string("path", true), std::nullopt);
  EXPECT_EQ(errors(), "test.yaml:1:1: error: path: missing value for required key \"path\"\n");
}

TEST_F(ConfigNode, WrongTypesNameWhatWasExpectedAndWhatWasFound) {
  Node root = parse(
      "follow: yes please\ncount: lots\nbig: 2000\nwait: 5 seconds\nbare: 5\nbytes: 1 megabyte\n"
      "format: stdot\nname: {a: 1}\nlist: {a: 1}\nitems: [a, [b]]\n");
  root.boolean("follow");
  root.integer("count", 1, 1000);
  root.integer("big", 1, 1000);
  root.duration("wait");
  root.duration("bare");
  root.size("bytes");
  root.one_of("format", {"stdout", "file"});
  root.string("name");
  root.string_list("list");
  root.string_list("items");
  EXPECT_EQ(errors(),
            "test.yaml:1:9: error: follow: expected a boolean (true or false), got \"yes please\"\n"
            "test.yaml:2:8: error: count: expected an integer between 1 and 1000, got \"lots\"\n"
            "test.yaml:3:6: error: big: expected an integer between 1 and 1000, got \"2000\"\n"
            "test.yaml:4:7: error: wait: expected a duration such as 250ms, 5s or 1m, got "
            "\"5 seconds\"\n"
            "test.yaml:5:7: error: bare: expected a duration such as 250ms, 5s or 1m, got \"5\" "
            "(add a unit: ms, s, m or h)\n"
            "test.yaml:6:8: error: bytes: expected a size such as 512, 64KiB or 16MiB, got "
            "\"1 megabyte\"\n"
            "test.yaml:7:9: error: format: expected one of stdout, file, got \"stdot\" (did you "
            "mean \"stdout\"?)\n"
            "test.yaml:8:7: error: name: expected a string, got a map\n"
            "test.yaml:9:7: error: list: expected a list of strings, got a map\n"
            "test.yaml:10:12: error: items[1]: expected a string, got a list\n");
}

TEST_F(ConfigNode, IntegerRangesAreDescribedByTheirBounds) {
  Node root = parse("a: -1\nb: x\nc: 1.5\n");
  root.integer("a", 0, std::numeric_limits<std::int64_t>::max());
  root.integer("b", std::numeric_limits<std::int64_t>::min(), 5);
  root.integer("c", std::numeric_limits<std::int64_t>::min(),
               std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(errors(),
            "test.yaml:1:4: error: a: expected an integer of at least 0, got \"-1\"\n"
            "test.yaml:2:4: error: b: expected an integer of at most 5, got \"x\"\n"
            "test.yaml:3:4: error: c: expected an integer, got \"1.5\"\n");
}

TEST_F(ConfigNode, UnknownKeysGetASuggestionOrTheListOfValidKeys) {
  Node root = parse("batch:\n  max_evnts: 10\n  colour: red\n  max_wait: 1s\n");
  Node batch = root.child("batch");
  batch.integer("max_events", 1, 100);
  batch.duration("max_wait");
  batch.check_unknown_keys();
  root.check_unknown_keys();
  EXPECT_EQ(errors(),
            "test.yaml:2:3: error: batch.max_evnts: unknown key \"max_evnts\" (did you mean "
            "\"max_events\"?)\n"
            "test.yaml:3:3: error: batch.colour: unknown key \"colour\"; valid keys are: "
            "max_events, max_wait\n");
}

TEST_F(ConfigNode, NodesOfTheSameMapShareTheirKnownKeys) {
  Node root = parse("batch: {max_events: 10, max_wait: 1s}\n");
  root.child("batch").integer("max_events", 1, 100);
  Node copy = root.child("batch");
  copy.duration("max_wait");
  Node again = root.child("batch");
  again.check_unknown_keys();
  Node copied = again;  // NOLINT: a copy must share too
  copied.check_unknown_keys();
  EXPECT_EQ(errors(), "");
}

TEST_F(ConfigNode, NodesOfDifferentMapsDoNotShareKnownKeys) {
  Node root = parse("a: {x: 1}\nb: {x: 1}\n");
  root.child("a").string("x");
  root.child("b").check_unknown_keys();
  EXPECT_EQ(errors(), "test.yaml:2:5: error: b.x: unknown key \"x\"\n");
}

TEST_F(ConfigNode, MarkKnownAndHasCountAsAsked) {
  Node root = parse("type: jsonl\nflag: true\nextra: 1\n");
  root.mark_known({"type"});
  EXPECT_TRUE(root.has("flag"));
  root.check_unknown_keys();
  EXPECT_EQ(errors(),
            "test.yaml:3:1: error: extra: unknown key \"extra\"; valid keys are: flag, type\n");
}

TEST_F(ConfigNode, ScalarsAreInterpolatedWhenRead) {
  Node root = parse("path: ${DIR}/changes.jsonl\nwait: ${WAIT:-2s}\nprops: {a: '${DIR}'}\n",
                    {{"DIR", "/srv"}});
  EXPECT_EQ(root.string("path"), "/srv/changes.jsonl");
  EXPECT_EQ(root.duration("wait"), milliseconds(2000));
  EXPECT_EQ(root.string_map("props"), (std::map<std::string, std::string>{{"a", "/srv"}}));
  EXPECT_EQ(errors(), "");
}

TEST_F(ConfigNode, UnsetVariableIsReportedAtTheScalar) {
  Node root = parse("dsn:\n  url: postgres://app:${PGPASSWORD}@db/app\n");
  EXPECT_EQ(root.child("dsn").string("url"), std::nullopt);
  EXPECT_EQ(errors(),
            "test.yaml:2:8: error: dsn.url: environment variable \"PGPASSWORD\" is not set\n");
}

TEST_F(ConfigNode, DiagnosticsNeverShowInterpolatedValues) {
  Node root =
      parse("count: ${SECRET}\nmode: ${SECRET}\nwait: ${SECRET}\n", {{"SECRET", "hunter2"}});
  root.integer("count", 1, 10);
  root.one_of("mode", {"a", "b"});
  root.duration("wait");
  std::string text = errors();
  EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
  EXPECT_EQ(text,
            "test.yaml:1:8: error: count: expected an integer between 1 and 10, got \"${SECRET}\" "
            "after interpolation\n"
            "test.yaml:2:7: error: mode: expected one of a, b, got \"${SECRET}\" after "
            "interpolation\n"
            "test.yaml:3:7: error: wait: expected a duration such as 250ms, 5s or 1m, got "
            "\"${SECRET}\" after interpolation\n");
}

TEST_F(ConfigNode, EntriesAreInFileOrderWithoutLaterDuplicates) {
  Node root = parse("m:\n  zeta: 1\n  alpha: 2\n  zeta: 3\n");
  auto entries = root.child("m").entries();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].first, "zeta");
  EXPECT_EQ(entries[0].second.scalar(), "1");
  EXPECT_EQ(entries[0].second.path(), "m.zeta");
  EXPECT_EQ(entries[1].first, "alpha");
  root.child("m").check_unknown_keys();
  EXPECT_EQ(errors(), "");
}

TEST_F(ConfigNode, ElementsCarryIndexedPathsAndLocations) {
  Node root = parse("sinks:\n  - console\n  - archive\n");
  auto elements = root.child("sinks").elements();
  ASSERT_EQ(elements.size(), 2u);
  EXPECT_EQ(elements[1].path(), "sinks[1]");
  EXPECT_EQ(elements[1].location().line, 3);
  EXPECT_EQ(elements[1].location().column, 5);
  elements[1].error("no sink named \"archive\"");
  EXPECT_EQ(errors(), "test.yaml:3:5: error: sinks[1]: no sink named \"archive\"\n");
}

TEST_F(ConfigNode, ExpectMapAndEntriesReportOtherShapes) {
  Node root = parse("a: [1]\nb: text\n");
  EXPECT_FALSE(root.child("a").expect_map());
  EXPECT_TRUE(root.child("b").entries().empty());
  EXPECT_EQ(errors(),
            "test.yaml:1:4: error: a: expected a map, got a list\n"
            "test.yaml:2:4: error: b: expected a map, got \"text\"\n");
}

TEST_F(ConfigNode, ErrorAtPointsAtTheValueOrTheParent) {
  Node root = parse("m:\n  interval: 0s\n  empty:\n");
  Node m = root.child("m");
  m.error_at("interval", "must be greater than 0");
  m.error_at("empty", "needs a value");
  m.error_at("absent", "is missing");
  EXPECT_EQ(errors(),
            "test.yaml:2:3: error: m: is missing\n"
            "test.yaml:2:13: error: m.interval: must be greater than 0\n"
            "test.yaml:3:3: error: m.empty: needs a value\n");
}

TEST_F(ConfigNode, EmptyDocumentReportsAtTheFirstLine) {
  Node root = parse("");
  root.child("sources", true);
  EXPECT_EQ(errors(), "test.yaml:1:1: error: missing required key \"sources\"\n");
}

}  // namespace
}  // namespace cdcd::config
