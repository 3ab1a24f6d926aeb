#pragma once

#include <algorithm>
#include <chrono>
#include <random>

namespace cdcd {

// Exponential backoff with full jitter: the n-th wait is uniform in [0, min(cap, base * 2^n)].
// Jitter keeps many retrying clients from hammering a recovering server in lockstep.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds base = std::chrono::milliseconds(100),
          std::chrono::milliseconds cap = std::chrono::seconds(30))
      : base_(base), cap_(cap), rng_(std::random_device{}()) {}

  std::chrono::milliseconds next() {
    auto ceiling = std::min<long long>(cap_.count(), base_.count() << std::min(attempt_, 20));
    ++attempt_;
    std::uniform_int_distribution<long long> pick(std::max<long long>(1, ceiling / 2), ceiling);
    return std::chrono::milliseconds(pick(rng_));
  }

  void reset() { attempt_ = 0; }
  int attempts() const { return attempt_; }

 private:
  std::chrono::milliseconds base_;
  std::chrono::milliseconds cap_;
  int attempt_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace cdcd
