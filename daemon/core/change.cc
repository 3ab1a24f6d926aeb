#include "daemon/core/change.h"

namespace cdcd {

std::string_view to_string(Operation op) {
  switch (op) {
    case Operation::kInsert:
      return "insert";
    case Operation::kUpdate:
      return "update";
    case Operation::kDelete:
      return "delete";
    case Operation::kTruncate:
      return "truncate";
    case Operation::kRead:
      return "read";
  }
  return "unknown";
}

std::optional<Operation> parse_operation(std::string_view name) {
  for (Operation op : kAllOperations) {
    if (to_string(op) == name) return op;
  }
  return std::nullopt;
}

std::size_t Change::byte_size() const {
  std::size_t size = sizeof(Change) + source.capacity() + entity.capacity() + key.capacity() +
                     old_key.capacity() + old_row.capacity() + new_row.capacity();
  for (const auto& column : unchanged_columns) size += sizeof(std::string) + column.capacity();
  return size;
}

std::size_t byte_size(const SourceEvent& event) {
  // Queues hold SourceEvents: each takes sizeof(SourceEvent), a transaction end as much as a
  // change, plus what its strings hold. Counting an end as its own small size let a queue of a
  // consumer that filters out most changes hold 8 times its bound.
  if (const auto* change = std::get_if<Change>(&event)) {
    return sizeof(SourceEvent) - sizeof(Change) + change->byte_size();
  }
  if (const auto* bad = std::get_if<BadRecord>(&event)) {
    return sizeof(SourceEvent) - sizeof(BadRecord) + bad->byte_size();
  }
  return sizeof(SourceEvent);
}

}  // namespace cdcd
