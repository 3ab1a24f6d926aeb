#include "daemon/pipeline/event_queue.h"

#include <iterator>

namespace cdcd {

void EventQueue::push(std::vector<SourceEvent>&& events, std::size_t bytes, bool end_of_stream) {
  {
    std::lock_guard lock(mutex_);
    events_.insert(events_.end(), std::make_move_iterator(events.begin()),
                   std::make_move_iterator(events.end()));
    bytes_ += bytes;
    end_of_stream_ = end_of_stream_ || end_of_stream;
  }
  events.clear();
  readable_.notify_one();
}

bool EventQueue::has_room() const {
  std::lock_guard lock(mutex_);
  return bytes_ < max_bytes_;
}

std::size_t EventQueue::bytes() const {
  std::lock_guard lock(mutex_);
  return bytes_;
}

std::size_t EventQueue::pop_all(std::deque<SourceEvent>& out,
                                std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  readable_.wait_until(lock, deadline,
                       [this] { return !events_.empty() || end_of_stream_ || woken_; });
  woken_ = false;
  std::size_t moved = bytes_;
  if (out.empty()) {
    out.swap(events_);
  } else {
    out.insert(out.end(), std::make_move_iterator(events_.begin()),
               std::make_move_iterator(events_.end()));
    events_.clear();
  }
  bytes_ = 0;
  lock.unlock();
  writable_.notify_all();
  return moved;
}

bool EventQueue::end_of_stream() const {
  std::lock_guard lock(mutex_);
  return end_of_stream_;
}

std::optional<std::int64_t> EventQueue::oldest_change_timestamp() const {
  std::lock_guard lock(mutex_);
  for (const auto& event : events_) {
    if (const auto* change = std::get_if<Change>(&event)) return change->timestamp_us;
  }
  return std::nullopt;
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
  writable_.wait_until(lock, deadline, [this] { return bytes_ < max_bytes_; });
}

}  // namespace cdcd
