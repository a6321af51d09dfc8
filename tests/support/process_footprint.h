// ProcessFootprint: what a process holds, from /proc: fds, threads and
// anonymous mappings. Tests compare the pager's before and after a load.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/wait_for.h"

namespace uffdpager::testing {

struct ProcessFootprint {
  size_t fds = 0;
  size_t threads = 0;
  size_t anonymous_mappings = 0;

  static ProcessFootprint Of(pid_t pid) {
    ProcessFootprint f;
    std::string proc = "/proc/" + std::to_string(pid);
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(proc + "/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
      ++f.fds;
    for (auto it = std::filesystem::directory_iterator(proc + "/task", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
      ++f.threads;
    std::ifstream maps(proc + "/maps");
    std::string line;
    while (std::getline(maps, line)) {
      // address perms offset dev inode [path]: no path means anonymous.
      std::istringstream fields(line);
      std::string a, b, c, d, e, path;
      fields >> a >> b >> c >> d >> e >> path;
      if (path.empty()) ++f.anonymous_mappings;
    }
    return f;
  }

  // Fds and threads: what must come back exactly once a load has ended.
  bool SameFdsAndThreads(const ProcessFootprint& other) const { return fds == other.fds && threads == other.threads; }
  // No more fds and threads than `other`: nothing a finished session held is left.
  bool FdsAndThreadsAtMost(const ProcessFootprint& other) const { return fds <= other.fds && threads <= other.threads; }

  std::string ToString() const {
    return "fds " + std::to_string(fds) + ", threads " + std::to_string(threads) + ", anonymous mappings " +
           std::to_string(anonymous_mappings);
  }
};

// Waits (up to 10 s) until `pid`'s fds and threads stay the same over two
// looks 200 ms apart, and sets `*steady` to that footprint; false if they
// never settled.
inline bool WaitForSteadyFootprint(pid_t pid, ProcessFootprint* steady) {
  ProcessFootprint last;
  return WaitFor(
      [&] {
        *steady = ProcessFootprint::Of(pid);
        const bool same = steady->SameFdsAndThreads(last);
        last = *steady;
        return same;
      },
      std::chrono::seconds(10), std::chrono::milliseconds(200));
}

}  // namespace uffdpager::testing
