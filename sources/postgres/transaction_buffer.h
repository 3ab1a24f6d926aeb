#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "daemon/core/result.h"

namespace cdcd::postgres {

// The pgoutput messages of one transaction, kept until its Commit arrives (every change needs the
// commit LSN). Held in memory up to `memory_limit` bytes; beyond that everything goes to an
// unlinked temporary file, so a huge transaction costs disk, not memory. Messages are replayed in
// order with next() after finish().
class TransactionBuffer {
 public:
  TransactionBuffer(std::size_t memory_limit, std::string spill_dir);
  ~TransactionBuffer();
  TransactionBuffer(const TransactionBuffer&) = delete;
  TransactionBuffer& operator=(const TransactionBuffer&) = delete;

  // `lsn` is the message's own position in the WAL, given back by lsn() when it is replayed.
  Status append(std::string_view message, std::uint64_t lsn = 0);
  // Ends appending; next() starts at the first message.
  Status finish();
  // The next message (valid until the following call), or an empty view at the end.
  Result<std::string_view> next();
  // The WAL position of the message next() returned last.
  std::uint64_t lsn() const { return lsn_; }
  // Forgets everything (and the spill file), ready for another transaction.
  void clear();

  bool empty() const { return messages_ == 0; }
  bool spilled() const { return file_ != nullptr; }
  std::uint64_t bytes() const { return bytes_; }
  std::uint64_t messages() const { return messages_; }

 private:
  Status spill();

  std::size_t memory_limit_;
  std::string spill_dir_;
  std::string memory_;  // [u32 length][u64 lsn][bytes]... while in memory
  std::size_t read_pos_ = 0;
  std::FILE* file_ = nullptr;
  std::string read_buffer_;  // the current message read back from the file
  std::uint64_t bytes_ = 0;
  std::uint64_t messages_ = 0;
  std::uint64_t remaining_ = 0;
  std::uint64_t lsn_ = 0;
};

}  // namespace cdcd::postgres
