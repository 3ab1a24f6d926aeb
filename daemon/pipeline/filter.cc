#include "daemon/pipeline/filter.h"

#include <algorithm>

namespace cdcd {

bool glob_match(std::string_view pattern, std::string_view text) {
  // Iterative matcher with backtracking to the last '*': linear for the patterns users write.
  std::size_t p = 0, t = 0, star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

ChangeFilter::ChangeFilter(std::vector<std::string> entities,
                           std::vector<std::string> exclude_entities,
                           const std::vector<Operation>& operations)
    : entities_(std::move(entities)), exclude_entities_(std::move(exclude_entities)) {
  if (operations.empty()) {
    for (bool& wanted : operations_) wanted = true;
  }
  for (Operation op : operations) operations_[static_cast<int>(op)] = true;
  includes_all_ = std::any_of(entities_.begin(), entities_.end(), [](const std::string& pattern) {
    return !pattern.empty() && pattern.find_first_not_of('*') == std::string::npos;
  });
}

bool ChangeFilter::accepts(const Change& change) const {
  if (!operations_[static_cast<int>(change.operation)]) return false;
  if (!includes_all_ && !matches_any(entities_, change.entity)) return false;
  return !matches_any(exclude_entities_, change.entity);
}

bool ChangeFilter::matches_any(const std::vector<std::string>& patterns, std::string_view entity) {
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](const std::string& pattern) { return glob_match(pattern, entity); });
}

}  // namespace cdcd
