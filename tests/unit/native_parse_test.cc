#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/format/format.h"
#include "daemon/format/native_parse.h"
#include "daemon/format/rfc3339.h"

namespace cdcd {
namespace {

constexpr const char* kFullLine =
    R"({"lsn": 1042, "seq": 3, "timestamp": 1763719200123456, "txid": 77, "source": "db1", )"
    R"("entity": "public.orders", "key": {"id": 7}, "operation": "update", )"
    R"("old": {"id": 7, "status": "new"}, "new": {"id": 7, "status": "shipped", "tags": [1, 2.5e3, )"
    R"(true, false, null, {"a": []}]}, "unchanged": ["blob", "doc"]})";

std::string parse_error(const std::string& line) {
  auto result = parse_native_line(line);
  if (result) return "(parsed)";
  return result.error().message;
}

std::string with_field(const std::string& field) {
  return R"({"lsn": 1, "timestamp": 5, "entity": "t", "operation": "insert", )" + field + "}";
}

// Found by fuzz_native_line: a few kilobytes of nested brackets overflowed the stack. Up to 512
// levels parse, deeper is a bad record; in plain and in spaced (non-compact) images alike.
TEST(ParseNativeLine, NestingIsBounded) {
  auto nested = [](int levels, const std::string& space) {
    return std::string(levels, '[') + space + std::string(levels, ']');
  };
  for (const std::string space : {"", " "}) {
    for (const std::string image : {"new", "key"}) {
      const std::string ok = with_field(R"(")" + image + R"(": {"a": )" + nested(510, space) + "}");
      EXPECT_EQ(parse_error(ok), "(parsed)") << image << " '" << space << "'";
      const std::string deep =
          with_field(R"(")" + image + R"(": {"a": )" + nested(5000, space) + "}");
      EXPECT_NE(parse_error(deep).find("nested deeper than 512 levels"), std::string::npos)
          << image << " '" << space << "': " << parse_error(deep);
    }
  }
}

TEST(ParseNativeLine, ReadsEveryField) {
  auto change = parse_native_line(kFullLine);
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->lsn, 1042u);
  EXPECT_EQ(change->seq, 3u);
  EXPECT_EQ(change->timestamp_us, 1763719200123456);
  ASSERT_TRUE(change->txid.has_value());
  EXPECT_EQ(*change->txid, 77u);
  EXPECT_EQ(change->source, "db1");
  EXPECT_EQ(change->entity, "public.orders");
  EXPECT_EQ(change->operation, Operation::kUpdate);
  EXPECT_EQ(change->key, R"({"id":7})");
  EXPECT_EQ(change->old_row, R"({"id":7,"status":"new"})");
  EXPECT_EQ(change->new_row,
            R"({"id":7,"status":"shipped","tags":[1,2.5e3,true,false,null,{"a":[]}]})");
  EXPECT_EQ(change->unchanged_columns, (std::vector<std::string>{"blob", "doc"}));
}

TEST(ParseNativeLine, DefaultsOfOptionalFields) {
  auto change = parse_native_line(R"({"lsn":5,"timestamp":1,"entity":"e","operation":"delete"})");
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->seq, 0u);
  EXPECT_FALSE(change->txid.has_value());
  EXPECT_EQ(change->source, "");
  EXPECT_EQ(change->key, "{}");
  EXPECT_EQ(change->old_row, "");
  EXPECT_EQ(change->new_row, "");
  EXPECT_TRUE(change->unchanged_columns.empty());
  EXPECT_EQ(change->operation, Operation::kDelete);
}

TEST(ParseNativeLine, OldKeyIsReadWhenPresent) {
  auto change = parse_native_line(with_field(R"("key": {"id": 8}, "old_key": {"id" : 7}, )"
                                             R"("old": {"id": 7}, "new": {"id": 8})"));
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->old_key, R"({"id":7})");
  EXPECT_EQ(change->key, R"({"id":8})");
  EXPECT_EQ(change->old_row, R"({"id":7})");
  auto without = parse_native_line(with_field(R"("key": {"id": 8}, "old_key": null)"));
  ASSERT_TRUE(without) << without.error().message;
  EXPECT_EQ(without->old_key, "");
  auto plain = parse_native_line(kFullLine);
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_EQ(plain->old_key, "");
}

