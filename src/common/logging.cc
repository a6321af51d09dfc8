#include "common/logging.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace uffdpager {

namespace {

// True if stderr is connected to journald (systemd sets JOURNAL_STREAM to
// the "device:inode" of the stream it gave us).
bool StderrIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  struct stat st {};
  if (stream == nullptr || ::fstat(STDERR_FILENO, &st) != 0) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  return dev == static_cast<unsigned long long>(st.st_dev) && ino == static_cast<unsigned long long>(st.st_ino);
}

// "<N>": the syslog priority prefix journald reads from a stream
// (SyslogLevelPrefix=), so `journalctl -p warning` filters our levels.
class JournalPriorityFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    static constexpr char kPriority[] = {'7', '7', '6', '4', '3', '2', '6'};  // trace..critical, off
    const char text[] = {'<', kPriority[static_cast<int>(msg.level)], '>'};
    dest.append(text, text + sizeof(text));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JournalPriorityFlag>(); }
};

}  // namespace

void ConfigureLogging(const std::string& program, const std::string& level) {
  auto logger = spdlog::stderr_logger_mt(program);
  if (StderrIsJournal()) {
    // journald stamps time and pid itself; a priority prefix gives it the level.
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<JournalPriorityFlag>('*').set_pattern("%*%l %v");
    logger->set_formatter(std::move(formatter));
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %n[%P] %^%l%$ %v");
  }
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

bool LogRateLimiter::Admit(std::chrono::steady_clock::time_point now, uint64_t* suppressed) {
  const int64_t t = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  int64_t next = next_ns_.load(std::memory_order_relaxed);
  // One thread wins each interval; the others count as suppressed.
  if (t < next || !next_ns_.compare_exchange_strong(next, t + kInterval.count(), std::memory_order_relaxed)) {
    suppressed_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  *suppressed = suppressed_.exchange(0, std::memory_order_relaxed);
  return true;
}

void LogAdmitted(spdlog::level::level_enum level, const std::string& message, uint64_t suppressed) {
  if (suppressed == 0) {
    spdlog::log(level, "{}", message);
  } else {
    spdlog::log(level, "{} ({} similar lines suppressed since the previous one)", message, suppressed);
  }
}

}  // namespace uffdpager
