#include "daemon/format/format.h"

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "daemon/format/json_writer.h"
#include "tests/support/test_util.h"

namespace cdcd {
namespace {

using Json = nlohmann::json;

constexpr std::int64_t kCommitUs = 1763719200123456;  // 2025-11-21T10:00:00.123456Z

EncodeContext test_context() {
  EncodeContext context;
  context.source_name = "demo";
  context.connector = "jsonl";
  context.processed_at_us = 1763719200456789;
  return context;
}

Change base_change(Operation operation) {
  Change change;
  change.lsn = 1042;
  change.seq = 3;
  change.timestamp_us = kCommitUs;
  change.txid = 77;
  change.source = "inventory";
  change.entity = "public.orders";
  change.operation = operation;
  change.key = R"({"id":7})";
  return change;
}

// The changes every format is checked against, by golden file name.
std::map<std::string, Change> golden_cases() {
  std::map<std::string, Change> cases;

  Change insert = base_change(Operation::kInsert);
  insert.new_row = R"({"id":7,"status":"new","total":12.50,"tags":["a","b"]})";
  cases["insert"] = insert;

  Change update = base_change(Operation::kUpdate);
  update.old_row =
      R"({"id":7,"status":"new","total":12.50,"big":123456789012345678901234567890,"note":"x"})";
  update.new_row =
      R"({"id":7,"status":"shipped","total":12.50,"big":123456789012345678901234567891,"meta":{"by":"bob"}})";
  cases["update_old_new"] = update;

  Change update_key = base_change(Operation::kUpdate);
  update_key.old_row = R"({"id":7})";
  update_key.new_row = R"({"id":7,"status":"shipped"})";
  cases["update_key_only"] = update_key;

  Change key_changed = base_change(Operation::kUpdate);
  key_changed.key = R"({"id":8})";
  key_changed.old_key = R"({"id":7})";
  key_changed.old_row = R"({"id":7})";
  key_changed.new_row = R"({"id":8,"status":"shipped"})";
  cases["update_key_changed"] = key_changed;

  Change remove = base_change(Operation::kDelete);
  remove.old_row = R"({"id":7,"status":"shipped"})";
  cases["delete"] = remove;

  Change truncate = base_change(Operation::kTruncate);
  truncate.seq = 0;
  truncate.key = "{}";
  cases["truncate"] = truncate;

  Change read = base_change(Operation::kRead);
  read.new_row = R"({"id":7,"status":"new"})";
  cases["read"] = read;

  Change unicode = base_change(Operation::kUpdate);
  unicode.source = "db\\main";
  unicode.entity = "app.\"Bücher\"\tΩ";
  unicode.key = R"({"isbn":"978-3-16"})";
  unicode.old_row = R"({"isbn":"978-3-16","title":"Faust \"I\"","note":"a\nb"})";
  unicode.new_row = R"({"isbn":"978-3-16","title":"Fäust 😀 \u0001","note":"a\nb"})";
  cases["unicode_escapes"] = unicode;

  Change toast = base_change(Operation::kUpdate);
  toast.key = R"({"id":9})";
  toast.old_row = R"({"id":9,"doc":"large text","n":1})";
  toast.new_row = R"({"id":9,"n":2})";
  toast.unchanged_columns = {"doc", "odd \"col\""};
  cases["unchanged_columns"] = toast;

  Change no_txid = base_change(Operation::kInsert);
  no_txid.txid.reset();
  no_txid.source.clear();
  no_txid.entity = "orders";
  no_txid.new_row = R"({"id":7})";
  cases["no_txid"] = no_txid;

  return cases;
}

