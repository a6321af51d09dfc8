// TestPager: a real uffd-pager process for one test, on the test's temp
// directory, with its log kept for failure messages.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "uffdpager/pager_process.h"

namespace uffdpager::testing {

struct PagerProcessOptions {
  std::string version_key = "test";
  uint64_t cache_max_bytes = 1ULL << 30;
  unsigned handshake_timeout_ms = 2000;
  std::vector<std::string> extra_args;
};

class TestPager {
 public:
  static Result<std::unique_ptr<TestPager>> Start(const std::string& data_dir, const PagerProcessOptions& options = {});

  const PagerClient& client() const { return process_->client(); }
  pid_t pid() const { return process_->pid(); }
  std::string root_dir() const { return process_->root_dir(); }
  bool WaitForExit(std::chrono::milliseconds timeout, int* wait_status = nullptr) {
    return process_->WaitForExit(timeout, wait_status);
  }
  void Kill(int signal) { process_->Signal(signal); }
  // How many userfaultfds the pager process holds right now (/proc/PID/fd).
  size_t CountUserfaultfds() const;
  std::string Log() const;

 private:
  std::unique_ptr<PagerProcess> process_;
  std::string log_path_;
};

// Polls `condition` every 10 ms until it holds or `timeout` passes.
template <typename F>
bool WaitFor(F condition, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    struct timespec ts{0, 10 * 1000 * 1000};
    nanosleep(&ts, nullptr);
  }
  return condition();
}

}  // namespace uffdpager::testing
