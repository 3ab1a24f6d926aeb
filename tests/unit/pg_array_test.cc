// PostgreSQL array values (text output, as pgoutput and the snapshot send them) into JSON, and the
// type table that decides which OIDs are arrays. Inputs are what PostgreSQL 15 prints for them
// with cdcd's session settings (DateStyle=ISO, TimeZone=UTC, bytea_output=hex).
#include <string>
#include <string_view>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sources/postgres/relation_cache.h"
#include "sources/postgres/value_json.h"

namespace cdcd::postgres {
namespace {

using nlohmann::json;

std::string to_json(std::uint32_t type_oid, std::string_view text) {
  std::string out;
  append_json_value(out, type_of_oid(type_oid), text);
  return out;
}

// Names for the OIDs used below (pg_type.dat).
constexpr std::uint32_t kInt4Array = 1007;
constexpr std::uint32_t kInt8Array = 1016;
constexpr std::uint32_t kTextArray = 1009;
constexpr std::uint32_t kBoolArray = 1000;
constexpr std::uint32_t kFloat8Array = 1022;
constexpr std::uint32_t kByteaArray = 1001;
constexpr std::uint32_t kInetArray = 1041;
constexpr std::uint32_t kPointArray = 1017;
constexpr std::uint32_t kMoneyArray = 791;
constexpr std::uint32_t kInt4RangeArray = 3905;
constexpr std::uint32_t kUuidArray = 2951;
constexpr std::uint32_t kDateArray = 1182;
constexpr std::uint32_t kTimestampArray = 1115;
constexpr std::uint32_t kTimestamptzArray = 1185;
constexpr std::uint32_t kTimetzArray = 1270;
constexpr std::uint32_t kIntervalArray = 1187;
constexpr std::uint32_t kJsonbArray = 3807;
constexpr std::uint32_t kBoxArray = 1020;

TEST(PgArray, IntegersWithNulls) {
  EXPECT_EQ(to_json(kInt4Array, "{1,NULL,3}"), "[1,null,3]");
  EXPECT_EQ(to_json(kInt4Array, "{}"), "[]");
}

TEST(PgArray, NestedDimensions) {
  EXPECT_EQ(to_json(kInt8Array, "{{1,2},{3,4}}"), "[[1,2],[3,4]]");
  EXPECT_EQ(to_json(kInt4Array, "{{{1},{2}},{{3},{4}}}"), "[[[1],[2]],[[3],[4]]]");
}

TEST(PgArray, QuotingEscapesAndTheWordNull) {
  // array['', ' x ', 'NULL', 'a\b', 'c"d', '{}', 'e,f', '[x]']
  EXPECT_EQ(json::parse(to_json(kTextArray, R"({""," x ","NULL","a\\b","c\"d","{}","e,f",[x]})")),
            json({"", " x ", "NULL", "a\\b", "c\"d", "{}", "e,f", "[x]"}));
  // Only an unquoted NULL, in any case, is SQL NULL.
  EXPECT_EQ(to_json(kTextArray, "{null,Null,\"null\"}"), R"([null,null,"null"])");
  EXPECT_EQ(to_json(kTextArray, R"({N\ULL})"), R"(["NULL"])");
}

TEST(PgArray, WhatArrayInputAcceptsBeyondOutput) {
  EXPECT_EQ(to_json(kTextArray, " { a b , \"c\" ,d } "), R"(["a b","c","d"])");
  EXPECT_EQ(to_json(kTextArray, R"({a\,b})"), R"(["a,b"])");
}

TEST(PgArray, ElementsFollowTheElementTypesMapping) {
  EXPECT_EQ(to_json(kBoolArray, "{t,f}"), "[true,false]");
  EXPECT_EQ(to_json(kFloat8Array, "{1.5,NaN,-Infinity}"), R"([1.5,"NaN","-Infinity"])");
  EXPECT_EQ(to_json(kByteaArray, R"({"\\x00ff"})"), R"(["AP8="])");
  EXPECT_EQ(to_json(kDateArray, "{2024-02-29,infinity}"), R"(["2024-02-29","infinity"])");
  EXPECT_EQ(to_json(kTimestampArray, R"({"2024-01-01 00:00:00"})"), R"(["2024-01-01T00:00:00"])");
  EXPECT_EQ(to_json(kTimestamptzArray, R"({"2024-02-29 11:14:15+00"})"),
            R"(["2024-02-29T11:14:15+00:00"])");
  EXPECT_EQ(to_json(kTimetzArray, "{10:00:00+05:30}"), R"(["10:00:00+05:30"])");
  EXPECT_EQ(to_json(kIntervalArray, "{P1D}"), R"(["P1D"])");
  EXPECT_EQ(to_json(kJsonbArray, R"({"{\"a\": [1, 2]}","\"s\"","null",NULL})"),
            R"([{"a":[1,2]},"s",null,null])");
}

TEST(PgArray, BuiltInArraysOutsideTheCommonTypes) {
  EXPECT_EQ(to_json(kInetArray, "{10.0.0.1/8,NULL}"), R"(["10.0.0.1/8",null])");
  EXPECT_EQ(to_json(kPointArray, R"x({"(1,2)","(3,4)"})x"), R"x(["(1,2)","(3,4)"])x");
  EXPECT_EQ(to_json(kMoneyArray, R"({$1.50,"$1,000.00"})"), R"(["$1.50","$1,000.00"])");
  EXPECT_EQ(to_json(kInt4RangeArray, R"x({"[1,5)",empty})x"), R"x(["[1,5)","empty"])x");
  EXPECT_EQ(to_json(kUuidArray, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
            R"(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"])");
  // box is the one built-in type whose arrays use ';' between elements.
  EXPECT_EQ(to_json(kBoxArray, "{(1,1),(0,0);(3,3),(2,2)}"), R"x(["(1,1),(0,0)","(3,3),(2,2)"])x");
}

// A JSON array cannot say where its index starts: such an array keeps its text form whole.
TEST(PgArray, LowerBoundsOtherThanOneKeepTheTextForm) {
  EXPECT_EQ(to_json(kInt4Array, "[2:3]={1,2}"), R"("[2:3]={1,2}")");
  EXPECT_EQ(to_json(kInt4Array, "[0:1][1:1]={{1},{2}}"), R"("[0:1][1:1]={{1},{2}}")");
}

TEST(PgArray, MalformedTextKeepsTheTextForm) {
  for (std::string_view text : {"{1,2", "{1,,2}", "{1,{2}}", "{{1},2}", "{\"a}", "{a\\", "1,2",
                                "{1}x", "{}}", "{{{{{{{1}}}}}}}"}) {
    std::string out = to_json(kInt4Array, text);
    std::string expected;
    append_json_string(expected, text);
    EXPECT_EQ(out, expected) << text;
  }
}

TEST(PgTypeTable, EveryArrayOfPgTypeDatIsAnArray) {
  // int2vector and oidvector print "1 2", not an array literal: they stay text.
  EXPECT_EQ(to_json(22, "1 2"), R"("1 2")");
  EXPECT_EQ(to_json(1006, R"({"1 2","3"})"), R"(["1 2","3"])");
  int arrays = 0;
  for (std::uint32_t oid = 0; oid < 10000; ++oid) {
    const TypeInfo& type = type_of_oid(oid);
    if (type.kind != ValueKind::kArray) continue;
    ++arrays;
    ASSERT_NE(type.element, nullptr) << oid;
    EXPECT_NE(type.element->kind, ValueKind::kArray) << oid;
  }
  // PostgreSQL 15 has 82 array types with OIDs below 10000 (arrays of catalog row types of
  // shared catalogs get theirs above, at initdb, and are not fixed).
  EXPECT_EQ(arrays, 82);
}

TEST(PgTypeTable, TypesNotBuiltInAreTheirTextForm) {
  // A domain over int4, an array of an enum: OIDs of one's own say nothing about the type.
  EXPECT_EQ(to_json(16390, "7"), R"("7")");
  EXPECT_EQ(to_json(16391, "{sad,happy}"), R"("{sad,happy}")");
  // Built-in types without a mapping of their own.
  EXPECT_EQ(to_json(869, "10.0.0.1/8"), R"("10.0.0.1/8")");
  EXPECT_EQ(to_json(1700, "12.50"), R"("12.50")");
  EXPECT_EQ(to_json(4451, "{[1,3), [5,7)}"), R"x("{[1,3), [5,7)}")x");  // int4multirange
}

}  // namespace
}  // namespace cdcd::postgres
