#include "webhook/large_review_lane.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <future>
#include <latch>
#include <string>
#include <vector>

namespace sizeguard {
namespace {

TEST(LargeReviewLane, RunsJobsOnItsOwnThreadAtIdlePriority) {
  LargeReviewLane lane(2, LanePriority::Idle);
  std::promise<int> policy;
  std::promise<std::thread::id> thread;
  ASSERT_TRUE(lane.try_post([&] {
    policy.set_value(::sched_getscheduler(0));
    thread.set_value(std::this_thread::get_id());
  }));
  EXPECT_EQ(policy.get_future().get(), SCHED_IDLE);
  EXPECT_NE(thread.get_future().get(), std::this_thread::get_id());
  EXPECT_EQ(::sched_getscheduler(0), SCHED_OTHER);  // the caller's policy is untouched
}

TEST(LargeReviewLane, NormalPriorityKeepsTheCreatorsPolicy) {
  LargeReviewLane lane(2, LanePriority::Normal);
  std::promise<int> policy;
  ASSERT_TRUE(lane.try_post([&] { policy.set_value(::sched_getscheduler(0)); }));
  EXPECT_EQ(policy.get_future().get(), SCHED_OTHER);
}

TEST(LargeReviewLane, OneAtATimeAndOnlyMaxWaitingMayQueue) {
  std::vector<std::size_t> waiting_seen;
  std::mutex seen_mutex;
  LargeReviewLane lane(1, LanePriority::Normal, [&](std::size_t waiting) {
    std::lock_guard lock(seen_mutex);
    waiting_seen.push_back(waiting);
  });
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::latch started(1);
  std::atomic<int> running{0}, most_at_once{0};
  std::promise<std::string> first, second;
  ASSERT_TRUE(lane.try_post([&] {
    most_at_once = std::max(most_at_once.load(), ++running);
    started.count_down();
    released.wait();
    --running;
    first.set_value("slow");
  }));
  started.wait();  // the first is running
  EXPECT_TRUE(lane.try_post([&] {
    most_at_once = std::max(most_at_once.load(), ++running);
    --running;
    second.set_value("second");
  }));
  EXPECT_EQ(lane.waiting(), 1u);
  EXPECT_FALSE(lane.try_post([] { ADD_FAILURE() << "a refused job ran"; }));  // the queue is full
  release.set_value();
  EXPECT_EQ(first.get_future().get(), "slow");
  EXPECT_EQ(second.get_future().get(), "second");
  EXPECT_EQ(most_at_once.load(), 1);
  std::lock_guard lock(seen_mutex);
  EXPECT_EQ(waiting_seen, (std::vector<std::size_t>{1, 0, 1, 0}));  // each queued, then taken
}

TEST(LargeReviewLane, QueuedJobsRunBeforeShutdown) {
  std::vector<int> ran;
  {
    // Declared before the lane: its destructor runs the jobs, which use them.
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    LargeReviewLane lane(8, LanePriority::Normal);
    EXPECT_TRUE(lane.try_post([&] { released.wait(); }));
    for (int i = 0; i < 8; ++i) EXPECT_TRUE(lane.try_post([&ran, i] { ran.push_back(i); }));
    release.set_value();
  }
  EXPECT_EQ(ran, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
}

}  // namespace
}  // namespace sizeguard
