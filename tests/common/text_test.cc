#include "common/text.h"

#include <gtest/gtest.h>

namespace intgrads {
namespace {

TEST(Text, QueryComponentsArePercentDecodedWithPlusAsSpace) {
  EXPECT_EQ(DecodeQueryComponent("ship%2Cairplane"), "ship,airplane");
  EXPECT_EQ(DecodeQueryComponent("%73hip"), "ship");
  EXPECT_EQ(DecodeQueryComponent("great+white%20shark"), "great white shark");
  EXPECT_EQ(DecodeQueryComponent("%2B1%2b2"), "+1+2");
  EXPECT_EQ(DecodeQueryComponent("caf%C3%A9"), "caf\xc3\xa9");
  EXPECT_EQ(DecodeQueryComponent(""), "");
  for (const char* bad : {"%", "%2", "%zz", "a%g1", "100%"}) EXPECT_FALSE(DecodeQueryComponent(bad)) << bad;
}

}  // namespace
}  // namespace intgrads