TEST(ParseNativeLine, NullMeansAbsentForOptionalFields) {
  auto change = parse_native_line(with_field(
      R"("txid": null, "source": null, "key": null, "old": null, "new": null, "unchanged": null)"));
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_FALSE(change->txid.has_value());
  EXPECT_EQ(change->key, "{}");
  EXPECT_EQ(change->old_row, "");
  EXPECT_EQ(change->new_row, "");
}

TEST(ParseNativeLine, EveryOperation) {
  for (Operation op : kAllOperations) {
    auto change = parse_native_line(R"({"lsn":1,"timestamp":1,"entity":"e","operation":")" +
                                    std::string(to_string(op)) + "\"}");
    ASSERT_TRUE(change) << change.error().message;
    EXPECT_EQ(change->operation, op);
  }
}

TEST(ParseNativeLine, UnknownFieldsAreIgnored) {
  auto change = parse_native_line(
      with_field(R"("future": {"nested": [1, {"x": "y"}]}, "other": 3, "key": {"id": 1})"));
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->key, R"({"id":1})");
}

TEST(ParseNativeLine, KeepsUnicodeAndEscapesByteForByte) {
  auto change = parse_native_line(with_field(
      R"("key": {"name": "caf\u00e9 \"q\" \\ \n"}, "new": {"name": "café 日本 🎉", "e\u0301": 1})"));
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->key, R"({"name":"caf\u00e9 \"q\" \\ \n"})");
  EXPECT_EQ(change->new_row, R"({"name":"café 日本 🎉","e\u0301":1})");
}

TEST(ParseNativeLine, UnescapesTopLevelStrings) {
  auto change = parse_native_line(
      R"({"lsn":1,"timestamp":1,"entity":"sch\u00e9ma.t\"x","source":"d\u00e9","operation":"insert"})");
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->entity, "schéma.t\"x");
  EXPECT_EQ(change->source, "dé");
}

TEST(ParseNativeLine, KeepsNumbersDigitForDigit) {
  auto change = parse_native_line(with_field(
      R"("new": {"big": 123456789012345678901234567890, "dec": 1.50, "neg": -0.0e-10, "z": 0})"));
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->new_row,
            R"({"big":123456789012345678901234567890,"dec":1.50,"neg":-0.0e-10,"z":0})");
}

TEST(ParseNativeLine, CompactsWhitespace) {
  auto change = parse_native_line(
      " \t{ \"lsn\" : 1 , \"timestamp\":1,\"entity\":\"e\",\"operation\":"
      "\"insert\", \"new\" : { \"a\" : [ 1 , 2 ] ,\"b\":\"x y\" } }  ");
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->new_row, R"({"a":[1,2],"b":"x y"})");
}

TEST(ParseNativeLine, MaximumValues) {
  auto change = parse_native_line(
      R"({"lsn":18446744073709551615,"seq":4294967295,"timestamp":-5,"txid":18446744073709551615,)"
      R"("entity":"e","operation":"insert"})");
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->lsn, UINT64_MAX);
  EXPECT_EQ(change->seq, UINT32_MAX);
  EXPECT_EQ(change->timestamp_us, -5);
  EXPECT_EQ(*change->txid, UINT64_MAX);
}

TEST(ParseNativeLine, Rfc3339Timestamps) {
  auto change = parse_native_line(
      R"({"lsn":1,"timestamp":"2025-11-21T10:00:00.123456Z","entity":"e","operation":"insert"})");
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->timestamp_us, 1763719200123456);
  change = parse_native_line(
      R"({"lsn":1,"timestamp":"2025-11-21T12:30:00+02:30","entity":"e","operation":"insert"})");
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->timestamp_us, 1763719200000000);
}

