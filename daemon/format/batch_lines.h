#pragma once

#include <string>

#include "daemon/core/change.h"
#include "daemon/format/debezium_transactions.h"
#include "daemon/format/format.h"

namespace cdcd {

// Appends every change of the batch, one line each ('\n'-terminated), to `out`: the body of what
// the stdout and file sinks write. `debezium`: the `debezium` format's options (null: defaults).
// `transactions`: the writer's transaction state when the format writes transaction metadata; the
// BEGIN and END records' values are then lines of their own, where they fall between changes.
void encode_batch_lines(Format format, const Batch& batch, std::string& out,
                        const DebeziumOptions* debezium = nullptr,
                        DebeziumTransactions* transactions = nullptr);

}  // namespace cdcd
