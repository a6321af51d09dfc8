// LogRateLimiter and UFFD_LOG_RATE_LIMITED: a loop that repeats a message
// logs a line a second, and the next line says how many were left out;
// nothing is lost from the count.
#include <spdlog/sinks/ostream_sink.h>

#include <atomic>
#include <regex>
#include <sstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/logging.h"

namespace uffdpager {
namespace log_rate_limiter_test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(LogRateLimiterTest, OneLinePerSecondAndTheNextCountsTheRest) {
  LogRateLimiter limiter;
  const Clock::time_point t0 = Clock::now();
  uint64_t suppressed = 99;
  ASSERT_TRUE(limiter.Admit(t0, &suppressed));
  EXPECT_EQ(suppressed, 0u);
  // 10,029 identical failures within the same second: none logged.
  for (int i = 0; i < 10029; ++i) ASSERT_FALSE(limiter.Admit(t0 + std::chrono::microseconds(i * 90), &suppressed));
  EXPECT_FALSE(limiter.Admit(t0 + 999ms, &suppressed));
  ASSERT_TRUE(limiter.Admit(t0 + 1s, &suppressed));
  EXPECT_EQ(suppressed, 10030u);
  // The interval starts again at the line that went out.
  EXPECT_FALSE(limiter.Admit(t0 + 1500ms, &suppressed));
  ASSERT_TRUE(limiter.Admit(t0 + 3s, &suppressed));
  EXPECT_EQ(suppressed, 1u);
}

TEST(LogRateLimiterTest, ThreadsShareOneLimitAndLoseNoCount) {
  LogRateLimiter limiter;
  const Clock::time_point t0 = Clock::now();
  std::atomic<uint64_t> admitted{0}, reported{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5000; ++i) {
        uint64_t s = 0;
        if (limiter.Admit(t0, &s)) {
          admitted.fetch_add(1);
          reported.fetch_add(s);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(admitted.load(), 1u) << "one interval, one line";
  uint64_t s = 0;
  ASSERT_TRUE(limiter.Admit(t0 + 1s, &s));
  EXPECT_EQ(reported.load() + s, 19999u) << "every suppressed occurrence is counted once";
}

// The macro as the pager uses it, into a captured logger.
class RateLimitedLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    previous_ = spdlog::default_logger();
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_pattern("%v");
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  void TearDown() override { spdlog::set_default_logger(previous_); }

  std::vector<std::string> Lines() {
    std::vector<std::string> lines;
    std::istringstream in(out_.str());
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  static void FailToSaveCheckpoint(int turn) {
    UFFD_LOG_RATE_LIMITED(spdlog::level::err, "session s: save the record: No space left on device (turn {})", turn);
  }

  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(RateLimitedLogTest, ALoopLogsALineASecondAndTheNextLineCountsTheRest) {
  constexpr int kTurns = 10029;
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kTurns; ++i) FailToSaveCheckpoint(i);
  const auto loop_seconds = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - start).count();
  // However slow the machine: one line per second the loop took, at most.
  EXPECT_LE(Lines().size(), static_cast<size_t>(loop_seconds) + 1);
  EXPECT_EQ(Lines().front(), "session s: save the record: No space left on device (turn 0)");
  // After a second, the next failure is logged with the count of the rest.
  std::this_thread::sleep_for(1100ms);
  FailToSaveCheckpoint(kTurns);
  const std::regex counted(R"(\(turn (\d+)\)(?: \((\d+) similar lines suppressed since the previous one\))?)");
  uint64_t logged = 0, suppressed = 0;
  for (const auto& line : Lines()) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(line, m, counted)) << line;
    ++logged;
    if (m[2].matched) suppressed += std::stoull(m[2].str());
  }
  EXPECT_NE(Lines().back().find("(turn " + std::to_string(kTurns) + ")"), std::string::npos) << Lines().back();
  EXPECT_NE(Lines().back().find("similar lines suppressed"), std::string::npos) << Lines().back();
  EXPECT_EQ(logged + suppressed, static_cast<uint64_t>(kTurns) + 1) << out_.str();
}

TEST_F(RateLimitedLogTest, EachCallSiteHasItsOwnLimit) {
  for (int i = 0; i < 100; ++i) {
    UFFD_LOG_RATE_LIMITED(spdlog::level::warn, "first place {}", i);
    UFFD_LOG_RATE_LIMITED(spdlog::level::warn, "second place {}", i);
  }
  auto lines = Lines();
  ASSERT_GE(lines.size(), 2u);
  EXPECT_EQ(lines[0], "first place 0");
  EXPECT_EQ(lines[1], "second place 0");
}

}  // namespace
}  // namespace log_rate_limiter_test
}  // namespace uffdpager