TEST(ParseNativeLine, ErrorMessages) {
  struct Case {
    std::string line;
    std::string error;
  };
  const std::string valid_prefix = R"({"timestamp":1,"entity":"e","operation":"insert",)";
  const Case cases[] = {
      {"", "invalid JSON: "},
      {"{\"lsn\": 1,", "invalid JSON: "},
      {"not json", "invalid JSON: "},
      {R"({"lsn": 1 "timestamp": 2})", "invalid JSON: "},
      {R"({"lsn":1,"timestamp":1,"entity":"e","operation":"insert"}})",
       "invalid JSON: unexpected content after the object"},
      {R"({"lsn":1,"timestamp":1,"entity":"e","operation":"insert"} x)", "invalid JSON: "},
      {"[1, 2]", "a change must be a JSON object"},
      {"42", "a change must be a JSON object"},
      {"nothing", "invalid JSON: unexpected token nothing"},
      {R"({"timestamp":1,"entity":"e","operation":"insert"})", R"(missing "lsn")"},
      {R"({"lsn":1,"entity":"e","operation":"insert"})", R"(missing "timestamp")"},
      {R"({"lsn":1,"timestamp":1,"operation":"insert"})", R"(missing "entity")"},
      {R"({"lsn":1,"timestamp":1,"entity":"e"})", R"(missing "operation")"},
      {valid_prefix + R"("lsn": -1})", R"("lsn" must be an unsigned integer)"},
      {valid_prefix + R"("lsn": 1.5})", R"("lsn" must be an unsigned integer)"},
      {valid_prefix + R"("lsn": "12"})", R"("lsn" must be an unsigned integer)"},
      {valid_prefix + R"("lsn": 18446744073709551616})", R"("lsn" must be an unsigned integer)"},
      {valid_prefix + R"("lsn": 12abc})", "invalid JSON: malformed number 12abc"},
      {valid_prefix + R"("lsn": 1, "lsn": 2})", R"(duplicate "lsn")"},
      {with_field(R"("seq": 4294967296)"), R"("seq" must be an unsigned 32-bit integer)"},
      {with_field(R"("seq": "x")"), R"("seq" must be an unsigned integer)"},
      {with_field(R"("txid": -3)"), R"("txid" must be an unsigned integer)"},
      {R"({"lsn":1,"timestamp":true,"entity":"e","operation":"insert"})",
       R"("timestamp" must be an integer (microseconds since the Unix epoch) or an RFC 3339 string)"},
      {R"({"lsn":1,"timestamp":1.5,"entity":"e","operation":"insert"})",
       R"("timestamp" must be an integer (microseconds since the Unix epoch) or an RFC 3339 string)"},
      {R"({"lsn":1,"timestamp":"2025-13-01T00:00:00Z","entity":"e","operation":"insert"})",
       R"("timestamp" is not a valid RFC 3339 date-time: "2025-13-01T00:00:00Z")"},
      {R"({"lsn":1,"timestamp":1,"entity":"","operation":"insert"})",
       R"("entity" must be a non-empty string)"},
      {R"({"lsn":1,"timestamp":1,"entity":7,"operation":"insert"})",
       R"("entity" must be a non-empty string)"},
      {with_field(R"("source": 1)"), R"("source" must be a string)"},
      {R"({"lsn":1,"timestamp":1,"entity":"e","operation":"upsert"})",
       R"(unknown operation "upsert")"},
      {R"({"lsn":1,"timestamp":1,"entity":"e","operation":1})", R"("operation" must be a string)"},
      {with_field(R"("key": [1])"), R"("key" must be an object)"},
      {with_field(R"("old": "x")"), R"("old" must be an object or null)"},
      {with_field(R"("new": 5)"), R"("new" must be an object or null)"},
      {with_field(R"("old_key": [7])"), R"("old_key" must be an object or null)"},
      {with_field(R"("old_key": {"id": 7}, "old_key": {"id": 8})"), R"(duplicate "old_key")"},
      {with_field(R"("unchanged": "col")"), R"("unchanged" must be an array of strings)"},
      {with_field(R"("unchanged": ["a", 1])"), R"("unchanged" must be an array of strings)"},
      // Inside row images every value is checked, though On Demand alone would skip them.
      {with_field(R"("new": {"id": tru})"), "invalid JSON: unexpected token tru"},
      {with_field(R"("new": {"id": nul})"), "invalid JSON: unexpected token nul"},
      {with_field(R"("new": {"id": 01})"), "invalid JSON: malformed number 01"},
      {with_field(R"("new": {"id": 1.})"), "invalid JSON: malformed number 1."},
      {with_field(R"("new": {"id" 1})"), "invalid JSON: "},
      {with_field(R"("new": {"id": [1 2]})"), "invalid JSON: "},
      {with_field(R"("new": {"id": "a\qb"})"),
       "invalid JSON: invalid escape or unescaped control character in a string"},
      {with_field(R"("new": {"id": "\u12"})"),
       "invalid JSON: invalid escape or unescaped control character in a string"},
      {with_field("\"new\": {\"id\": \"a\tb\"}"), "invalid JSON: "},
      {with_field("\"new\": {\"id\": \"\xff\xfe\"}"), "invalid JSON: "},
      {with_field(R"("txid": nul)"), "invalid JSON: unexpected token nul"},
  };
  for (const auto& c : cases) {
    std::string error = parse_error(c.line);
    EXPECT_EQ(error.substr(0, c.error.size()), c.error) << "line: " << c.line;
    if (c.error == "invalid JSON: ") {
      EXPECT_GT(error.size(), c.error.size()) << "no detail for: " << c.line;
    }
  }
}

