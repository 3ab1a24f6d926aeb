#include "daemon/format/format.h"

#include "daemon/format/encoders.h"

namespace cdcd {

std::optional<Format> parse_format(std::string_view name) {
  for (Format format : {Format::kNative, Format::kDebezium, Format::kMongodb}) {
    if (to_string(format) == name) return format;
  }
  return std::nullopt;
}

std::string_view to_string(Format format) {
  switch (format) {
    case Format::kNative:
      return "native";
    case Format::kDebezium:
      return "debezium";
    case Format::kMongodb:
      return "mongodb";
  }
  return "unknown";
}

void encode_change(Format format, const Change& change, const EncodeContext& context,
                   std::string& out) {
  switch (format) {
    case Format::kNative:
      format_internal::encode_native(change, out);
      return;
    case Format::kDebezium:
      format_internal::encode_debezium(change, context, out);
      return;
    case Format::kMongodb:
      format_internal::encode_mongodb(change, context, out);
      return;
  }
}

void encode_key(Format format, const Change& change, std::string_view key_json,
                const EncodeContext& context, std::string& out) {
  if (format == Format::kDebezium) {
    format_internal::encode_debezium_key(change, key_json, context, out);
    return;
  }
  out += key_json.empty() ? std::string_view("{}") : key_json;
}

}  // namespace cdcd
