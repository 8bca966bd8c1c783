#include "common/secret.h"

#include <gtest/gtest.h>

namespace intgrads {
namespace {

TEST(Secret, ConstantTimeEqualsComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("Bearer s3cret", "Bearer s3cret"));
  EXPECT_FALSE(ConstantTimeEquals("Bearer s3cret", "Bearer s3creT"));
  EXPECT_FALSE(ConstantTimeEquals("Bearer s3cret", "Bearer s3cre"));
  EXPECT_FALSE(ConstantTimeEquals("Bearer s3cre", "Bearer s3cret"));
  EXPECT_FALSE(ConstantTimeEquals("", "x"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(Secret, ListensOnAllInterfacesForWildcardsOnly) {
  for (const char* open : {"0.0.0.0", "::", "*", "tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://[::]:5555"}) {
    EXPECT_TRUE(ListensOnAllInterfaces(open)) << open;
  }
  for (const char* local : {"localhost", "127.0.0.1", "10.0.0.2", "tcp://127.0.0.1:5555", "tcp://10.0.0.2:5555",
                            "ipc:///tmp/intgrads.sock", "inproc://workers", ""}) {
    EXPECT_FALSE(ListensOnAllInterfaces(local)) << local;
  }
}

}  // namespace
}  // namespace intgrads
