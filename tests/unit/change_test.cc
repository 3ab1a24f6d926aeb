#include "daemon/core/change.h"

#include <gtest/gtest.h>

namespace cdcd {
namespace {

TEST(Operation, NamesRoundTrip) {
  for (Operation op : kAllOperations) {
    auto parsed = parse_operation(to_string(op));
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, op);
  }
  EXPECT_FALSE(parse_operation("upsert").has_value());
}

TEST(Change, ByteSizeGrowsWithRowImages) {
  Change small;
  Change large;
  large.new_row = std::string(10000, 'x');
  EXPECT_GT(large.byte_size(), small.byte_size() + 9000);
}

}  // namespace
}  // namespace cdcd
