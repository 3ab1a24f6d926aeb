#include "sources/postgres/transaction_buffer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace cdcd::postgres {

namespace {

void put_length(std::string& out, std::uint32_t length) {
  out.append(reinterpret_cast<const char*>(&length), sizeof length);
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

TransactionBuffer::TransactionBuffer(std::size_t memory_limit, std::string spill_dir)
    : memory_limit_(memory_limit), spill_dir_(std::move(spill_dir)) {}

TransactionBuffer::~TransactionBuffer() { clear(); }

void TransactionBuffer::clear() {
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
  memory_.clear();
  // A huge transaction should not pin its memory for the rest of the run.
  if (memory_.capacity() > (1u << 20)) std::string().swap(memory_);
  read_buffer_.clear();
  read_pos_ = 0;
  bytes_ = 0;
  messages_ = 0;
  remaining_ = 0;
}

Status TransactionBuffer::spill() {
  // O_TMPFILE: the file has no name, so nothing is left behind by a crash. Where the file
  // system lacks it, a named file unlinked at once comes close.
  int fd = ::open(spill_dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    std::string path = spill_dir_ + "/cdcd-spill.XXXXXX";
    fd = ::mkostemp(path.data(), O_CLOEXEC);
    if (fd >= 0) ::unlink(path.c_str());
  }
  if (fd < 0) {
    return fail("cannot create a spill file in " + spill_dir_ +
                " for a large transaction: " + errno_text());
  }
  file_ = ::fdopen(fd, "w+b");
  if (file_ == nullptr) {
    ::close(fd);
    return fail("cannot open spill file: " + errno_text());
  }
  if (!memory_.empty() && std::fwrite(memory_.data(), 1, memory_.size(), file_) != memory_.size()) {
    return fail("cannot write spill file in " + spill_dir_ + ": " + errno_text());
  }
  std::string().swap(memory_);
  return ok();
}

Status TransactionBuffer::append(std::string_view message, std::uint64_t lsn) {
  auto length = static_cast<std::uint32_t>(message.size());
  bytes_ += message.size() + sizeof length + sizeof lsn;
  ++messages_;
  if (file_ == nullptr && bytes_ > memory_limit_) {
    if (auto spilled = spill(); !spilled) return spilled;
  }
  if (file_ == nullptr) {
    put_length(memory_, length);
    memory_.append(reinterpret_cast<const char*>(&lsn), sizeof lsn);
    memory_.append(message);
    return ok();
  }
  if (std::fwrite(&length, sizeof length, 1, file_) != 1 ||
      std::fwrite(&lsn, sizeof lsn, 1, file_) != 1 ||
      std::fwrite(message.data(), 1, message.size(), file_) != message.size()) {
    return fail("cannot write spill file in " + spill_dir_ + ": " + errno_text());
  }
  return ok();
}

Status TransactionBuffer::finish() {
  remaining_ = messages_;
  read_pos_ = 0;
  if (file_ != nullptr && (std::fflush(file_) != 0 || std::fseek(file_, 0, SEEK_SET) != 0)) {
    return fail("cannot rewind spill file: " + errno_text());
  }
  return ok();
}

Result<std::string_view> TransactionBuffer::next() {
  if (remaining_ == 0) return std::string_view();
  --remaining_;
  std::uint32_t length = 0;
  if (file_ == nullptr) {
    std::memcpy(&length, memory_.data() + read_pos_, sizeof length);
    std::memcpy(&lsn_, memory_.data() + read_pos_ + sizeof length, sizeof lsn_);
    const std::size_t header = sizeof length + sizeof lsn_;
    std::string_view message(memory_.data() + read_pos_ + header, length);
    read_pos_ += header + length;
    return message;
  }
  if (std::fread(&length, sizeof length, 1, file_) != 1 ||
      std::fread(&lsn_, sizeof lsn_, 1, file_) != 1) {
    return fail("cannot read spill file: " + errno_text());
  }
  read_buffer_.resize(length);
  if (length > 0 && std::fread(read_buffer_.data(), 1, length, file_) != length) {
    return fail("cannot read spill file: " + errno_text());
  }
  return std::string_view(read_buffer_);
}

}  // namespace cdcd::postgres
