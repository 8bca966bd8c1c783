// Batch formation (worker/serving/batcher.h) on its own: when the compute thread
// starts a batch and how many requests it takes.
#include "worker/serving/batcher.h"

#include <gtest/gtest.h>

namespace intgrads {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

TEST(Batcher, NothingQueuedIsNothingTakenAndNoDeadline) {
  const BatchDecision d = DecideBatch(0, Clock::now(), Clock::now(), {4, milliseconds(10)}, false);
  EXPECT_EQ(d.take, 0U);
  EXPECT_FALSE(d.wait_until.has_value());
}

TEST(Batcher, WithoutAWindowWhatIsQueuedGoesAtOnceUpToTheMost) {
  const auto now = Clock::now();
  EXPECT_EQ(DecideBatch(1, now, now, {1, milliseconds(0)}, false).take, 1U);
  EXPECT_EQ(DecideBatch(3, now, now, {1, milliseconds(0)}, false).take, 1U);  // one at a time
  EXPECT_EQ(DecideBatch(3, now, now, {8, milliseconds(0)}, false).take, 3U);  // what queued while busy
  EXPECT_EQ(DecideBatch(20, now, now, {8, milliseconds(0)}, false).take, 8U);
}

TEST(Batcher, AWindowWaitsForCompanyUntilTheOldestHasWaitedIt) {
  const auto oldest = Clock::now();
  const BatchPolicy policy{4, milliseconds(50)};
  BatchDecision d = DecideBatch(2, oldest, oldest + milliseconds(10), policy, false);
  EXPECT_EQ(d.take, 0U);
  ASSERT_TRUE(d.wait_until.has_value());
  EXPECT_EQ(*d.wait_until, oldest + milliseconds(50));
  // Due: the two go as they are.
  EXPECT_EQ(DecideBatch(2, oldest, oldest + milliseconds(50), policy, false).take, 2U);
  // A full batch goes at once, window or not.
  EXPECT_EQ(DecideBatch(4, oldest, oldest + milliseconds(1), policy, false).take, 4U);
  EXPECT_EQ(DecideBatch(9, oldest, oldest, policy, false).take, 4U);
  // A worker that is stopping waits for nothing.
  EXPECT_EQ(DecideBatch(2, oldest, oldest, policy, true).take, 2U);
}

TEST(Batcher, AMostOfZeroStillTakesOne) {
  const auto now = Clock::now();
  EXPECT_EQ(DecideBatch(5, now, now, {0, milliseconds(0)}, false).take, 1U);
}

}  // namespace
}  // namespace intgrads
