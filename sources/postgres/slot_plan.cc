#include "sources/postgres/slot_plan.h"

#include <algorithm>

#include "daemon/core/lsn.h"
#include "daemon/runtime/status.h"

namespace cdcd::postgres {

namespace {

std::vector<ConsumerStart> needs_of(const StartPosition& from) {
  if (!from.consumers.empty()) return from.consumers;
  ConsumerStart only{"(unnamed)", from.first_lsn, 0, std::nullopt};
  if (from.has_resume) only.checkpoint = from.resume;
  return {only};
}

std::string names_of(const std::vector<const ConsumerStart*>& consumers) {
  std::string names;
  for (const auto* consumer : consumers) {
    if (!names.empty()) names += ", ";
    names += consumer->consumer;
  }
  return names;
}

// Transactions committed before the slot's position are gone; were all of them committed before
// `timestamp_us`? A checkpoint at or after the position tells: commit order follows lsn order.
bool slot_covers_time(std::uint64_t confirmed_lsn, std::int64_t timestamp_us,
                      const std::vector<const ConsumerStart*>& holders) {
  return std::any_of(holders.begin(), holders.end(), [&](const ConsumerStart* holder) {
    return holder->checkpoint->lsn + 1 >= confirmed_lsn &&
           holder->checkpoint->commit_time_us < timestamp_us;
  });
}

// Why the slot cannot serve the consumer, or "" when it can.
std::string what_is_missing(const SlotFacts& slot, const ConsumerStart& consumer,
                            const std::vector<const ConsumerStart*>& holders) {
  const std::uint64_t begins = slot.confirmed_lsn;
  const std::string at = "the slot begins at lsn " + describe_pg_lsn(begins);
  if (consumer.first_lsn >= begins) return "";
  if (consumer.checkpoint) {
    return "consumer " + consumer.consumer + " resumes after its checkpoint at lsn " +
           describe_pg_lsn(consumer.checkpoint->lsn) + ", but " + at +
           ": the changes in between are no longer on the server (was the checkpoint store "
           "restored, or the checkpoint moved back?); to accept that gap, `cdcd checkpoint set "
           "--consumer " +
           consumer.consumer + " --lsn " + format_pg_lsn(begins - 1) + "`";
  }
  if (consumer.first_timestamp_us > 0) {
    if (slot_covers_time(begins, consumer.first_timestamp_us, holders)) return "";
    return "consumer " + consumer.consumer + " has no checkpoint and starts at " +
           format_rfc3339(consumer.first_timestamp_us) + " (`start: {timestamp}`), but " + at +
           " and no checkpoint shows that nothing before it was committed after that time";
  }
  if (consumer.first_lsn > 0) {
    return "consumer " + consumer.consumer + " has no checkpoint and starts at lsn " +
           describe_pg_lsn(consumer.first_lsn) + " (`start: {lsn}`), but " + at +
           "; to accept that gap, start it at `{lsn: \"" + format_pg_lsn(begins) + "\"}`";
  }
  if (!slot.initial_snapshot) return "";  // the source begins where the slot is
  return "consumer " + consumer.consumer +
         " has no checkpoint, so it needs the initial snapshot, which was taken once when the "
         "slot was created and which the checkpoints of consumers " +
         names_of(holders) + " depend on";
}

std::string start_over_hint(const SlotFacts& slot, const std::string& any_consumer) {
  return "to start every consumer of this source over " +
         std::string(slot.initial_snapshot ? "with a new initial snapshot"
                                           : "where a new slot begins") +
         ", remove all their checkpoints (`cdcd checkpoint reset --all-consumers --consumer " +
         any_consumer + "`)";
}

}  // namespace

Result<SlotAction> plan_slot(const SlotFacts& slot, const StartPosition& from) {
  const std::vector<ConsumerStart> needs = needs_of(from);
  std::vector<const ConsumerStart*> holders;
  for (const auto& need : needs) {
    if (need.checkpoint) holders.push_back(&need);
  }
  const std::string name = "replication slot \"" + slot.slot + "\"";
  if (!slot.exists) {
    if (holders.empty()) return SlotAction::kCreate;
    return fail(name + " does not exist on " + slot.where + ", but consumers " + names_of(holders) +
                " have checkpoints that depend on it: the changes after them went with the slot, "
                "and cdcd does not make a new slot under existing checkpoints. If the slot is on "
                "another server, fix `dsn`; " +
                start_over_hint(slot, holders.front()->consumer));
  }
  std::vector<std::string> missing;
  for (const auto& need : needs) {
    if (auto reason = what_is_missing(slot, need, holders); !reason.empty()) {
      missing.push_back(std::move(reason));
    }
  }
  if (missing.empty()) return SlotAction::kStream;
  // No checkpoint depends on the slot: a new one with a new snapshot serves every consumer.
  if (holders.empty() && slot.initial_snapshot) return SlotAction::kRecreate;
  std::string message = name + " on " + slot.where + " no longer holds what a consumer needs: ";
  for (std::size_t i = 0; i < missing.size(); ++i) message += (i > 0 ? "; " : "") + missing[i];
  message +=
      ". cdcd never drops a slot that a checkpoint depends on, and cannot replay for one consumer "
      "what the slot no longer holds: give such a consumer its own source (another slot), or " +
      start_over_hint(slot, needs.front().consumer);
  return fail(message);
}

std::string create_slot_command(const std::string& quoted_slot, bool export_snapshot,
                                int server_version) {
  std::string command = "CREATE_REPLICATION_SLOT " + quoted_slot + " LOGICAL pgoutput ";
  if (server_version >= 150000) {
    return command + "(SNAPSHOT '" + (export_snapshot ? "export" : "nothing") + "')";
  }
  return command + (export_snapshot ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT");
}

std::string start_replication_command(const std::string& quoted_slot,
                                      const std::string& publication_names_literal,
                                      int server_version) {
  return "START_REPLICATION SLOT " + quoted_slot + " LOGICAL 0/0 (proto_version '1', " +
         "publication_names " + publication_names_literal +
         (server_version >= 140000 ? ", messages 'true')" : ")");
}

}  // namespace cdcd::postgres