std::string encode(Format format, const Change& change,
                   const EncodeContext& context = test_context()) {
  std::string out;
  encode_change(format, change, context, out);
  return out;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// Golden files hold the version as a placeholder, so that a release does not rewrite them.
constexpr const char* kVersionPlaceholder = "cdcd-@CDCD_VERSION@";
const std::string kVersion = std::string("cdcd-") + CDCD_VERSION;

struct GoldenCase {
  std::string name;
  Format format;
};

std::vector<GoldenCase> all_golden_cases() {
  std::vector<GoldenCase> result;
  for (const auto& [name, change] : golden_cases()) {
    for (Format format : {Format::kNative, Format::kDebezium, Format::kMongodb}) {
      result.push_back({name, format});
    }
  }
  return result;
}

void PrintTo(const GoldenCase& golden, std::ostream* os) {
  *os << golden.name << "." << to_string(golden.format);
}

class FormatGolden : public ::testing::TestWithParam<GoldenCase> {};

// Set CDCD_UPDATE_GOLDEN=1 to rewrite the files after an intended change, then review the diff.
TEST_P(FormatGolden, MatchesFile) {
  const GoldenCase& param = GetParam();
  const std::string path = test::source_dir() + "/tests/golden/formats/" + param.name + "." +
                           std::string(to_string(param.format)) + ".json";
  const std::string actual = encode(param.format, golden_cases().at(param.name));
  if (std::getenv("CDCD_UPDATE_GOLDEN") != nullptr) {
    test::write_file(path, replace_all(actual, kVersion, kVersionPlaceholder) + "\n");
  }
  const std::string golden = test::read_file(path);
  ASSERT_FALSE(golden.empty()) << "missing golden file " << path;
  EXPECT_EQ(actual + "\n", replace_all(golden, kVersionPlaceholder, kVersion)) << path;
}

TEST_P(FormatGolden, IsOneLineOfValidJson) {
  const GoldenCase& param = GetParam();
  const std::string actual = encode(param.format, golden_cases().at(param.name));
  EXPECT_EQ(actual.find('\n'), std::string::npos);
  EXPECT_TRUE(Json::accept(actual)) << actual;
}

INSTANTIATE_TEST_SUITE_P(Formats, FormatGolden, ::testing::ValuesIn(all_golden_cases()),
                         [](const ::testing::TestParamInfo<GoldenCase>& info) {
                           return info.param.name + "_" + std::string(to_string(info.param.format));
                         });

TEST(FormatNames, ParseAndPrint) {
  for (Format format : {Format::kNative, Format::kDebezium, Format::kMongodb}) {
    EXPECT_EQ(parse_format(to_string(format)), format);
  }
  EXPECT_EQ(to_string(Format::kDebezium), "debezium");
  EXPECT_FALSE(parse_format("avro").has_value());
  EXPECT_FALSE(parse_format("Native").has_value());
}

TEST(FormatEncode, AppendsToExistingBuffer) {
  std::string out = "prefix|";
  encode_change(Format::kNative, golden_cases().at("insert"), test_context(), out);
  EXPECT_EQ(out.rfind("prefix|{\"lsn\":1042,", 0), 0u) << out;
}

std::string escaped(std::string_view text) {
  std::string out;
  json::append_string(out, text);
  return out;
}

TEST(FormatJsonString, EscapesControlCharacters) {
  EXPECT_EQ(escaped(std::string_view("\0", 1)), R"("\u0000")");
  EXPECT_EQ(escaped("\x01\x1f"), R"("\u0001\u001f")");
  EXPECT_EQ(escaped("\b\f\n\r\t"), R"("\b\f\n\r\t")");
  EXPECT_EQ(escaped("say \"hi\" \\ bye"), R"("say \"hi\" \\ bye")");
  EXPECT_EQ(escaped("/ and \x7f stay"), "\"/ and \x7f stay\"");
  EXPECT_EQ(escaped(""), R"("")");
}

TEST(FormatJsonString, PassesUtf8Through) {
  EXPECT_EQ(escaped("Bücher Ω 😀 日本"), "\"Bücher Ω 😀 日本\"");
  EXPECT_EQ(escaped("é\n"), "\"é\\n\"");
}

TEST(FormatJsonString, ReplacesInvalidUtf8) {
  EXPECT_EQ(escaped("a\xff"
                    "b"),
            "\"a\xEF\xBF\xBD"
            "b\"");
  EXPECT_EQ(escaped("\xc3"), "\"\xEF\xBF\xBD\"");  // truncated sequence
  // An encoded surrogate is not valid UTF-8 either.
  const std::string surrogate = escaped("\xed\xa0\x80\n");
  EXPECT_TRUE(Json::accept(surrogate)) << surrogate;
  EXPECT_EQ(surrogate.find('\xed'), std::string::npos);
  EXPECT_NE(surrogate.find("\xEF\xBF\xBD"), std::string::npos);
}

TEST(FormatJsonString, EveryByteValueRoundTrips) {
  std::string text;
  for (int c = 1; c < 128; ++c) text += static_cast<char>(c);
  text += std::string("\0", 1) + "ü€😀";
  const std::string out = escaped(text);
  EXPECT_EQ(Json::parse(out).get<std::string>(), text);
}

TEST(FormatJsonWriter, Integers) {
  std::string out;
  json::append_integer(out, std::uint64_t{18446744073709551615u});
  out += ' ';
  json::append_integer(out, std::int64_t{-9223372036854775807 - 1});
  out += ' ';
  json::append_integer(out, std::uint32_t{0});
  EXPECT_EQ(out, "18446744073709551615 -9223372036854775808 0");
}

TEST(FormatJsonWriter, FixedWidthHex) {
  std::string out;
  json::append_hex(out, 0x412, 16);
  json::append_hex(out, 0xabc, 8);
  json::append_hex(out, 0x123456789, 4);  // keeps the low digits
  EXPECT_EQ(out,
            "0000000000000412"
            "00000ABC"
            "6789");
}

TEST(FormatNative, FieldsInOrderAndOptionalOnesOmitted) {
  Change change = golden_cases().at("no_txid");
  change.key.clear();
  EXPECT_EQ(encode(Format::kNative, change),
            R"({"lsn":1042,"seq":3,"timestamp":1763719200123456,"entity":"orders","key":{},)"
            R"("operation":"insert","old":null,"new":{"id":7}})");
}

TEST(FormatNative, OldKeyFollowsKeyOnlyWhenSet) {
  EXPECT_EQ(encode(Format::kNative, golden_cases().at("update_key_changed")),
            R"({"lsn":1042,"seq":3,"timestamp":1763719200123456,"txid":77,"source":"inventory",)"
            R"("entity":"public.orders","key":{"id":8},"old_key":{"id":7},"operation":"update",)"
            R"("old":{"id":7},"new":{"id":8,"status":"shipped"}})");
  EXPECT_EQ(encode(Format::kNative, golden_cases().at("update_key_only")).find("old_key"),
            std::string::npos);
}

// Debezium and MongoDB events have no field for it: a key change reads as before, from old and new.
TEST(FormatOtherThanNative, OldKeyChangesNothing) {
  Change without = golden_cases().at("update_key_changed");
  without.old_key.clear();
  for (Format format : {Format::kDebezium, Format::kMongodb}) {
    EXPECT_EQ(encode(format, golden_cases().at("update_key_changed")), encode(format, without));
  }
}

TEST(FormatNative, UnchangedColumnsAfterNew) {
  const std::string out = encode(Format::kNative, golden_cases().at("unchanged_columns"));
  EXPECT_NE(out.find(R"("new":{"id":9,"n":2},"unchanged":["doc","odd \"col\""]})"),
            std::string::npos)
      << out;
}

