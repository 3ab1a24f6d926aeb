#pragma once

#include <condition_variable>
#include <cstddef>
#include <mutex>

#include "daemon/plugin/source.h"

namespace cdcd {

// Counts the write() calls of a sink that acknowledge synchronously and have not yet acknowledged,
// so that flush() can wait for them without taking the lock a blocked write() holds: a write stuck
// on a full disk or pipe must not make flush() miss its deadline.
class PendingWrites {
 public:
  // Marks one write() in progress for the lifetime of the guard.
  class Guard {
   public:
    explicit Guard(PendingWrites& writes) : writes_(writes) {
      std::lock_guard lock(writes_.mutex_);
      ++writes_.count_;
    }
    ~Guard() {
      {
        std::lock_guard lock(writes_.mutex_);
        --writes_.count_;
      }
      writes_.idle_.notify_all();
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    PendingWrites& writes_;
  };

  // Whether no write() is in progress at some moment before `deadline`.
  bool wait_idle(Deadline deadline) {
    std::unique_lock lock(mutex_);
    return idle_.wait_until(lock, deadline, [this] { return count_ == 0; });
  }

  void wait_idle() {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [this] { return count_ == 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable idle_;
  std::size_t count_ = 0;
};

}  // namespace cdcd
