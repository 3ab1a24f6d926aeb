#pragma once

#include <string>

#include "daemon/core/change.h"
#include "daemon/format/format.h"

namespace cdcd {

// Appends every change of the batch, one line each ('\n'-terminated), to `out`: the body of what
// the stdout and file sinks write. `debezium`: the `debezium` format's options (null: defaults).
void encode_batch_lines(Format format, const Batch& batch, std::string& out,
                        const DebeziumOptions* debezium = nullptr);

}  // namespace cdcd