// The native format is the jsonl source's input: what a file sink writes must replay unchanged.
TEST(FormatNative, RoundTripsThroughTheParser) {
  for (const auto& [name, change] : golden_cases()) {
    SCOPED_TRACE(name);
    const std::string line = encode(Format::kNative, change);
    const Result<Change> parsed = parse_native_line(line);
    ASSERT_TRUE(parsed.has_value()) << parsed.error().message << "\n" << line;
    EXPECT_EQ(parsed->lsn, change.lsn);
    EXPECT_EQ(parsed->seq, change.seq);
    EXPECT_EQ(parsed->timestamp_us, change.timestamp_us);
    EXPECT_EQ(parsed->txid, change.txid);
    EXPECT_EQ(parsed->source, change.source);
    EXPECT_EQ(parsed->entity, change.entity);
    EXPECT_EQ(parsed->operation, change.operation);
    EXPECT_EQ(parsed->key, change.key);
    EXPECT_EQ(parsed->old_key, change.old_key);
    EXPECT_EQ(parsed->old_row, change.old_row);
    EXPECT_EQ(parsed->new_row, change.new_row);
    EXPECT_EQ(parsed->unchanged_columns, change.unchanged_columns);
    EXPECT_EQ(encode(Format::kNative, *parsed), line);
  }
}

