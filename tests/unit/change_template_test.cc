#include "daemon/format/change_template.h"

#include <gtest/gtest.h>

namespace cdcd {
namespace {

Change user_update() {
  Change change;
  change.entity = "public.users";
  change.operation = Operation::kUpdate;
  change.key = R"({"id":7,"region":"eu"})";
  change.old_row = R"({"id":7,"email":"old@example.com","region":"eu","score":1.5})";
  change.new_row = R"({"id":7,"email":"new@example.com","region":"eu","nick":null})";
  return change;
}

std::string render(std::string_view text, const Change& change, TemplateImages images) {
  auto parsed = ChangeTemplate::parse(text, images);
  EXPECT_TRUE(parsed) << parsed.error().message;
  std::string out = "prefix|";
  auto rendered = parsed->render(TemplateInput(change, "db"), out);
  EXPECT_TRUE(rendered) << rendered.error().message;
  return rendered && *rendered ? out : "<skipped:" + out + ">";
}

constexpr TemplateImages kAll{.key = true, .new_row = true, .old_row = true};

TEST(ChangeTemplateTest, NamesOfTheChange) {
  auto change = user_update();
  EXPECT_EQ(render("cdc.{source}.{entity}.{operation}", change, {}),
            "prefix|cdc.db.public.users.update");
  EXPECT_EQ(render("{schema}_{table}", change, {}), "prefix|public_users");
  change.entity = "orders";
  EXPECT_EQ(render("[{schema}][{table}]", change, {}), "prefix|[][orders]");
}

TEST(ChangeTemplateTest, FieldsOfEachImage) {
  auto change = user_update();
  EXPECT_EQ(render("user:{key.id}:{key.region}", change, kAll), "prefix|user:7:eu");
  EXPECT_EQ(render("{old.email}|{new.email}", change, kAll),
            "prefix|old@example.com|new@example.com");
  EXPECT_EQ(render("score:{old.score}", change, kAll), "prefix|score:1.5");
}

TEST(ChangeTemplateTest, AbsentOrNullFieldsSkipTheTemplateAndLeaveTheOutputAsItWas) {
  auto change = user_update();
  EXPECT_EQ(render("x:{new.score}", change, kAll), "<skipped:prefix|>");
  EXPECT_EQ(render("x:{new.nick}", change, kAll), "<skipped:prefix|>");
  change.operation = Operation::kInsert;
  change.old_row.clear();
  EXPECT_EQ(render("user:email:{old.email}", change, kAll), "<skipped:prefix|>");
}

TEST(ChangeTemplateTest, RequiredRenderingNamesTheMissingField) {
  auto change = user_update();
  auto parsed = ChangeTemplate::parse("k:{key.tenant}", kAll);
  ASSERT_TRUE(parsed);
  std::string out;
  auto rendered = parsed->render_required(TemplateInput(change, "db"), out);
  ASSERT_FALSE(rendered);
  EXPECT_NE(rendered.error().message.find("\"tenant\""), std::string::npos)
      << rendered.error().message;
  EXPECT_TRUE(out.empty());
}

TEST(ChangeTemplateTest, AnotherKeyInPlaceOfTheChangesKey) {
  auto change = user_update();
  auto parsed = ChangeTemplate::parse("user:{key.id}", kAll);
  ASSERT_TRUE(parsed);
  std::string out;
  ASSERT_TRUE(parsed->render_required(TemplateInput(change, "db", R"({"id":"6"})"), out));
  EXPECT_EQ(out, "user:6");
}

TEST(ChangeTemplateTest, ImageThatIsNotAnObjectIsAnError) {
  auto change = user_update();
  change.new_row = "[1,2]";
  auto parsed = ChangeTemplate::parse("{new.id}", kAll);
  ASSERT_TRUE(parsed);
  std::string out;
  auto rendered = parsed->render(TemplateInput(change, "db"), out);
  ASSERT_FALSE(rendered);
  EXPECT_NE(rendered.error().message.find("new row"), std::string::npos);
}

TEST(ChangeTemplateTest, ParseErrorsNameWhatIsAllowed) {
  auto unknown = ChangeTemplate::parse("{new.id}", TemplateImages{.key = true});
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("{key.FIELD}"), std::string::npos);
  EXPECT_EQ(unknown.error().message.find("{new.FIELD}"), std::string::npos);
  EXPECT_FALSE(ChangeTemplate::parse("{key.}", kAll));
  EXPECT_FALSE(ChangeTemplate::parse("a{table", kAll));
  EXPECT_FALSE(ChangeTemplate::parse("a}b", kAll));
}

TEST(ChangeTemplateTest, ConstantAndWhatItReads) {
  auto constant = ChangeTemplate::parse("products:list", kAll);
  ASSERT_TRUE(constant);
  EXPECT_TRUE(constant->is_constant());
  auto keyed = ChangeTemplate::parse("{table}:{old.email}", kAll);
  ASSERT_TRUE(keyed);
  EXPECT_FALSE(keyed->is_constant());
  EXPECT_TRUE(keyed->reads(RowImage::kOld));
  EXPECT_FALSE(keyed->reads(RowImage::kNew));
}

}  // namespace
}  // namespace cdcd
