#include "uffdpager/pager_process.h"

#include <signal.h>

#include "common/child_process.h"
#include "common/wait_for.h"

namespace uffdpager {

PagerProcess::PagerProcess(std::unique_ptr<ChildProcess> process, std::string root_dir)
    : process_(std::move(process)), root_dir_(std::move(root_dir)), client_(root_dir_ + "/control.sock") {}

Result<std::unique_ptr<PagerProcess>> PagerProcess::Launch(const PagerLaunchOptions& options) {
  std::vector<std::string> args = {options.binary,
                                   "--data-dir",
                                   options.data_dir,
                                   "--version-key",
                                   options.version_key,
                                   "--cache-max-bytes",
                                   std::to_string(options.cache_max_bytes),
                                   "--handshake-timeout-ms",
                                   std::to_string(options.handshake_timeout_ms)};
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  auto child = ChildProcess::Spawn(args, options.log_path);
  if (!child.ok()) return child.status();
  std::unique_ptr<PagerProcess> p(new PagerProcess(std::make_unique<ChildProcess>(std::move(*child)),
                                                   options.data_dir + "/uffd/" + options.version_key));
  int status = 0;
  bool exited = false;
  bool up = WaitFor(
      [&] {
        exited = p->process_->WaitForExit(std::chrono::milliseconds(0), &status);
        return exited || p->client_.Health().ok();
      },
      options.ready_timeout);
  if (exited) {
    return Status::Internal("uffd-pager exited at start-up with status " + std::to_string(status) +
                            (options.log_path.empty() ? "" : "; see " + options.log_path));
  }
  if (!up) return Status::Timeout("uffd-pager did not answer /health on " + p->client_.control_socket_path());
  return p;
}

PagerProcess::~PagerProcess() = default;  // ChildProcess stops and reaps it

pid_t PagerProcess::pid() const { return process_->pid(); }

void PagerProcess::Signal(int signal) { process_->Kill(signal); }

bool PagerProcess::WaitForExit(std::chrono::milliseconds timeout, int* wait_status) {
  return process_->WaitForExit(timeout, wait_status);
}

}  // namespace uffdpager