Json mongodb_update_description(const Change& change) {
  return Json::parse(encode(Format::kMongodb, change)).at("updateDescription");
}

TEST(FormatMongodb, UpdatedFieldsAreNewOrChangedValues) {
  const Json description = mongodb_update_description(golden_cases().at("update_old_new"));
  EXPECT_EQ(description.at("updatedFields"),
            Json::parse(R"({"status":"shipped","big":123456789012345678901234567891,)"
                        R"("meta":{"by":"bob"}})"));
  EXPECT_EQ(description.at("removedFields"), Json::parse(R"(["note"])"));
  EXPECT_EQ(description.at("truncatedArrays"), Json::array());
}

TEST(FormatMongodb, NumbersKeepTheirExactText) {
  const std::string out = encode(Format::kMongodb, golden_cases().at("update_old_new"));
  EXPECT_NE(out.find(R"("big":123456789012345678901234567891)"), std::string::npos) << out;
  Change change = golden_cases().at("update_key_only");
  change.new_row = R"({"id":7,"price":1.10,"ratio":1e-7})";
  const std::string decimals = encode(Format::kMongodb, change);
  EXPECT_NE(decimals.find(R"("updatedFields":{"price":1.10,"ratio":1e-7})"), std::string::npos)
      << decimals;
}

TEST(FormatMongodb, WithoutOldImageEveryFieldIsUpdated) {
  Change change = golden_cases().at("update_key_only");
  change.old_row.clear();
  const Json description = mongodb_update_description(change);
  EXPECT_EQ(description.at("updatedFields"), Json::parse(R"({"id":7,"status":"shipped"})"));
  EXPECT_EQ(description.at("removedFields"), Json::array());
  const Json event = Json::parse(encode(Format::kMongodb, change));
  EXPECT_FALSE(event.contains("fullDocumentBeforeChange"));
}

TEST(FormatMongodb, KeyOnlyOldImageRemovesNothing) {
  const Json description = mongodb_update_description(golden_cases().at("update_key_only"));
  EXPECT_EQ(description.at("updatedFields"), Json::parse(R"({"status":"shipped"})"));
  EXPECT_EQ(description.at("removedFields"), Json::array());
}

TEST(FormatMongodb, UnchangedColumnsAreNeitherUpdatedNorRemoved) {
  Change change = golden_cases().at("unchanged_columns");
  // Even if a source also sent the column in the new image, it is not reported as updated.
  change.new_row = R"({"id":9,"n":2,"doc":"stale"})";
  const Json description = mongodb_update_description(change);
  EXPECT_EQ(description.at("updatedFields"), Json::parse(R"({"n":2})"));
  EXPECT_EQ(description.at("removedFields"), Json::array());
}

TEST(FormatMongodb, FieldsInAnotherOrderAreMatchedByName) {
  Change change = golden_cases().at("update_key_only");
  change.old_row = R"({"c":3,"b":2,"a":1})";
  change.new_row = R"({"a":1,"b":20,"d":4})";
  const Json description = mongodb_update_description(change);
  EXPECT_EQ(description.at("updatedFields"), Json::parse(R"({"b":20,"d":4})"));
  EXPECT_EQ(description.at("removedFields"), Json::parse(R"(["c"])"));
}

