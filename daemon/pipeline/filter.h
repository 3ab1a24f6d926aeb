#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/change.h"

namespace cdcd {

// Matches `text` against a glob where '*' stands for any run of characters (including '.').
bool glob_match(std::string_view pattern, std::string_view text);

// A consumer's choice of changes: entity globs, excluded entity globs, operations.
class ChangeFilter {
 public:
  ChangeFilter(std::vector<std::string> entities, std::vector<std::string> exclude_entities,
               const std::vector<Operation>& operations);

  bool accepts(const Change& change) const;

 private:
  static bool matches_any(const std::vector<std::string>& patterns, std::string_view entity);

  std::vector<std::string> entities_;
  std::vector<std::string> exclude_entities_;
  // An include pattern of only '*'s (the default "*"): every entity is included without matching.
  bool includes_all_ = false;
  bool operations_[5] = {false, false, false, false, false};
};

}  // namespace cdcd
