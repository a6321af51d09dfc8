// SessionRegistry::Create in process, for what a test pager cannot show: a
// socket owner the pager may not set (it is not root) is refused before a
// live session of the same id is touched.
#include "pager/serving/session_registry.h"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/unix_socket.h"
#include "support/temp_dir.h"

namespace uffdpager {
namespace session_registry_test {
namespace {

constexpr uid_t kNobody = 65534;

// Creates session "vm" in `dir`, then the same id with a socket given to
// root; empty if the refusal left the first session alone, else what went wrong.
std::string ReplaceWithASocketForRoot(const testing::TempDir& dir) {
  std::filesystem::create_directories(dir / "sessions");
  std::ofstream(dir / "mem") << std::string(4096, 'm');
  PageCache cache(1 << 20);
  MetricsRegistry metrics;
  SessionEnvironment env;
  env.cache = &cache;
  env.metrics = &metrics;
  SessionRegistry registry(dir / "sessions", env);
  SessionSpec spec;
  spec.id = "vm";
  spec.instance_id = "vm";
  spec.backing_path = dir / "mem";
  spec.cache_key = spec.backing_path;
  auto live = registry.Create(spec);
  if (!live.ok()) return "the first create failed: " + live.status().ToString();

  SessionSpec to_root = spec;
  to_root.socket_ownership.uid = 0;
  auto refused = registry.Create(to_root);
  if (refused.ok()) return "a socket was given to root by a pager that is not root";
  if (refused.status().code() != ErrorCode::kPermissionDenied) return "not a 403: " + refused.status().ToString();
  if (registry.Find("vm") != *live) return "the live session was replaced or removed";
  if ((*live)->state() != SessionState::kWaiting) return "the live session is no longer waiting";
  auto conn = ConnectUnixSocket((*live)->socket_path());
  if (!conn.ok()) return "the live session's socket no longer takes connections: " + conn.status().ToString();
  return "";
}

// As a user who may not give a socket to root: root drops to nobody (the
// death test runs this in a child process of its own). Exits 0 on success.
void AsNonRootReplaceWithASocketForRoot() {
  std::string error;
  {
    testing::TempDir dir;
    if (dir.path().empty()) {
      error = "mkdtemp failed";
    } else if (::geteuid() == 0 && ::chown(dir.path().c_str(), kNobody, kNobody) != 0) {
      error = "cannot give the temp dir to nobody";
    } else if (::geteuid() == 0 && (::setgroups(0, nullptr) != 0 || ::setresgid(kNobody, kNobody, kNobody) != 0 ||
                                    ::setresuid(kNobody, kNobody, kNobody) != 0)) {
      error = "cannot become nobody";
    } else {
      error = ReplaceWithASocketForRoot(dir);
    }
  }  // the dir is removed by its owner (nobody, for root)
  std::fprintf(stderr, "%s\n", error.empty() ? "the live session was left alone" : error.c_str());
  std::fflush(stderr);
  std::_Exit(error.empty() ? 0 : 1);
}

TEST(SessionRegistryDeathTest, ASocketOwnerThePagerMayNotSetLeavesTheLiveSessionAlone) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(AsNonRootReplaceWithASocketForRoot(), ::testing::ExitedWithCode(0), "the live session was left alone");
}

}  // namespace
}  // namespace session_registry_test
}  // namespace uffdpager