TEST(FormatMongodb, EscapedFieldNamesAreComparedUnescaped) {
  Change change = golden_cases().at("update_key_only");
  change.old_row = R"({"a\u00e9":1,"q\"":2})";
  change.new_row = R"({"aé":1})";
  change.unchanged_columns = {"q\""};
  const Json description = mongodb_update_description(change);
  EXPECT_EQ(description.at("updatedFields"), Json::object());
  EXPECT_EQ(description.at("removedFields"), Json::array());
}

TEST(FormatMongodb, ResumeTokensSortLikeChanges) {
  Change first = golden_cases().at("insert");
  Change second = first;
  first.lsn = 0xff;
  first.seq = 0xffff;
  second.lsn = 0x100;
  second.seq = 0;
  const auto token = [](const Change& change) {
    return Json::parse(encode(Format::kMongodb, change))["_id"]["_data"].get<std::string>();
  };
  EXPECT_EQ(token(first), "00000000000000FF0000FFFF");
  EXPECT_LT(token(first), token(second));
}

TEST(FormatMongodb, TimesBeforeTheEpochRoundDown) {
  Change change = golden_cases().at("insert");
  change.timestamp_us = -1;
  const Json event = Json::parse(encode(Format::kMongodb, change));
  EXPECT_EQ(event["wallTime"]["$date"], "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(event["clusterTime"]["$timestamp"]["t"], -1);
}

TEST(FormatDebezium, UnavailableValuesInAnEmptyAfterImage) {
  Change change = golden_cases().at("unchanged_columns");
  change.new_row = "{}";
  change.unchanged_columns = {"doc"};
  const Json event = Json::parse(encode(Format::kDebezium, change));
  EXPECT_EQ(event["after"], Json::parse(R"({"doc":"__debezium_unavailable_value"})"));
}

TEST(FormatDebezium, SourceFallsBackToTheContext) {
  const Json event = Json::parse(encode(Format::kDebezium, golden_cases().at("no_txid")));
  EXPECT_EQ(event["source"]["db"], "demo");
  EXPECT_EQ(event["source"]["name"], "demo");
  EXPECT_EQ(event["source"]["schema"], "");  // required in Debezium's Source schema
  EXPECT_EQ(event["source"]["table"], "orders");
  EXPECT_TRUE(event["source"]["txId"].is_null());
  EXPECT_EQ(event["ts_ms"], 1763719200456);
}

// Found by fuzz_native_line: a commit in the year 1012 overflowed ts_ns (UBSan). Nanoseconds fit in
// 64 bits only from 1677 to 2262; outside, the optional field is null and the others stay exact.
TEST(FormatDebezium, NanosecondsOutsideTheirRangeAreNull) {
  Change change = golden_cases().at("no_txid");
  change.timestamp_us = -30203503199876544;  // 1012-11-21T10:00:00.123456Z
  const Json event = Json::parse(encode(Format::kDebezium, change));
  EXPECT_TRUE(event["source"]["ts_ns"].is_null());
  EXPECT_EQ(event["source"]["ts_us"], -30203503199876544);
  EXPECT_EQ(event["source"]["ts_ms"], -30203503199877);
}

// Not a timed assertion: prints the native encoder's rate so a regression is visible in the log.
TEST(FormatNative, MicroCheckRate) {
  const Change change = golden_cases().at("update_old_new");
  const EncodeContext context = test_context();
  constexpr int kEvents = 200000;
  std::string out;
  std::size_t bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kEvents; ++i) {
    out.clear();
    encode_change(Format::kNative, change, context, out);
    bytes += out.size();
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  std::cout << "native encoder: " << static_cast<long>(kEvents / elapsed.count()) << " events/s ("
            << bytes / kEvents << " bytes each)\n";
  EXPECT_GT(bytes, 0u);
}

}  // namespace
}  // namespace cdcd
