#include "daemon/pipeline/filter.h"

#include <gtest/gtest.h>

namespace cdcd {
namespace {

Change change_of(std::string entity, Operation op = Operation::kInsert) {
  Change change;
  change.entity = std::move(entity);
  change.operation = op;
  return change;
}

TEST(GlobMatchTest, ExactNames) {
  EXPECT_TRUE(glob_match("public.orders", "public.orders"));
  EXPECT_FALSE(glob_match("public.orders", "public.order"));
  EXPECT_FALSE(glob_match("public.order", "public.orders"));
  EXPECT_FALSE(glob_match("public.orders", "Public.orders"));
  EXPECT_TRUE(glob_match("", ""));
  EXPECT_FALSE(glob_match("", "x"));
}

TEST(GlobMatchTest, StarMatchesAnyRunIncludingDots) {
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("*", "public.orders"));
  EXPECT_TRUE(glob_match("**", "a.b.c"));
  EXPECT_TRUE(glob_match("public.*", "public.orders"));
  EXPECT_TRUE(glob_match("public.*", "public."));
  EXPECT_FALSE(glob_match("public.*", "public"));
  EXPECT_FALSE(glob_match("public.*", "audit.orders"));
  EXPECT_TRUE(glob_match("*.orders", "public.orders"));
  EXPECT_TRUE(glob_match("*.orders", "a.b.orders"));
  EXPECT_FALSE(glob_match("*.orders", "public.orders_archive"));
  EXPECT_TRUE(glob_match("pub*ers", "public.orders"));
  EXPECT_FALSE(glob_match("pub*ers", "public.order"));
  EXPECT_TRUE(glob_match("*order*", "public.orders_2024"));
  EXPECT_TRUE(glob_match("a*b*c", "aXbYc"));
  EXPECT_TRUE(glob_match("a*b*c", "abbbc"));
  EXPECT_TRUE(glob_match("a*b*c", "abcbc"));
  EXPECT_FALSE(glob_match("a*b*c", "abcb"));
  EXPECT_FALSE(glob_match("a*b*c", "acb"));
}

TEST(GlobMatchTest, BacktracksPastEarlyPartialMatches) {
  EXPECT_TRUE(glob_match("*aab", "aaab"));
  EXPECT_TRUE(glob_match("*.orders", "x.orders.orders"));
  EXPECT_FALSE(glob_match("*.orders.x", "x.orders.orders"));
}

TEST(ChangeFilterTest, StarAcceptsEveryEntity) {
  ChangeFilter filter({"*"}, {}, {});
  EXPECT_TRUE(filter.accepts(change_of("public.orders")));
  EXPECT_TRUE(filter.accepts(change_of("x")));
  EXPECT_TRUE(filter.accepts(change_of("")));
  ChangeFilter stars({"public.orders", "**"}, {}, {});
  EXPECT_TRUE(stars.accepts(change_of("audit.login")));
  ChangeFilter empty_pattern({""}, {}, {});
  EXPECT_FALSE(empty_pattern.accepts(change_of("x")));
  EXPECT_TRUE(empty_pattern.accepts(change_of("")));
}

TEST(ChangeFilterTest, ExactAndGlobEntities) {
  ChangeFilter filter({"public.orders", "audit.*"}, {}, {});
  EXPECT_TRUE(filter.accepts(change_of("public.orders")));
  EXPECT_TRUE(filter.accepts(change_of("audit.login")));
  EXPECT_FALSE(filter.accepts(change_of("public.customers")));
  EXPECT_FALSE(filter.accepts(change_of("public.orders2")));
}

TEST(ChangeFilterTest, ExcludesWinOverIncludes) {
  ChangeFilter filter({"public.*"}, {"*.secrets", "public.orders"}, {});
  EXPECT_TRUE(filter.accepts(change_of("public.customers")));
  EXPECT_FALSE(filter.accepts(change_of("public.secrets")));
  EXPECT_FALSE(filter.accepts(change_of("public.orders")));
  ChangeFilter everything_but({"*"}, {"*"}, {});
  EXPECT_FALSE(everything_but.accepts(change_of("public.orders")));
}

TEST(ChangeFilterTest, OperationsFilter) {
  ChangeFilter filter({"*"}, {}, {Operation::kInsert, Operation::kDelete});
  EXPECT_TRUE(filter.accepts(change_of("t", Operation::kInsert)));
  EXPECT_TRUE(filter.accepts(change_of("t", Operation::kDelete)));
  EXPECT_FALSE(filter.accepts(change_of("t", Operation::kUpdate)));
  EXPECT_FALSE(filter.accepts(change_of("t", Operation::kTruncate)));
  EXPECT_FALSE(filter.accepts(change_of("t", Operation::kRead)));
}

TEST(ChangeFilterTest, EmptyOperationsMeansAll) {
  ChangeFilter filter({"*"}, {}, {});
  for (Operation op : kAllOperations) {
    EXPECT_TRUE(filter.accepts(change_of("t", op))) << to_string(op);
  }
}

TEST(ChangeFilterTest, EntityAndOperationMustBothMatch) {
  ChangeFilter filter({"public.orders"}, {}, {Operation::kUpdate});
  EXPECT_TRUE(filter.accepts(change_of("public.orders", Operation::kUpdate)));
  EXPECT_FALSE(filter.accepts(change_of("public.orders", Operation::kInsert)));
  EXPECT_FALSE(filter.accepts(change_of("public.items", Operation::kUpdate)));
}

}  // namespace
}  // namespace cdcd
