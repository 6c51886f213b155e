// --allow-users parsing (cli/up.h parse_allow_users; issue 14.2): names and
// numeric uids, comma-separated, blanks and empty entries ignored; an
// unknown name is an error naming it.
#include <gtest/gtest.h>

#include "cli/up.h"

namespace osh::cli {
namespace {

TEST(AllowUsers, NamesAndUids) {
  std::string err;
  auto uids = parse_allow_users("root, 1234,,64123", &err);
  ASSERT_TRUE(uids) << err;
  EXPECT_EQ(*uids, (std::vector<uid_t>{0, 1234, 64123}));
}

TEST(AllowUsers, EmptyListIsNoOne) {
  std::string err;
  auto uids = parse_allow_users("", &err);
  ASSERT_TRUE(uids) << err;
  EXPECT_TRUE(uids->empty());
}

TEST(AllowUsers, UnknownNameIsNamed) {
  std::string err;
  EXPECT_FALSE(parse_allow_users("root,osh-no-such-user-x", &err));
  EXPECT_NE(err.find("osh-no-such-user-x"), std::string::npos) << err;
}

TEST(AllowUsers, UidOutOfRange) {
  std::string err;
  EXPECT_FALSE(parse_allow_users("4294967295", &err));
  EXPECT_NE(err.find("out of range"), std::string::npos) << err;
}

}  // namespace
}  // namespace osh::cli
