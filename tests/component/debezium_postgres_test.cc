// Issue 13: the `debezium` format as Debezium's PostgreSQL connector writes it, checked value by
// value against postgresql.adoc ("Data type mappings") on changes read from a real PostgreSQL 15.
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "daemon/format/debezium_transactions.h"
#include "daemon/format/format.h"
#include "sources/postgres/postgres_source.h"
#include "tests/support/postgres_source_fixture.h"

namespace cdcd::postgres {
namespace {

using nlohmann::json;
using Options = DebeziumOptions;

using test::RecordingEmitter;

constexpr std::int64_t kProcessedAtUs = 1700000000123456;

json debezium(const Change& change, const Options& options = {}) {
  std::string line;
  encode_change(Format::kDebezium, change,
                EncodeContext{"pg", "postgres", kProcessedAtUs, &options}, line);
  return json::parse(line);
}

json debezium_key(const Change& change, const Options& options = {}) {
  std::string line;
  encode_key(Format::kDebezium, change, change.key,
             EncodeContext{"pg", "postgres", kProcessedAtUs, &options}, line);
  return json::parse(line);
}

// The schema of field `name` in the `after` struct of an envelope schema.
json after_field_schema(const json& envelope, const std::string& name) {
  for (const auto& field : envelope["schema"]["fields"]) {
    if (field["field"] != "after") continue;
    for (const auto& column : field["fields"]) {
      if (column["field"] == name) return column;
    }
  }
  return json();
}

class DebeziumPostgresTest : public test::PostgresSourceFixture {
 protected:
  static void SetUpTestSuite() { start_server({"wal_sender_timeout = 5s"}); }

  // Streams `statements` (one transaction each) and returns the one change of `entity`.
  Change stream_one(const std::string& setup, const std::vector<std::string>& statements,
                    const std::string& entity) {
    sql(setup);
    auto& source = start_source(options());
    for (const auto& statement : statements) sql(statement);
    RecordingEmitter out;
    EXPECT_TRUE(read_transactions(source, out, statements.size()));
    auto changes = out.changes_of(entity);
    EXPECT_EQ(changes.size(), 1u);
    return changes.empty() ? Change{} : changes[0];
  }