TEST(ParseNativeLine, PaddedVariantAgreesAndHandlesHugeLines) {
  std::string big_value(3 * 1024 * 1024, 'x');
  std::string line = with_field(R"("new": {"blob": ")" + big_value + "\"}");
  std::string padded = line + std::string(kNativeLinePadding, '\0');
  auto change = parse_native_line_padded(std::string_view(padded.data(), line.size()));
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->new_row.size(), big_value.size() + 11);
  auto again = parse_native_line(line);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->new_row, change->new_row);
}

TEST(ParseNativeLine, PaddingContentDoesNotMatter) {
  // The padded variant reads straight from a read buffer, where the next line follows.
  const std::string two = R"({"lsn":9,"timestamp":1,"entity":"e","operation":"insert"})"
                          "\n"
                          R"({"lsn":10,"timestamp":1,"entity":"e","operation":"insert"})" +
                          std::string(kNativeLinePadding, '9');
  auto first = parse_native_line_padded(std::string_view(two).substr(0, two.find('\n')));
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->lsn, 9u);
  std::size_t second_start = two.find('\n') + 1;
  auto second = parse_native_line_padded(
      std::string_view(two).substr(second_start, two.size() - kNativeLinePadding - second_start));
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(second->lsn, 10u);
}

// Row images are copied in runs of input bytes wherever the input is already compact: whitespace
// between any two tokens must still give the same compact text.
TEST(ParseNativeLine, RowImagesCompactWhateverTheSpacing) {
  const std::string row =
      R"({"a":[1,{"b":null},[]],"c":{"d":"x\"y,:{}","e":-1.5e3},"f":true,"g":{},"h":[[false]]})";
  std::string all_spaced;
  bool in_string = false;
  for (std::size_t i = 0; i < row.size(); ++i) {
    // Position i, before row[i], can take whitespace when outside strings and next to punctuation.
    const bool punctuation_around =
        std::string_view("{}[]:,\"").find(row[i]) != std::string::npos ||
        (i > 0 && std::string_view("{}[]:,\"").find(row[i - 1]) != std::string::npos);
    if (!in_string && i > 0 && punctuation_around) {
      std::string spaced = row;
      spaced.insert(i, " \t");
      for (const std::string field : {"new", "key"}) {
        auto change = parse_native_line(with_field("\"" + field + "\": " + spaced));
        ASSERT_TRUE(change) << change.error().message << " for " << spaced;
        EXPECT_EQ(field == "new" ? change->new_row : change->key, row) << spaced;
      }
      all_spaced += ' ';
    }
    all_spaced += row[i];
    if (row[i] == '\\') {
      all_spaced += row[++i];
    } else if (row[i] == '"') {
      in_string = !in_string;
    }
  }
  auto change = parse_native_line(with_field(R"("new": )" + all_spaced));
  ASSERT_TRUE(change) << change.error().message << " for " << all_spaced;
  EXPECT_EQ(change->new_row, row);
}

