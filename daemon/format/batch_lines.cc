#include "daemon/format/batch_lines.h"

#include <chrono>

namespace cdcd {

void encode_batch_lines(Format format, const Batch& batch, std::string& out,
                        const DebeziumOptions* debezium) {
  EncodeContext context{batch.source_name, batch.connector,
                        std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count(),
                        debezium};
  out.reserve(out.size() + batch.bytes);
  for (const auto& change : batch.changes) {
    encode_change(format, change, context, out);
    out.push_back('\n');
  }
}

}  // namespace cdcd