  // "<type> <logical name>" of a column of the `after` struct, with schemas: true.
  static std::string logical_type(const Change& change, const std::string& column,
                                  Options options = {}) {
    options.schemas = true;
    json schema = after_field_schema(debezium(change, options), column);
    return schema.value("type", "") + " " + schema.value("name", "");
  }
};

TEST_F(DebeziumPostgresTest, NumericTypesUnderEachDecimalMode) {
  Change change = stream_one(
      "CREATE TABLE nums (id int PRIMARY KEY, n numeric(10,2), v numeric, neg numeric(6,3), "
      "nnan numeric, m money, i2 int2, i4 int4, i8 int8, f4 real, f8 double precision, "
      "f8nan double precision, f8inf double precision, b bool)",
      {"INSERT INTO nums VALUES (1, 1234.50, 3.14159, -1.5, 'NaN', 1234.56, 32767, -5, "
       "9007199254740993, 1.5, 2.25, 'NaN', '-Infinity', true)"},
      "public.nums");
  ASSERT_NE(change.schema, nullptr);
  json after = debezium(change)["after"];
  // precise (default): Decimal bytes (unscaled, big-endian two's complement) in base64.
  EXPECT_EQ(after["n"], "AeI6");                                   // 123450, scale 2
  EXPECT_EQ(after["v"], json({{"scale", 5}, {"value", "BMsv"}}));  // VariableScaleDecimal
  EXPECT_EQ(after["neg"], "+iQ=");                                 // -1500, scale 3
  EXPECT_EQ(after["nnan"], nullptr);
  EXPECT_EQ(after["m"], "AeJA");  // 123456, scale money.fraction.digits = 2
  EXPECT_EQ(after["i2"], 32767);
  EXPECT_EQ(after["i4"], -5);
  EXPECT_EQ(after["i8"].get<std::int64_t>(), 9007199254740993);
  EXPECT_EQ(after["f4"], 1.5);
  EXPECT_EQ(after["f8"], 2.25);
  EXPECT_EQ(after["f8nan"], "NaN");
  EXPECT_EQ(after["f8inf"], "-Infinity");
  EXPECT_EQ(after["b"], true);

  Options as_double;
  as_double.decimal = Options::DecimalMode::kDouble;
  json doubles = debezium(change, as_double)["after"];
  EXPECT_EQ(doubles["n"], 1234.5);
  EXPECT_EQ(doubles["v"], 3.14159);
  EXPECT_EQ(doubles["neg"], -1.5);
  EXPECT_EQ(doubles["nnan"], "NaN");
  EXPECT_EQ(doubles["m"], 1234.56);

  Options as_string;
  as_string.decimal = Options::DecimalMode::kString;
  json strings = debezium(change, as_string)["after"];
  EXPECT_EQ(strings["n"], "1234.50");
  EXPECT_EQ(strings["v"], "3.14159");
  EXPECT_EQ(strings["neg"], "-1.500");
  EXPECT_EQ(strings["nnan"], "NAN");
  EXPECT_EQ(strings["m"], "1234.56");

  Options money_digits;
  money_digits.money_fraction_digits = 3;
  EXPECT_EQ(debezium(change, money_digits)["after"]["m"], "EtaA");  // 1234560, scale 3

  Options schemas;
  schemas.schemas = true;
  json envelope = debezium(change, schemas);
  EXPECT_EQ(envelope["payload"]["after"], after);
  EXPECT_EQ(
      after_field_schema(envelope, "n"),
      json::parse(R"({"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal",
              "version":1,"parameters":{"scale":"2","connect.decimal.precision":"10"},"field":"n"})"));
  EXPECT_EQ(after_field_schema(envelope, "v")["name"], "io.debezium.data.VariableScaleDecimal");
  EXPECT_EQ(after_field_schema(envelope, "v")["type"], "struct");
  EXPECT_EQ(after_field_schema(envelope, "m")["parameters"]["scale"], "2");
  EXPECT_EQ(after_field_schema(envelope, "i2")["type"], "int16");
  EXPECT_EQ(after_field_schema(envelope, "i4")["type"], "int32");
  EXPECT_EQ(after_field_schema(envelope, "i8")["type"], "int64");
  EXPECT_EQ(after_field_schema(envelope, "f4")["type"], "float");
  EXPECT_EQ(after_field_schema(envelope, "f8")["type"], "double");
  EXPECT_EQ(after_field_schema(envelope, "b")["type"], "boolean");
  EXPECT_EQ(after_field_schema(envelope, "id")["optional"], false);  // a key column
  Options double_schemas = as_double;
  double_schemas.schemas = true;
  EXPECT_EQ(after_field_schema(debezium(change, double_schemas), "n")["type"], "double");
  EXPECT_FALSE(after_field_schema(debezium(change, double_schemas), "n").contains("name"));
  Options string_schemas = as_string;
  string_schemas.schemas = true;
  EXPECT_EQ(after_field_schema(debezium(change, string_schemas), "m")["type"], "string");
}

TEST_F(DebeziumPostgresTest, TemporalTypesUnderEachTimeAndIntervalMode) {
  Change change = stream_one(
      "CREATE TABLE times (id int PRIMARY KEY, d date, dbc date, dinf date, t time, t3 time(3), "
      "ttz timetz, ts timestamp, ts3 timestamp(3), tsinf timestamp, tsninf timestamp, "
      "tstz timestamptz, tstz3 timestamptz(3), tstzinf timestamptz, iv interval, ivneg interval)",
      {"INSERT INTO times VALUES (1, '2024-02-29', '0044-03-15 BC', 'infinity', '13:14:15.5', "
       "'13:14:15.5', '13:14:15.5+02', '2018-06-20 15:13:16.945104', '2018-06-20 15:13:16.945', "
       "'infinity', '-infinity', '2024-02-29 13:14:15.5+02', '2024-02-29 13:14:15.5+02', "
       "'-infinity', '1 year 2 mons 3 days 04:05:06.78', '-1 day -00:00:01.5')"},
      "public.times");
  json after = debezium(change)["after"];
  EXPECT_EQ(after["d"], 19782);            // io.debezium.time.Date: days since the epoch
  EXPECT_EQ(after["dbc"], -735160);        // 44 BC is the proleptic year -43
  EXPECT_EQ(after["dinf"], -2147472692);   // the JDBC driver's infinite date, as Debezium sends it
  EXPECT_EQ(after["t"], 47655500000);      // MicroTime
  EXPECT_EQ(after["t3"], 47655500);        // time(3): io.debezium.time.Time, milliseconds
  EXPECT_EQ(after["ttz"], "11:14:15.5Z");  // ZonedTime, in GMT
  // The documentation's own example: "2018-06-20 15:13:16.945104" is 1529507596945104.
  EXPECT_EQ(after["ts"], 1529507596945104);
  EXPECT_EQ(after["ts3"], 1529507596945);  // timestamp(3): io.debezium.time.Timestamp
  EXPECT_EQ(after["tsinf"], 9223372036825200000);
  EXPECT_EQ(after["tsninf"], -9223372036832400000);
  EXPECT_EQ(after["tstz"], "2024-02-29T11:14:15.5Z");     // ZonedTimestamp, in GMT
  EXPECT_EQ(after["tstz3"], "2024-02-29T11:14:15.500Z");  // as many digits as the precision
  EXPECT_EQ(after["tstzinf"], "-infinity");
  // MicroDuration: ((1*12 + 2) * 365.25/12 + 3) days 04:05:06.78, in microseconds.
  EXPECT_EQ(after["iv"], 37091106780000);
  EXPECT_EQ(after["ivneg"], -86401500000);

  Options micro_time;
  micro_time.time_precision = Options::TimePrecisionMode::kAdaptiveTimeMicroseconds;
  json micro = debezium(change, micro_time)["after"];
  EXPECT_EQ(micro["t3"], 47655500000);
  EXPECT_EQ(micro["ts3"], 1529507596945);  // timestamps stay adaptive

  Options connect;
  connect.time_precision = Options::TimePrecisionMode::kConnect;
  json connect_after = debezium(change, connect)["after"];
  EXPECT_EQ(connect_after["d"], 19782);
  EXPECT_EQ(connect_after["t"], 47655500);
  EXPECT_EQ(connect_after["ts"], 1529507596945);
  EXPECT_EQ(connect_after["tstz"], "2024-02-29T11:14:15.5Z");

  Options interval_string;
  interval_string.interval = Options::IntervalMode::kString;
  json intervals = debezium(change, interval_string)["after"];
  EXPECT_EQ(intervals["iv"], "P1Y2M3DT4H5M6.78S");
  EXPECT_EQ(intervals["ivneg"], "P0Y0M-1DT0H0M-1.5S");

  Options schemas;
  schemas.schemas = true;
  json envelope = debezium(change, schemas);
  auto logical = [&](const std::string& field) {
    json schema = after_field_schema(envelope, field);
    return schema["type"].get<std::string>() + " " + schema.value("name", "");
  };
  EXPECT_EQ(logical("d"), "int32 io.debezium.time.Date");
  EXPECT_EQ(logical("t"), "int64 io.debezium.time.MicroTime");
  EXPECT_EQ(logical("t3"), "int32 io.debezium.time.Time");
  EXPECT_EQ(logical("ttz"), "string io.debezium.time.ZonedTime");
  EXPECT_EQ(logical("ts"), "int64 io.debezium.time.MicroTimestamp");
  EXPECT_EQ(logical("ts3"), "int64 io.debezium.time.Timestamp");
  EXPECT_EQ(logical("tstz"), "string io.debezium.time.ZonedTimestamp");
  EXPECT_EQ(logical("iv"), "int64 io.debezium.time.MicroDuration");
  connect.schemas = true;
  envelope = debezium(change, connect);
  EXPECT_EQ(logical("d"), "int32 org.apache.kafka.connect.data.Date");
  EXPECT_EQ(logical("t"), "int32 org.apache.kafka.connect.data.Time");
  EXPECT_EQ(logical("ts"), "int64 org.apache.kafka.connect.data.Timestamp");
  interval_string.schemas = true;
  envelope = debezium(change, interval_string);
  EXPECT_EQ(logical("iv"), "string io.debezium.time.Interval");
}

TEST_F(DebeziumPostgresTest, BinaryTextJsonNetworkArrayEnumHstoreAndPoint) {
  Change change = stream_one(
      "CREATE EXTENSION hstore; CREATE TYPE mood AS ENUM ('sad', 'happy');"
      "CREATE TABLE misc (id int PRIMARY KEY, by bytea, u uuid, j json, jb jsonb, x xml, "
      "ip inet, cidr cidr, mac macaddr, c char(3), vc varchar(10), tx text, e mood, "
      "arr int[], narr numeric(5,2)[], tarr text[], p point, h hstore)",
      {"INSERT INTO misc VALUES (1, '\\x0001ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', "
       "'{\"a\": [1, 2]}', '{\"b\": {\"c\": null}}', '<r>x</r>', '10.0.0.1/8', '10.0.0.0/8', "
       "'08:00:2b:01:02:03', 'ab', 'héllo', 'line\nbreak', 'happy', '{1,2,NULL}', "
       "'{1.50,2.25}', '{\"a,b\",NULL}', '(1.5,2.5)', 'a=>1, \"b c\"=>NULL')"},
      "public.misc");
  json after = debezium(change)["after"];
  EXPECT_EQ(after["by"], "AAH/");  // bytes: JsonConverter writes them as base64
  EXPECT_EQ(after["u"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  // json/jsonb: a string holding the document (io.debezium.data.Json).
  ASSERT_TRUE(after["j"].is_string());
  EXPECT_EQ(json::parse(after["j"].get<std::string>()), json::parse(R"({"a":[1,2]})"));
  ASSERT_TRUE(after["jb"].is_string());
  EXPECT_EQ(json::parse(after["jb"].get<std::string>()), json::parse(R"({"b":{"c":null}})"));
  EXPECT_EQ(after["x"], "<r>x</r>");
  EXPECT_EQ(after["ip"], "10.0.0.1/8");
  EXPECT_EQ(after["cidr"], "10.0.0.0/8");
  EXPECT_EQ(after["mac"], "08:00:2b:01:02:03");
  EXPECT_EQ(after["c"], "ab ");
  EXPECT_EQ(after["vc"], "héllo");
  EXPECT_EQ(after["tx"], "line\nbreak");
  EXPECT_EQ(after["e"], "happy");
  EXPECT_EQ(after["arr"], json::parse("[1,2,null]"));
  EXPECT_EQ(after["narr"], json::parse(R"(["AJY=","AOE="])"));  // Decimal elements, scale 2
  EXPECT_EQ(after["tarr"], json::parse(R"(["a,b",null])"));
  EXPECT_EQ(after["p"], json::parse(R"({"x":1.5,"y":2.5,"wkb":"AQEAAAAAAAAAAAD4PwAAAAAAAARA",
                                        "srid":null})"));
  ASSERT_TRUE(after["h"].is_string());  // hstore.handling.mode=json
  EXPECT_EQ(json::parse(after["h"].get<std::string>()), json::parse(R"({"a":"1","b c":null})"));

  Options base64;
  base64.binary = Options::BinaryMode::kBase64;
  EXPECT_EQ(debezium(change, base64)["after"]["by"], "AAH/");
  Options url_safe;
  url_safe.binary = Options::BinaryMode::kBase64UrlSafe;
  EXPECT_EQ(debezium(change, url_safe)["after"]["by"], "AAH_");
  Options hex;
  hex.binary = Options::BinaryMode::kHex;
  EXPECT_EQ(debezium(change, hex)["after"]["by"], "0001ff");
  Options map;
  map.hstore = Options::HstoreMode::kMap;
  EXPECT_EQ(debezium(change, map)["after"]["h"], json::parse(R"({"a":"1","b c":null})"));

  Options schemas;
  schemas.schemas = true;
  json envelope = debezium(change, schemas);
  auto logical = [&](const std::string& field) {
    json schema = after_field_schema(envelope, field);
    return schema["type"].get<std::string>() + " " + schema.value("name", "");
  };
  EXPECT_EQ(logical("by"), "bytes ");
  EXPECT_EQ(logical("u"), "string io.debezium.data.Uuid");
  EXPECT_EQ(logical("j"), "string io.debezium.data.Json");
  EXPECT_EQ(logical("jb"), "string io.debezium.data.Json");
  EXPECT_EQ(logical("x"), "string io.debezium.data.Xml");
  EXPECT_EQ(logical("ip"), "string ");
  EXPECT_EQ(logical("h"), "string io.debezium.data.Json");
  EXPECT_EQ(logical("p"), "struct io.debezium.data.geometry.Point");
  EXPECT_EQ(logical("arr"), "array ");
  EXPECT_EQ(after_field_schema(envelope, "arr")["items"]["type"], "int32");
  EXPECT_EQ(after_field_schema(envelope, "narr")["items"]["name"],
            "org.apache.kafka.connect.data.Decimal");
  hex.schemas = true;
  envelope = debezium(change, hex);
  EXPECT_EQ(logical("by"), "string ");
  map.schemas = true;
  envelope = debezium(change, map);
  EXPECT_EQ(logical("h"), "map ");
}

// source: connector postgresql, each event's own LSN, sequence [last committed LSN, event LSN],
// ts_us/ts_ns; the change's lsn stays the commit position for checkpoints. Key and envelope
// struct names with schemas: true.
TEST_F(DebeziumPostgresTest, EnvelopeSourceBlockAndStructNames) {
  sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  auto& source = start_source(options());
  sql("INSERT INTO t VALUES (1, 'a')");
  sql("BEGIN; INSERT INTO t VALUES (2, 'b'); INSERT INTO t VALUES (3, 'c'); COMMIT");
  sql("UPDATE t SET v = 'z' WHERE id = 3");
  sql("TRUNCATE t");
  RecordingEmitter out;
  ASSERT_TRUE(read_transactions(source, out, 4));
  auto changes = out.changes_of("public.t");
  ASSERT_EQ(changes.size(), 5u);
  json truncate = debezium(changes[4]);
  EXPECT_EQ(truncate["op"], "t");
  EXPECT_EQ(truncate["before"], nullptr);
  EXPECT_EQ(truncate["after"], nullptr);
  EXPECT_EQ(truncate["source"]["table"], "t");
  // REPLICA IDENTITY DEFAULT sends no old image for an update: Debezium's before is null.
  json update = debezium(changes[3]);
  EXPECT_EQ(update["op"], "u");
  EXPECT_EQ(update["before"], nullptr);
  EXPECT_EQ(update["after"], json({{"id", 3}, {"v", "z"}}));
  json second = debezium(changes[1]);
  json third = debezium(changes[2]);
  const json& src = third["source"];
  EXPECT_EQ(src["connector"], "postgresql");
  EXPECT_EQ(src["name"], "pg");
  EXPECT_EQ(src["db"], db_);
  EXPECT_EQ(src["schema"], "public");
  EXPECT_EQ(src["table"], "t");
  EXPECT_EQ(src["snapshot"], "false");
  EXPECT_EQ(src["xmin"], nullptr);
  EXPECT_EQ(src["ts_us"], changes[2].timestamp_us);
  EXPECT_EQ(src["ts_ms"], changes[2].timestamp_us / 1000);
  EXPECT_EQ(src["ts_ns"], changes[2].timestamp_us * 1000);
  EXPECT_EQ(src["txId"], *changes[2].txid);
  // Each event of the transaction has its own LSN, below the commit's.
  const auto lsn2 = second["source"]["lsn"].get<std::uint64_t>();
  const auto lsn3 = src["lsn"].get<std::uint64_t>();
  EXPECT_LT(lsn2, lsn3);
  EXPECT_LT(lsn3, changes[2].lsn);
  EXPECT_EQ(changes[1].lsn, changes[2].lsn);
  // [last committed LSN (the first transaction's commit), this event's LSN], as strings.
  EXPECT_EQ(json::parse(src["sequence"].get<std::string>()),
            json({std::to_string(changes[0].lsn), std::to_string(lsn3)}));
  EXPECT_EQ(third["op"], "c");
  EXPECT_EQ(third["ts_ms"], kProcessedAtUs / 1000);
  EXPECT_EQ(third["ts_us"], kProcessedAtUs);
  EXPECT_EQ(third["ts_ns"], kProcessedAtUs * 1000);

  Options schemas;
  schemas.schemas = true;
  json envelope = debezium(changes[2], schemas);
  EXPECT_EQ(envelope["schema"]["name"], "pg.public.t.Envelope");
  EXPECT_EQ(envelope["schema"]["fields"][0]["name"], "pg.public.t.Value");
  EXPECT_EQ(envelope["schema"]["fields"][0]["field"], "before");
  EXPECT_EQ(envelope["schema"]["fields"][2]["name"], "io.debezium.connector.postgresql.Source");
  EXPECT_EQ(envelope["payload"]["source"]["lsn"], lsn3);
  json key = debezium_key(changes[2], schemas);
  EXPECT_EQ(key["schema"]["name"], "pg.public.t.Key");
  EXPECT_EQ(key["schema"]["fields"],
            json::parse(R"([{"type":"int32","optional":false,"field":"id"}])"));
  EXPECT_EQ(key["payload"], json({{"id", 3}}));
  Options prefixed = schemas;
  prefixed.topic_prefix = "inventory";
  EXPECT_EQ(debezium(changes[2], prefixed)["schema"]["name"], "inventory.public.t.Envelope");
  EXPECT_EQ(debezium(changes[2], prefixed)["payload"]["source"]["name"], "inventory");
}

// An enum column: io.debezium.data.Enum with its labels in sort order (not creation order) as
// `allowed`. A label added after streaming started (ALTER TYPE ... ADD VALUE: no Relation
// message) is in `allowed` of the events from then on.
TEST_F(DebeziumPostgresTest, EnumColumnsListTheirLabelsAndFollowAddedOnes) {
  sql("CREATE TYPE mood AS ENUM ('sad', 'ok'); ALTER TYPE mood ADD VALUE 'happy' BEFORE 'ok';"
      "CREATE TABLE feelings (id int PRIMARY KEY, m mood)");
  auto& source = start_source(options());
  sql("INSERT INTO feelings VALUES (1, 'happy')");
  RecordingEmitter out;
  ASSERT_TRUE(read_transactions(source, out, 1));
  sql("ALTER TYPE mood ADD VALUE 'glad'");
  sql("INSERT INTO feelings VALUES (2, 'glad')");
  sql("UPDATE feelings SET m = 'sad' WHERE id = 1");
  ASSERT_TRUE(
      poll_until(source, out, [&] { return out.changes_of("public.feelings").size() >= 3; }));
  auto changes = out.changes_of("public.feelings");
  ASSERT_EQ(changes.size(), 3u);

  EXPECT_EQ(debezium(changes[0])["after"]["m"], "happy");
  Options schemas;
  schemas.schemas = true;
  EXPECT_EQ(after_field_schema(debezium(changes[0], schemas), "m"),
            json::parse(R"({"type":"string","optional":true,"name":"io.debezium.data.Enum",
                "version":1,"parameters":{"allowed":"sad,happy,ok"},"field":"m"})"));
  EXPECT_EQ(debezium(changes[1])["after"]["m"], "glad");
  for (std::size_t i : {1u, 2u}) {
    EXPECT_EQ(after_field_schema(debezium(changes[i], schemas), "m")["parameters"]["allowed"],
              "sad,happy,ok,glad")
        << i;
  }
  EXPECT_EQ(debezium(changes[2])["after"]["m"], "sad");
}

// A domain is its base type, followed through domains over domains, with the modifier the
// domain declares (a column of a domain has none of its own).
TEST_F(DebeziumPostgresTest, DomainsAreRepresentedAsTheirBaseTypes) {
  Change change = stream_one(
      "CREATE DOMAIN amount AS numeric(10,2); CREATE DOMAIN price AS amount CHECK (VALUE >= 0);"
      "CREATE DOMAIN label AS text; CREATE DOMAIN short_label AS label;"
      "CREATE DOMAIN quantity AS int4; CREATE DOMAIN small_quantity AS quantity;"
      "CREATE DOMAIN blob AS bytea; CREATE DOMAIN flag AS bool;"
      "CREATE TABLE items (id int PRIMARY KEY, a amount, p price, l short_label, "
      "q small_quantity, bl blob, f flag)",
      {"INSERT INTO items VALUES (1, 1234.5, 3.1, 'x', 42, '\\x0001ff', true)"}, "public.items");
  json after = debezium(change)["after"];
  EXPECT_EQ(after["a"], "AeI6");  // Decimal 123450, scale 2
  EXPECT_EQ(after["p"], "ATY=");  // Decimal 310, scale 2
  EXPECT_EQ(after["l"], "x");
  EXPECT_EQ(after["q"], 42);
  EXPECT_EQ(after["bl"], "AAH/");
  EXPECT_EQ(after["f"], true);
  Options hex;
  hex.binary = Options::BinaryMode::kHex;
  EXPECT_EQ(debezium(change, hex)["after"]["bl"], "0001ff");
  Options schemas;
  schemas.schemas = true;
  const json decimal = json::parse(R"({"type":"bytes","optional":true,
      "name":"org.apache.kafka.connect.data.Decimal","version":1,
      "parameters":{"scale":"2","connect.decimal.precision":"10"}})");
  json a = after_field_schema(debezium(change, schemas), "a");
  a.erase("field");
  EXPECT_EQ(a, decimal);
  json p = after_field_schema(debezium(change, schemas), "p");
  p.erase("field");
  EXPECT_EQ(p, decimal);
  EXPECT_EQ(logical_type(change, "l"), "string ");
  EXPECT_EQ(logical_type(change, "q"), "int32 ");
  EXPECT_EQ(logical_type(change, "bl"), "bytes ");
  EXPECT_EQ(logical_type(change, "f"), "boolean ");
}

// bit(1) and varbit(1) are booleans; longer bit strings io.debezium.data.Bits: the bits as one
// number in little-endian bytes, as few as its highest set bit needs, base64 in JSON whatever
// binary.handling.mode says.
TEST_F(DebeziumPostgresTest, BitStringsAreBooleansOrDebeziumBits) {
  Change change = stream_one(
      "CREATE TABLE bits (id int PRIMARY KEY, b1 bit, b10 bit(10), b20 bit(20), zero bit(10), "
      "vb varbit, vb5 varbit(5), vb1 varbit(1))",
      {"INSERT INTO bits VALUES (1, B'1', B'1010101010', B'10000000000000000001', "
       "B'0000000000', B'101', B'10011', B'0')"},
      "public.bits");
  json after = debezium(change)["after"];
  EXPECT_EQ(after["b1"], true);
  EXPECT_EQ(after["b10"], "qgI=");  // 0x2AA: AA 02
  EXPECT_EQ(after["b20"], "AQAI");  // 0x80001: 01 00 08
  EXPECT_EQ(after["zero"], "");
  EXPECT_EQ(after["vb"], "BQ==");   // 05
  EXPECT_EQ(after["vb5"], "Ew==");  // 0x13
  EXPECT_EQ(after["vb1"], false);
  Options hex;
  hex.binary = Options::BinaryMode::kHex;
  EXPECT_EQ(debezium(change, hex)["after"]["b10"], "qgI=");
  EXPECT_EQ(logical_type(change, "b1"), "boolean ");
  EXPECT_EQ(logical_type(change, "vb1"), "boolean ");
  EXPECT_EQ(logical_type(change, "b10", hex), "bytes io.debezium.data.Bits");
  Options schemas;
  schemas.schemas = true;
  json envelope = debezium(change, schemas);
  EXPECT_EQ(after_field_schema(envelope, "b10"),
            json::parse(R"({"type":"bytes","optional":true,"name":"io.debezium.data.Bits",
                "version":1,"parameters":{"length":"10"},"field":"b10"})"));
  EXPECT_EQ(after_field_schema(envelope, "vb5")["parameters"]["length"], "5");
  // An unbounded varbit: the JDBC driver's precision for it.
  EXPECT_EQ(after_field_schema(envelope, "vb")["parameters"]["length"], "2147483647");
}

// The snapshot reads the same catalog facts as the stream: a row of each gives the same schema.
TEST_F(DebeziumPostgresTest, SnapshotRowsHaveTheStreamsColumnTypes) {
  sql("CREATE TYPE mood AS ENUM ('sad', 'happy'); CREATE DOMAIN amount AS numeric(10,2);"
      "CREATE DOMAIN price AS amount; CREATE TABLE t (id int PRIMARY KEY, m mood, p price, "
      "b bit(10), vb varbit); INSERT INTO t VALUES (1, 'sad', 1.5, B'1010101010', B'11')");
  auto opts = options();
  opts.initial_snapshot = true;
  opts.tables = {"public.t"};
  auto& source = start_source(opts);
  RecordingEmitter out;
  ASSERT_TRUE(read_transactions(source, out, 1));
  sql("INSERT INTO t VALUES (2, 'happy', 2.5, B'0000000001', B'1')");
  ASSERT_TRUE(poll_until(source, out, [&] { return out.changes_of("public.t").size() >= 2; }));
  auto changes = out.changes_of("public.t");
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].operation, Operation::kRead);
  Options schemas;
  schemas.schemas = true;
  json snapshot = debezium(changes[0], schemas);
  json streamed = debezium(changes[1], schemas);
  EXPECT_EQ(snapshot["schema"], streamed["schema"]);
  EXPECT_EQ(after_field_schema(snapshot, "m")["parameters"]["allowed"], "sad,happy");
  EXPECT_EQ(after_field_schema(snapshot, "p")["parameters"]["scale"], "2");
  EXPECT_EQ(snapshot["payload"]["after"],
            json({{"id", 1}, {"m", "sad"}, {"p", "AJY="}, {"b", "qgI="}, {"vb", "Aw=="}}));
}

// Debezium's PostgreSQL connector names a transaction "txId:LSN", the LSN being that of the
// record the id is in (PostgresTransactionMonitor takes it from the offset at each record): the
// BEGIN's is the position of the transaction's Begin message, a change's block has the change's.
// test_decoding, on a slot of its own, reports the same positions for the same messages.
TEST_F(DebeziumPostgresTest, TransactionIdsCarryThePositionOfTheirRecord) {
  sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
  const std::string oracle = "oracle_" + db_;
  sql("SELECT pg_create_logical_replication_slot('" + oracle + "', 'test_decoding')");
  auto& source = start_source(options());
  sql("BEGIN; INSERT INTO t VALUES (1, repeat('x', 10)); INSERT INTO t VALUES (2, 'y'); COMMIT");
  RecordingEmitter out;
  ASSERT_TRUE(read_transactions(source, out, 1));
  auto changes = out.changes_of("public.t");
  ASSERT_EQ(changes.size(), 2u);
  ASSERT_TRUE(changes[0].txid);
  const std::string txid = std::to_string(*changes[0].txid);
  auto position_of = [&](const std::string& condition) {
    return value("SELECT (lsn - '0/0')::bigint FROM pg_logical_slot_peek_changes('" + oracle +
                 "', NULL, NULL) WHERE xid = '" + txid + "' AND " + condition +
                 " ORDER BY lsn LIMIT 1")
        .value_or("none");
  };
  const std::string begin_lsn = position_of("data LIKE 'BEGIN%'");
  const std::string second_lsn = position_of("data LIKE '%INSERT: id[integer]:2 %'");
  sql("SELECT pg_drop_replication_slot('" + oracle + "')");

  Options options;
  options.transaction_metadata = true;
  DebeziumTransactions transactions;
  std::vector<DebeziumRecord> records;
  EncodeContext context{"pg", "postgres", kProcessedAtUs, &options};
  ASSERT_NE(transactions.next(changes[0], context, records), nullptr);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(json::parse(records[0].value)["status"], "BEGIN");
  EXPECT_EQ(json::parse(records[0].value)["id"], txid + ":" + begin_lsn);
  EXPECT_EQ(json::parse(records[0].key)["id"], txid + ":" + begin_lsn);
  const TransactionBlock* block = transactions.next(changes[1], context, records);
  ASSERT_NE(block, nullptr);
  EXPECT_EQ(std::string(block->id), txid + ":" + second_lsn);
  context.transaction = block;
  std::string line;
  encode_change(Format::kDebezium, changes[1], context, line);
  EXPECT_EQ(json::parse(line)["transaction"]["id"], txid + ":" + second_lsn);
  EXPECT_EQ(json::parse(line)["source"]["lsn"].dump(), second_lsn);
}

TEST_F(DebeziumPostgresTest, SnapshotRowsCarryFirstAndLastMarkers) {
  sql("CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a VALUES (1), (2), (3);"
      "CREATE TABLE b (id int PRIMARY KEY); INSERT INTO b VALUES (1);"
      "CREATE TABLE c (id int PRIMARY KEY);"
      "CREATE TABLE d (id int PRIMARY KEY); INSERT INTO d VALUES (1), (2)");
  auto opts = options();
  opts.initial_snapshot = true;
  opts.tables = {"public.a", "public.b", "public.c", "public.d"};
  auto& source = start_source(opts);
  RecordingEmitter out;
  ASSERT_TRUE(read_transactions(source, out, 1));
  std::vector<std::string> marks;
  for (const auto& change : out.changes()) {
    json event = debezium(change);
    EXPECT_EQ(event["op"], "r");
    marks.push_back(change.entity + ":" + event["source"]["snapshot"].get<std::string>());
  }
  EXPECT_EQ(marks, (std::vector<std::string>{
                       "public.a:first", "public.a:true", "public.a:last_in_data_collection",
                       "public.b:first_in_data_collection", "public.d:first_in_data_collection",
                       "public.d:last"}));
}

}  // namespace
}  // namespace cdcd::postgres