// Strings are scanned eight bytes at a time: escapes and errors must be found at every offset.
TEST(ParseNativeLine, StringsOfEveryLengthAndEscapePosition) {
  const std::string bad_string =
      "invalid JSON: invalid escape or unescaped control character in a string";
  for (std::size_t length = 0; length <= 20; ++length) {
    for (std::size_t at = 0; at <= length; ++at) {
      const std::string plain(length, 'a');
      const auto with = [&](const std::string& special) {
        return plain.substr(0, at) + special + plain.substr(at);
      };
      for (const char* special : {"", "\\\"", "\\\\", "\\/", "\\b", "\\n", "\\u00e9", "é", "~"}) {
        const std::string text = with(special);
        const std::string row = "{\"" + text + "\":\"" + text + "\"}";
        auto change = parse_native_line(with_field(R"("new": )" + row));
        ASSERT_TRUE(change) << change.error().message << " for " << row;
        EXPECT_EQ(change->new_row, row);
      }
      for (const char* special : {"\\q", "\\u12g4", "\\U0041", "\\'"}) {
        const std::string text = with(special);
        EXPECT_EQ(parse_error(with_field("\"new\": {\"" + text + "\": 1}")), bad_string) << text;
        EXPECT_EQ(parse_error(with_field("\"new\": {\"k\": \"" + text + "\"}")), bad_string)
            << text;
        EXPECT_EQ(parse_error(with_field("\"" + text + "\": 1")), bad_string) << text;
      }
      const std::string control = with("\x01");
      EXPECT_EQ(parse_error(with_field("\"new\": {\"k\": \"" + control + "\"}")).substr(0, 14),
                "invalid JSON: ")
          << control;
    }
  }
}

// Reads run a few bytes past a line's last string, into the padding, whose bytes must not count.
TEST(ParseNativeLine, PaddingLookingLikeStringContentDoesNotMatter) {
  const std::string line = with_field(R"("key": {"s": "ab"}, "new": {"id": 1, "t": "\u00e9c"})");
  for (char filler : {'"', '\\', '\x01', '}', ',', ' '}) {
    const std::string padded = line + std::string(kNativeLinePadding, filler);
    auto change = parse_native_line_padded(std::string_view(padded.data(), line.size()));
    ASSERT_TRUE(change) << change.error().message << " with filler " << int(filler);
    EXPECT_EQ(change->key, R"({"s":"ab"})");
    EXPECT_EQ(change->new_row, R"({"id":1,"t":"\u00e9c"})");
  }
}

