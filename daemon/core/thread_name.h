#pragma once

#include <pthread.h>

#include <algorithm>
#include <string>
#include <string_view>

namespace cdcd {

// Names the calling thread (as top, perf and /proc/PID/task/*/comm show it), so that CPU time can
// be told apart per source, consumer and library thread. Linux keeps 15 characters.
inline void name_this_thread(std::string_view role, std::string_view name) {
  std::string full = std::string(role) + ":" + std::string(name);
  full.resize(std::min<std::size_t>(full.size(), 15));
  pthread_setname_np(pthread_self(), full.c_str());
}

}  // namespace cdcd
