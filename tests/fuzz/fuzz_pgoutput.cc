// libFuzzer target: the PostgreSQL source's pgoutput decoding — the replication protocol's
// CopyData framing, the pgoutput message parsers and the ChangeDecoder turning a stream of
// Relation, Type, Insert, Update, Delete and Truncate messages into Changes.
//
// Input: a sequence of messages, each a 2-byte big-endian length and that many bytes (the seed
// corpus holds streams captured from PostgreSQL 15; see README.md). Decoding reads nothing but the
// stream: types map by OID alone, keys are the Relation message's flagged columns.
//
// Besides memory errors and undefined behaviour, it checks that rows whose columns all have
// escaping JSON mappings (strings, bytea, bool and arrays of them) are valid JSON whatever the
// bytes: those mappings must not trust the text. Numbers, json and date/time values are passed
// through as PostgreSQL writes them, so arbitrary bytes there can make invalid JSON by design;
// so can invalid UTF-8, which a database in UTF8 encoding never sends (a SQL_ASCII one can).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "sources/postgres/pgoutput.h"
#include "sources/postgres/relation_cache.h"
#include "tests/fuzz/json_grammar.h"

namespace {

using cdcd::postgres::ByteReader;
using cdcd::postgres::Relation;
using cdcd::postgres::TypeInfo;
using cdcd::postgres::ValueKind;

bool escapes_any_text(const TypeInfo& type) {
  switch (type.kind) {
    case ValueKind::kString:
    case ValueKind::kBytea:
    case ValueKind::kBool:
      return true;
    case ValueKind::kArray:
      return type.element == nullptr || escapes_any_text(*type.element);
    default:
      return false;
  }
}

bool escapes_any_text(const Relation& relation) {
  for (const auto& column : relation.columns) {
    if (!escapes_any_text(*column.type)) return false;
  }
  return true;
}

void expect_json(const char* what, const std::string& text) {
  if (text.empty() || cdcd::fuzz::JsonGrammar::accepts(text, /*check_utf8=*/false)) return;
  std::fprintf(stderr, "%s is not valid JSON: %s\n", what, text.c_str());
  std::abort();
}

// The framing and header parsers see every message too: they run on the same untrusted bytes.
void parse_headers(std::string_view message) {
  (void)cdcd::postgres::parse_xlog_data(message);
  (void)cdcd::postgres::parse_keepalive(message);
  switch (message.front()) {
    case 'B':
      (void)cdcd::postgres::parse_begin(message);
      break;
    case 'C':
      (void)cdcd::postgres::parse_commit(message);
      break;
    case 'Y':
      (void)cdcd::postgres::parse_type(message);
      break;
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  cdcd::postgres::ChangeDecoder decoder;
  ByteReader input(std::string_view(reinterpret_cast<const char*>(data), size));
  std::vector<cdcd::Change> changes;
  while (!input.at_end()) {
    std::uint16_t length = input.u16();
    std::string_view message = input.bytes(length);
    if (!input.ok()) break;
    if (message.empty()) continue;
    parse_headers(message);
    changes.clear();
    if (!decoder.decode(message, true, changes)) continue;
    if (message.front() != 'I' && message.front() != 'U' && message.front() != 'D') continue;
    ByteReader header(message);
    header.u8();
    const Relation* relation = decoder.relation(header.u32());
    if (relation == nullptr || !escapes_any_text(*relation)) continue;
    for (const auto& change : changes) {
      expect_json("key", change.key);
      expect_json("old row", change.old_row);
      expect_json("new row", change.new_row);
    }
  }
  return 0;
}
