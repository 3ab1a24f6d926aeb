#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "daemon/core/result.h"
#include "daemon/plugin/checkpoint.h"

namespace cdcd::postgres {

// What start() found of the replication slot.
struct SlotFacts {
  std::string slot;   // its name, for messages
  std::string where;  // the server, for messages
  bool exists = false;
  // The server streams the transactions committed at or after it; those before are gone.
  std::uint64_t confirmed_lsn = 0;
  bool initial_snapshot = false;  // `snapshot: initial`
};

enum class SlotAction {
  kStream,    // stream from the existing slot
  kCreate,    // create the slot (with the initial snapshot when configured)
  kRecreate,  // drop the slot and create it again, with a new initial snapshot
};

// Decides what start() does with the slot so that no consumer loses a change silently. A slot is
// dropped only when no consumer holds a checkpoint (nothing depends on what it holds); a consumer
// that needs changes the slot no longer holds is an error naming the consumer and the way out.
//   - with a checkpoint: needs the changes after it, which the slot must still hold;
//   - without one, `start: {lsn: N}`: needs the changes from N;
//   - without one, `start: {timestamp: T}`: needs the changes committed from T on; the slot holds
//     them when a checkpoint at or after the slot's position was committed before T;
//   - without one, from the beginning: with `snapshot: initial` it needs the initial snapshot,
//     taken once when the slot was made; with `snapshot: never` the source begins where the slot
//     is, so it needs nothing the slot lost.
// `consumers` empty (a caller that is not the daemon): one unnamed consumer needing `from`.
Result<SlotAction> plan_slot(const SlotFacts& slot, const StartPosition& from);

// The replication commands in the syntax of the server's version (server_version_num).
// PostgreSQL 15 introduced the parenthesized options of CREATE_REPLICATION_SLOT; `messages` (for
// the heartbeats' logical decoding messages) exists from PostgreSQL 14 on. Before 14 heartbeats
// still arrive as transactions without changes.
std::string create_slot_command(const std::string& quoted_slot, bool export_snapshot,
                                int server_version);
std::string start_replication_command(const std::string& quoted_slot,
                                      const std::string& publication_names_literal,
                                      int server_version);

}  // namespace cdcd::postgres
