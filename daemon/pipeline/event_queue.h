#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

#include "daemon/core/change.h"

namespace cdcd {

// Events taken from an EventQueue, consumed in order from the front. They stay in the chunks
// they were queued in, so that handing them over moves each event once, not once per hop.
class EventBacklog {
 public:
  bool empty() const { return chunks_.empty(); }
  SourceEvent& front() { return chunks_.front()[head_]; }
  void pop_front();
  void append(std::deque<std::vector<SourceEvent>>&& chunks);
  // Commit time of the first change not yet consumed, if any (for lag_seconds).
  std::optional<std::int64_t> oldest_change_timestamp() const;

 private:
  std::deque<std::vector<SourceEvent>> chunks_;  // none empty
  std::size_t head_ = 0;                         // first unconsumed event of chunks_.front()
};

// The hand-over from a source thread to one consumer thread, bounded in bytes. The producer never
// blocks inside push(): it asks has_room() first and backs off (the source stops reading), so a
// full queue turns into backpressure on the log instead of memory growth. Events move in chunks
// to keep locking off the per-event path.
//
// The bound covers every event from push() until the consumer has handled it: pop_all() hands
// events over but their bytes stay counted until the consumer release()s them, so that taking
// everything does not make room for as much again while the taken events still wait in memory.
class EventQueue {
 public:
  explicit EventQueue(std::size_t max_bytes) : max_bytes_(max_bytes) {}

  // Appends a chunk (in order). `end_of_stream` marks that nothing more will come.
  void push(std::vector<SourceEvent>&& events, std::size_t bytes, bool end_of_stream = false);

  // True while the events pushed and not yet released are fewer bytes than the bound.
  // Lock-free: the producer asks per event.
  bool has_room() const { return bytes_.load(std::memory_order_relaxed) < max_bytes_; }
  // Bytes pushed and not yet released (queued, or taken and not yet handled).
  std::size_t bytes() const;

  // Waits until events are available, the stream ended, or `deadline`; moves everything queued
  // into `out` (appending). Their bytes stay counted until release().
  void pop_all(EventBacklog& out, std::chrono::steady_clock::time_point deadline);
  // The consumer is done with `bytes` of the events it took: the producer may fill them again.
  void release(std::size_t bytes);

  bool end_of_stream() const;
  // Whether events wait here that pop_all() has not taken yet.
  bool has_queued() const;

  // Commit time of the oldest change waiting here, if any (for lag_seconds).
  std::optional<std::int64_t> oldest_change_timestamp() const;

  // Wakes a waiting pop_all (e.g. for shutdown or an acknowledgement to process).
  void wake();

  // Waits until the queue has room or `deadline`; used by the source thread while backpressured.
  void wait_for_room(std::chrono::steady_clock::time_point deadline) const;

 private:
  const std::size_t max_bytes_;
  mutable std::mutex mutex_;
  mutable std::condition_variable readable_;
  mutable std::condition_variable writable_;
  std::deque<std::vector<SourceEvent>> chunks_;  // none empty
  // Pushed and not yet released. Written under mutex_; read without it by has_room().
  std::atomic<std::size_t> bytes_{0};
  bool end_of_stream_ = false;
  bool woken_ = false;
};

}  // namespace cdcd
