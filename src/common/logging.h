// Process-wide logging set-up (spdlog to stderr, which journald captures),
// and a rate limit for lines a loop can repeat.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace uffdpager {

void ConfigureLogging(const std::string& program, const std::string& level);

// Lets one occurrence through per interval and counts the others, so a loop
// that fails the same way on every turn (a full disk under every checkpoint)
// logs a line a second, not thousands. Thread-safe and lock-free.
class LogRateLimiter {
 public:
  static constexpr std::chrono::nanoseconds kInterval = std::chrono::seconds(1);

  constexpr LogRateLimiter() = default;
  LogRateLimiter(const LogRateLimiter&) = delete;
  LogRateLimiter& operator=(const LogRateLimiter&) = delete;

  // Whether the occurrence at `now` is to be logged. If it is, `*suppressed`
  // is set to how many occurrences since the last logged one were not.
  bool Admit(std::chrono::steady_clock::time_point now, uint64_t* suppressed);
  bool Admit(uint64_t* suppressed) { return Admit(std::chrono::steady_clock::now(), suppressed); }

 private:
  // When the next occurrence may be logged (steady clock, ns).
  std::atomic<int64_t> next_ns_{std::numeric_limits<int64_t>::min()};
  std::atomic<uint64_t> suppressed_{0};
};

// Logs `message`, followed by how many lines were suppressed before it.
void LogAdmitted(spdlog::level::level_enum level, const std::string& message, uint64_t suppressed);

}  // namespace uffdpager

// Like spdlog::log(level, format, args...), but one call site logs at most
// once a second; the next line it logs says how many it suppressed. For log
// calls in loops; the message is only formatted when it is logged.
#define UFFD_LOG_RATE_LIMITED(level, ...)                                                                      \
  do {                                                                                                         \
    static ::uffdpager::LogRateLimiter uffd_log_limiter_;                                                      \
    uint64_t uffd_log_suppressed_ = 0;                                                                         \
    if (::spdlog::default_logger_raw()->should_log(level) && uffd_log_limiter_.Admit(&uffd_log_suppressed_)) { \
      ::uffdpager::LogAdmitted(level, ::fmt::format(__VA_ARGS__), uffd_log_suppressed_);                       \
    }                                                                                                          \
  } while (0)
