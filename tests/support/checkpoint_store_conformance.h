#pragma once

#include <functional>
#include <memory>
#include <string>

#include "daemon/plugin/checkpoint_store.h"

namespace cdcd::test {

// What the checkpoint store conformance suite needs to know about one kind of store. Every test
// gets a fresh harness, i.e. fresh, empty storage (a directory, a database).
class CheckpointStoreHarness {
 public:
  virtual ~CheckpointStoreHarness() = default;

  // A new store, not started, on this harness's storage: what a second process (a restarted
  // daemon, a `cdcd checkpoint` command) would open.
  virtual std::unique_ptr<CheckpointStore> make_store() = 0;

  // Leaves on the storage what a crash in the middle of saving `checkpoint` for `consumer` would
  // leave (a partly written temp file, an uncommitted transaction), with no store open. False
  // when the store cannot be interrupted half-way (its test is then skipped).
  virtual bool leave_an_interrupted_save(const std::string& consumer,
                                         const Checkpoint& checkpoint) {
    (void)consumer;
    (void)checkpoint;
    return false;
  }
};

using CheckpointStoreHarnessFactory = std::function<std::unique_ptr<CheckpointStoreHarness>()>;

// Registers the conformance tests as `suite`.<Test> for the stores the factory's harnesses make:
// a missing checkpoint loads as nullopt; save/load round trips every field (segment included, and
// the largest values); a save replaces the previous one and survives a restart; remove forgets one
// consumer only; concurrent saves of many consumers lose none and tear none; an interrupted save
// leaves the previous checkpoint; while one store holds the storage a second start() is refused
// (not retryable, saying it is in use) and succeeds once the first is gone.
// Call before RUN_ALL_TESTS, e.g. from a namespace-scope initializer of the test file.
void register_checkpoint_store_conformance(const std::string& suite,
                                           CheckpointStoreHarnessFactory factory);

}  // namespace cdcd::test
