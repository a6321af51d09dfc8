// TestPager: a real uffd-pager process for one test, on the test's temp
// directory, with its log kept for failure messages.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/wait_for.h"
#include "uffdpager/pager_process.h"

namespace uffdpager::testing {

struct PagerProcessOptions {
  std::string version_key = "test";
  uint64_t cache_max_bytes = 1ULL << 30;
  unsigned handshake_timeout_ms = 2000;
  // Tests count faults page by page: on demand unless a test asks for
  // fault-around (the pager's default is 64).
  unsigned fault_around_max_pages = 0;
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

using ::uffdpager::WaitFor;

}  // namespace uffdpager::testing
