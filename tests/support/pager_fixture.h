// PagerFixture: a test with a temp directory, a real uffd-pager process on it,
// and snapshot files generated into it. Skips (with the reason) where the
// machine has no userfaultfd.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "common/userfaultfd.h"
#include "common/wait_for.h"
#include "support/pager_process.h"
#include "support/temp_dir.h"
#include "support/test_snapshot.h"
#include "support/vmm_stand_in.h"

namespace uffdpager::testing {

// Empty if userfaultfd works here, else why not.
inline std::string UserfaultfdUnavailableReason() {
  auto uffd = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
  if (!uffd.ok()) return "userfaultfd is not available on this machine: " + uffd.status().ToString();
  return "";
}

#define UFFD_SKIP_WITHOUT_USERFAULTFD()                                      \
  do {                                                                       \
    std::string _why = ::uffdpager::testing::UserfaultfdUnavailableReason(); \
    if (!_why.empty()) GTEST_SKIP() << _why;                                 \
  } while (0)

class PagerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    UFFD_SKIP_WITHOUT_USERFAULTFD();
    ASSERT_FALSE(dir_.path().empty());
  }

  void StartPager(PagerProcessOptions options = {}) {
    auto p = TestPager::Start(dir_.path(), options);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    pager_ = std::move(*p);
  }

  // A generated memory file of `size` bytes named `name` in the temp dir.
  std::string MakeSnapshot(const std::string& name, uint64_t size, uint64_t seed) {
    std::string path = dir_ / name;
    EXPECT_TRUE(WriteTestSnapshot(path, size, seed));
    return path;
  }

  // A create of session `id` for instance "vm-<id>"; the caller names its memory.
  static CreateSessionRequest SessionRequest(const std::string& id) {
    CreateSessionRequest req;
    req.session_id = id;
    req.instance_id = "vm-" + id;
    return req;
  }

  // Creates a session and returns its socket path (asserts on failure).
  std::string CreateSession(const std::string& id, const std::string& backing, const std::string& cache_key = "",
                            bool kill_client_on_failure = false) {
    CreateSessionRequest req = SessionRequest(id);
    req.backing_memory_path = backing;
    req.cache_key = cache_key;
    req.kill_client_on_failure = kill_client_on_failure;
    auto created = pager_->client().CreateSession(req);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    return created.ok() ? created->uffd_socket_path : "";
  }

  // Session `id` as `pager` describes it (the fixture's pager unless named).
  static nlohmann::json Session(const TestPager& pager, const std::string& id) {
    auto s = pager.client().GetSession(id);
    EXPECT_TRUE(s.ok()) << id << ": " << s.status().ToString();
    return s.ok() ? *s : nlohmann::json::object();
  }
  nlohmann::json Session(const std::string& id) { return Session(*pager_, id); }

  static std::string SessionState(const TestPager& pager, const std::string& id) {
    return Session(pager, id).value("state", "?");
  }
  std::string SessionState(const std::string& id) { return SessionState(*pager_, id); }

  // Waits (up to 10 s) until the pager holds exactly `count` userfaultfds.
  // A session reports its end before its thread lets go of the VM's
  // userfaultfd, so a count right after a state change can still see it.
  bool WaitForUserfaultfds(size_t count) {
    return WaitFor([&] { return pager_->CountUserfaultfds() == count; });
  }

  // The pager's control socket.
  std::string ControlSocket() const { return pager_->root_dir() + "/control.sock"; }

  uint64_t Stat(const std::string& name) {
    auto s = pager_->client().Stats();
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? s->value(name, uint64_t{0}) : 0;
  }

  TempDir dir_;
  std::unique_ptr<TestPager> pager_;
};

}  // namespace uffdpager::testing