// Lines without backslashes and control characters take a path of their own, which copies a
// compact row image as it stands and minifies any other: a space anywhere between tokens, in the
// row or right after it, must give the same compact text, and spaces in strings must stay.
TEST(ParseNativeLine, PlainRowImagesCompactWhateverTheSpacing) {
  const std::string row =
      R"({"a b":[1,{"b":null},[],"x , y"],"c":{"d":"{ } [ ] : ,","e":-1.5e3},"f":true,"g":{},)"
      R"("h":[[false]],"i":" ","j":0})";
  std::vector<std::size_t> boundaries;
  bool in_string = false;
  for (std::size_t i = 1; i <= row.size(); ++i) {
    const char before = row[i - 1];
    if (before == '"') in_string = !in_string;
    const bool punctuation_around =
        std::string_view("{}[]:,\"").find(before) != std::string::npos ||
        (i < row.size() && std::string_view("{}[]:,\"").find(row[i]) != std::string::npos);
    if (!in_string && punctuation_around) boundaries.push_back(i);
  }
  ASSERT_GT(boundaries.size(), 40u);
  for (std::size_t at : boundaries) {
    const std::string spaced = row.substr(0, at) + ' ' + row.substr(at);
    for (const std::string field : {"key", "old", "new"}) {
      auto change =
          parse_native_line(R"({"lsn":1,"timestamp":5,"entity":"t","operation":"update",")" +
                            field + "\":" + spaced + "}");
      ASSERT_TRUE(change) << change.error().message << " for " << spaced;
      const std::string& image = field == "key"   ? change->key
                                 : field == "old" ? change->old_row
                                                  : change->new_row;
      EXPECT_EQ(image, row) << spaced;
    }
  }
  auto change = parse_native_line(with_field(R"("new": )" + row));
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->new_row, row);
  for (const char* empty : {"{}", "{ }", "{  }"}) {
    change = parse_native_line(with_field(std::string(R"("new":)") + empty));
    ASSERT_TRUE(change) << change.error().message;
    EXPECT_EQ(change->new_row, "{}") << empty;
  }
}

// Whether a line is plain is decided eight bytes at a time, the last word's padding bytes masked
// out: a backslash or a control character must count at every offset, and padding bytes must not.
TEST(ParseNativeLine, PlainLineDetectionAtEveryOffset) {
  const std::string bad_string =
      "invalid JSON: invalid escape or unescaped control character in a string";
  for (std::size_t pad = 0; pad <= 24; ++pad) {
    const std::string head =
        R"({"lsn":1,"timestamp":1,"operation":"insert","p":")" + std::string(pad, 'a') + "\",";
    auto change = parse_native_line(head + R"("entity":"\u00e9"})");
    ASSERT_TRUE(change) << change.error().message;
    EXPECT_EQ(change->entity, "é") << pad;
    // simdjson's first stage already rejects raw control characters, with a message of its own.
    EXPECT_EQ(parse_error(head + "\"entity\":\"e\",\"new\":{\"k\":\"a\x01\"}}").substr(0, 14),
              "invalid JSON: ")
        << pad;
    EXPECT_EQ(parse_error(head + "\"entity\":\"e\",\"new\":{\"k\":\"a\\x\"}}"), bad_string) << pad;
    const std::string plain = head + R"("entity":"e","new":{"k":"a"}})";
    for (char filler : {'\\', '\x01', '"'}) {
      const std::string padded = plain + std::string(kNativeLinePadding, filler);
      change = parse_native_line_padded(std::string_view(padded.data(), plain.size()));
      ASSERT_TRUE(change) << change.error().message;
      EXPECT_EQ(change->new_row, R"({"k":"a"})");
    }
  }
}

// Top-level fields are recognised from their raw key bytes: a name must match whole.
TEST(ParseNativeLine, FieldNamesMatchWhole) {
  auto change = parse_native_line(
      R"({"lsnx":7,"ls":8,"sourcex":1,"s":2,"tx":3,"txidd":4,"keys":5,"o":6,"olds":7,"ne":8,)"
      R"("unchange":9,"lsn":1,"timestamp":1,"entity":"e","operation":"insert","new":{"a":1}})");
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->lsn, 1u);
  EXPECT_EQ(change->source, "");
  EXPECT_FALSE(change->txid.has_value());
  EXPECT_EQ(change->key, "{}");
  EXPECT_EQ(change->new_row, R"({"a":1})");
  EXPECT_EQ(parse_error(with_field(R"("new":{},"new":null)")), "duplicate \"new\"");
  EXPECT_EQ(parse_error(with_field(R"("seq":1,"seq":1)")), "duplicate \"seq\"");
}

