// PagerProcess: a uffd-pager started (and owned) by this process: the demo,
// the tests, and orchestrators that run the pager themselves rather than
// under systemd. Destroying it stops the pager (SIGTERM, then SIGKILL) and
// reaps it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "uffdpager/pager_client.h"
#include "uffdpager/status.h"

namespace uffdpager {

class ChildProcess;

struct PagerLaunchOptions {
  std::string binary;  // path of the uffd-pager executable
  std::string data_dir;
  std::string version_key = "default";
  uint64_t cache_max_bytes = 4ULL << 30;
  unsigned handshake_timeout_ms = 10000;
  std::string log_path;  // the pager's stderr; empty: inherit ours
  std::vector<std::string> extra_args;
  std::chrono::milliseconds ready_timeout = std::chrono::seconds(10);
};

class PagerProcess {
 public:
  // Starts the pager and waits until it answers /health.
  static Result<std::unique_ptr<PagerProcess>> Launch(const PagerLaunchOptions& options);
  ~PagerProcess();

  PagerProcess(const PagerProcess&) = delete;
  PagerProcess& operator=(const PagerProcess&) = delete;

  const PagerClient& client() const { return client_; }
  pid_t pid() const;
  const std::string& root_dir() const { return root_dir_; }  // DATA/uffd/VERSION

  // Waits for the process to exit on its own; true if it did within `timeout`.
  bool WaitForExit(std::chrono::milliseconds timeout, int* wait_status = nullptr);
  void Signal(int signal);

 private:
  PagerProcess(std::unique_ptr<ChildProcess> process, std::string root_dir);
  std::unique_ptr<ChildProcess> process_;
  std::string root_dir_;
  PagerClient client_;
};

}  // namespace uffdpager
