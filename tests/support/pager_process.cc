#include "support/pager_process.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#ifndef UFFD_PAGER_BIN
#error "UFFD_PAGER_BIN must name the uffd-pager binary"
#endif

namespace uffdpager::testing {

Result<std::unique_ptr<TestPager>> TestPager::Start(const std::string& data_dir, const PagerProcessOptions& options) {
  PagerLaunchOptions launch;
  launch.binary = UFFD_PAGER_BIN;
  launch.data_dir = data_dir;
  launch.version_key = options.version_key;
  launch.cache_max_bytes = options.cache_max_bytes;
  launch.handshake_timeout_ms = options.handshake_timeout_ms;
  launch.log_path = data_dir + "/pager-" + options.version_key + ".log";
  launch.extra_args = {"--log-level", "debug", "--fault-around-max-pages",
                       std::to_string(options.fault_around_max_pages)};
  launch.extra_args.insert(launch.extra_args.end(), options.extra_args.begin(), options.extra_args.end());
  std::unique_ptr<TestPager> pager(new TestPager());
  pager->log_path_ = launch.log_path;
  auto process = PagerProcess::Launch(launch);
  if (!process.ok()) return process.status().WithContext("start uffd-pager:\n" + pager->Log());
  pager->process_ = std::move(*process);
  return pager;
}

size_t TestPager::CountUserfaultfds() const {
  size_t n = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid()) + "/fd", ec)) {
    auto target = std::filesystem::read_symlink(entry.path(), ec);
    if (!ec && target.string() == "anon_inode:[userfaultfd]") ++n;
  }
  return n;
}

std::string TestPager::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace uffdpager::testing
