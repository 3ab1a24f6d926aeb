// libFuzzer target: one line of the native JSONL change log (the jsonl source's line -> Change).
//
// Besides memory errors and undefined behaviour, it checks what sinks rely on: a line the parser
// accepts holds row images that are valid JSON, every format encodes it as valid JSON, and the
// native encoding parses back to the same change (a file sink's output can be replayed).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "daemon/format/format.h"
#include "tests/fuzz/json_grammar.h"

namespace {

[[noreturn]] void die(const char* what, std::string_view text) {
  std::fprintf(stderr, "%s: %.*s\n", what, static_cast<int>(text.size()), text.data());
  std::abort();
}

void expect_json(const char* what, std::string_view text, bool may_be_empty) {
  if (text.empty() && may_be_empty) return;
  if (!cdcd::fuzz::JsonGrammar::accepts(text)) die(what, text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  auto change = cdcd::parse_native_line(line);
  if (!change) return 0;
  expect_json("key is not valid JSON", change->key, false);
  expect_json("old is not valid JSON", change->old_row, true);
  expect_json("new is not valid JSON", change->new_row, true);

  cdcd::EncodeContext context{"fuzz", "jsonl", 0};
  std::string native;
  cdcd::encode_change(cdcd::Format::kNative, *change, context, native);
  expect_json("native encoding is not valid JSON", native, false);
  for (cdcd::Format format : {cdcd::Format::kDebezium, cdcd::Format::kMongodb}) {
    std::string encoded;
    cdcd::encode_change(format, *change, context, encoded);
    expect_json("encoding is not valid JSON", encoded, false);
  }

  auto again = cdcd::parse_native_line(native);
  if (!again) die(("the native encoding does not parse: " + again.error().message).c_str(), native);
  std::string native_again;
  cdcd::encode_change(cdcd::Format::kNative, *again, context, native_again);
  if (native_again != native) die("the native encoding changed on a round trip", native_again);
  return 0;
}