// In a plain line, top-level strings are taken from their raw bytes, spaces around them aside.
TEST(ParseNativeLine, PlainTopLevelStrings) {
  auto change = parse_native_line(
      R"({ "lsn" : 3 , "timestamp" : 1 , "entity" : "a b.c d" , "source" : " s " , )"
      R"("operation" : "delete" , "txid" : null , "seq" : 2 })");
  ASSERT_TRUE(change) << change.error().message;
  EXPECT_EQ(change->entity, "a b.c d");
  EXPECT_EQ(change->source, " s ");
  EXPECT_EQ(change->operation, Operation::kDelete);
  EXPECT_EQ(change->seq, 2u);
  EXPECT_FALSE(change->txid.has_value());
  EXPECT_EQ(parse_error(with_field(R"("txid":"1")")), "\"txid\" must be an unsigned integer");
  EXPECT_EQ(parse_error(with_field(R"("seq":-1)")), "\"seq\" must be an unsigned integer");
  EXPECT_EQ(parse_error(with_field(R"("seq":1.5)")), "\"seq\" must be an unsigned integer");
  EXPECT_EQ(parse_error(with_field(R"("txid":nul)")), "invalid JSON: unexpected token nul");
}

TEST(Rfc3339, ParsesValidForms) {
  EXPECT_EQ(parse_rfc3339_us("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339_us("1970-01-01t00:00:01z"), 1000000);
  EXPECT_EQ(parse_rfc3339_us("1970-01-01 00:00:00.5Z"), 500000);
  EXPECT_EQ(parse_rfc3339_us("2025-11-21T10:00:00.123456Z"), 1763719200123456);
  EXPECT_EQ(parse_rfc3339_us("2025-11-21T10:00:00.123456789Z"), 1763719200123456);
  EXPECT_EQ(parse_rfc3339_us("2025-11-21T11:00:00+01:00"), 1763719200000000);
  EXPECT_EQ(parse_rfc3339_us("2025-11-21T05:30:00-04:30"), 1763719200000000);
  EXPECT_EQ(parse_rfc3339_us("2024-02-29T00:00:00Z"), 1709164800000000);
  EXPECT_EQ(parse_rfc3339_us("2000-03-01T00:00:00Z"), 951868800000000);
  EXPECT_EQ(parse_rfc3339_us("1969-12-31T23:59:59Z"), -1000000);
  EXPECT_EQ(parse_rfc3339_us("1900-01-01T00:00:00Z"), -2208988800000000);
  EXPECT_EQ(parse_rfc3339_us("2016-12-31T23:59:60Z"), 1483228800000000);
}

TEST(Rfc3339, RejectsInvalidForms) {
  for (const char* text : {"",
                           "2025-11-21",
                           "2025-11-21T10:00:00",
                           "2025-11-21T10:00Z",
                           "2025-11-21X10:00:00Z",
                           "2025-00-21T10:00:00Z",
                           "2025-13-21T10:00:00Z",
                           "2025-02-29T10:00:00Z",
                           "1900-02-29T10:00:00Z",
                           "2025-04-31T10:00:00Z",
                           "2025-11-21T24:00:00Z",
                           "2025-11-21T10:60:00Z",
                           "2025-11-21T10:00:61Z",
                           "2025-11-21T10:00:00.Z",
                           "2025-11-21T10:00:00+1:00",
                           "2025-11-21T10:00:00+01:60",
                           "2025-11-21T10:00:00+0100",
                           "2025-11-21T10:00:00Zjunk",
                           "25-11-21T10:00:00Z",
                           "2025-1a-21T10:00:00Z"}) {
    EXPECT_FALSE(parse_rfc3339_us(text).has_value()) << text;
  }
}

}  // namespace
}  // namespace cdcd
