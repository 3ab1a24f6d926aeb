#include "daemon/format/batch_lines.h"

#include <chrono>

namespace cdcd {

void encode_batch_lines(Format format, const Batch& batch, std::string& out,
                        const DebeziumOptions* debezium, DebeziumTransactions* transactions) {
  EncodeContext context{batch.source_name, batch.connector,
                        std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count(),
                        debezium};
  out.reserve(out.size() + batch.bytes);
  if (transactions == nullptr) {
    for (const auto& change : batch.changes) {
      encode_change(format, change, context, out);
      out.push_back('\n');
    }
    return;
  }
  std::vector<DebeziumRecord> records;
  auto append_records = [&] {
    for (const auto& record : records) {
      out += record.value;
      out.push_back('\n');
    }
    records.clear();
  };
  for (const auto& change : batch.changes) {
    context.transaction = transactions->next(change, context, records);
    append_records();
    encode_change(format, change, context, out);
    out.push_back('\n');
  }
  transactions->finish(batch, context, records);
  append_records();
}

}  // namespace cdcd
