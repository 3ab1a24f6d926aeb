#include "daemon/pipeline/event_queue.h"

#include <algorithm>
#include <iterator>

namespace cdcd {

namespace {

std::optional<std::int64_t> first_change_timestamp(
    const std::deque<std::vector<SourceEvent>>& chunks, std::size_t head) {
  for (const auto& chunk : chunks) {
    for (std::size_t i = head; i < chunk.size(); ++i) {
      if (const auto* change = std::get_if<Change>(&chunk[i])) return change->timestamp_us;
    }
    head = 0;
  }
  return std::nullopt;
}

}  // namespace

void EventBacklog::pop_front() {
  if (++head_ < chunks_.front().size()) return;
  chunks_.pop_front();
  head_ = 0;
}

void EventBacklog::append(std::deque<std::vector<SourceEvent>>&& chunks) {
  if (chunks_.empty()) {
    chunks_.swap(chunks);
    head_ = 0;
  } else {
    std::move(chunks.begin(), chunks.end(), std::back_inserter(chunks_));
  }
  chunks.clear();
}

std::optional<std::int64_t> EventBacklog::oldest_change_timestamp() const {
  return first_change_timestamp(chunks_, head_);
}

void EventQueue::push(std::vector<SourceEvent>&& events, std::size_t bytes, bool end_of_stream) {
  {
    std::lock_guard lock(mutex_);
    if (!events.empty()) chunks_.push_back(std::move(events));
    bytes_.store(bytes_.load(std::memory_order_relaxed) + bytes, std::memory_order_relaxed);
    end_of_stream_ = end_of_stream_ || end_of_stream;
  }
  events.clear();
  readable_.notify_one();
}

std::size_t EventQueue::bytes() const { return bytes_.load(std::memory_order_relaxed); }

void EventQueue::pop_all(EventBacklog& out, std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  readable_.wait_until(lock, deadline,
                       [this] { return !chunks_.empty() || end_of_stream_ || woken_; });
  woken_ = false;
  out.append(std::move(chunks_));
}

void EventQueue::release(std::size_t bytes) {
  bool made_room = false;
  {
    std::lock_guard lock(mutex_);
    const std::size_t held = bytes_.load(std::memory_order_relaxed);
    const std::size_t left = held - std::min(held, bytes);
    bytes_.store(left, std::memory_order_relaxed);
    made_room = held >= max_bytes_ && left < max_bytes_;
  }
  if (made_room) writable_.notify_all();
}

bool EventQueue::end_of_stream() const {
  std::lock_guard lock(mutex_);
  return end_of_stream_;
}

bool EventQueue::has_queued() const {
  std::lock_guard lock(mutex_);
  return !chunks_.empty();
}

std::optional<std::int64_t> EventQueue::oldest_change_timestamp() const {
  std::lock_guard lock(mutex_);
  return first_change_timestamp(chunks_, 0);
}

void EventQueue::wake() {
  {
    std::lock_guard lock(mutex_);
    woken_ = true;
  }
  readable_.notify_one();
}

void EventQueue::wait_for_room(std::chrono::steady_clock::time_point deadline) const {
  std::unique_lock lock(mutex_);
  writable_.wait_until(lock, deadline, [this] { return has_room(); });
}

}  // namespace cdcd
