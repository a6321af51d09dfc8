// POST /sessions against hostile input, on a real pager: a refused create
// leaves a live session of the same id serving its VM byte-exact; FIFOs,
// devices, sockets and directories are refused at once, never blocking the
// pager; errors name the path the caller gave; control characters and paths
// or ids too long for the kernel are refused naming the field or the limit.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "common/http_client.h"
#include "common/unix_socket.h"
#include "support/pager_fixture.h"

namespace uffdpager::testing::create_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
constexpr uint64_t kSnapshotBytes = 12 * kMiB;
const std::vector<uint64_t> kRegions = {8 * kMiB, 4 * kMiB};
// What a Unix socket address holds: sun_path less its terminating NUL.
constexpr size_t kMaxSocketPathBytes = 107;
// A failure guard for answers that must come at once.
constexpr std::chrono::seconds kAnswerDeadline{10};

// A control character, as the error message must never carry one.
bool HasControlCharacter(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

class PagerCreateTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    std::filesystem::create_directories(dir_ / "snaps");
    std::filesystem::create_directories(dir_ / "outside");
    snap_ = MakeSnapshot("snaps/mem", kSnapshotBytes, 31);
    file_ = ReadFileBytes(snap_);
  }

  void StartPagerWithRoot() {
    PagerProcessOptions options;
    options.extra_args = {"--allowed-backing-root", dir_ / "snaps"};
    StartPager(options);
  }

  // POST /sessions with `body`; the HTTP exchange itself must succeed.
  HttpResponse Post(const nlohmann::json& body) {
    HttpClient http(ControlSocket());
    auto r = http.Send("POST", "/sessions", body.dump(), std::chrono::seconds(60));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : HttpResponse{};
  }

  // POST /sessions naming `fifo`, which must be answered within
  // kAnswerDeadline. If it is not (the pager blocked opening the FIFO), a
  // writer opens the FIFO so the pager's thread goes on, and the test fails.
  HttpResponse PostNamingFifo(const nlohmann::json& body, const std::string& fifo) {
    auto answer = std::async(std::launch::async, [&] { return Post(body); });
    bool answered = answer.wait_for(kAnswerDeadline) == std::future_status::ready;
    UniqueFd writer;
    if (!answered) writer.reset(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    EXPECT_TRUE(answered) << "POST /sessions naming the FIFO " << fifo << " was not answered within "
                          << kAnswerDeadline.count() << " s";
    return answer.get();
  }

  // POST /sessions with `body`, expected to be refused with `status` and an
  // error containing `words` (and no control character).
  void ExpectRefused(const nlohmann::json& body, int status, const std::string& words) {
    HttpResponse r = Post(body);
    EXPECT_EQ(r.status, status) << body.dump() << " -> " << r.body;
    std::string error = nlohmann::json::parse(r.body, nullptr, false).value("error", "");
    EXPECT_NE(error.find(words), std::string::npos) << body.dump() << " -> " << r.body;
    EXPECT_FALSE(HasControlCharacter(error)) << r.body;
  }

  // A VM restored through session `id`, serving.
  void StartVm(const std::string& id) {
    auto vm = VmmStandIn::Restore(CreateSession(id, snap_), kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    vm_ = std::move(*vm);
    ASSERT_TRUE(WaitFor([&] { return SessionState(id) == "serving"; }));
    incarnation_ = Session(id).value("incarnation", uint64_t{0});
  }

  // The live session `id` is the one StartVm made, still serving; its VM's
  // next 32 first touches are served byte-exact. Checked in that order: a
  // VM whose session is gone would hang on its next first touch.
  void ExpectVmStillServed(const std::string& id) {
    nlohmann::json s = Session(id);
    ASSERT_EQ(s.value("state", ""), "serving") << s.dump();
    ASSERT_EQ(s.value("incarnation", uint64_t{0}), incarnation_) << "the live session was replaced: " << s.dump();
    for (int i = 0; i < 32; ++i, ++next_page_) {
      uint64_t off = (next_page_ * 4096 * 7) % kSnapshotBytes;
      ASSERT_EQ(0, std::memcmp(vm_->memory.AtFileOffset(off), &file_[off], 4096)) << "page at " << off;
    }
  }

  std::string snap_;
  std::vector<uint8_t> file_;
  std::unique_ptr<VmmStandIn> vm_;
  uint64_t incarnation_ = 0;
  uint64_t next_page_ = 0;
};

nlohmann::json Body(const std::string& id, const std::string& path) {
  return {{"session_id", id}, {"instance_id", "vm-" + id}, {"backing_memory_path", path}};
}

nlohmann::json LayersBody(const std::string& id, const std::vector<std::string>& layers) {
  return {{"session_id", id}, {"instance_id", "vm-" + id}, {"backing_layers", layers}};
}

TEST_F(PagerCreateTest, AChainThatCannotBeServedIsRefusedNamingItsLayerAndTheLiveSessionServesOn) {
  StartPagerWithRoot();
  StartVm("vm");
  const std::string fifo = dir_ / "snaps/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  const std::string small = dir_ / "snaps/small";
  WriteTestSnapshot(small, kSnapshotBytes - 4096, 33);
  WriteTestSnapshot(dir_ / "outside/mem", kSnapshotBytes, 34);

  ExpectRefused(LayersBody("vm", {snap_, small}), 400,
                "layer 1 (" + small + ") is " + std::to_string(kSnapshotBytes - 4096) + " bytes");
  ExpectVmStillServed("vm");
  ExpectRefused(LayersBody("vm", {snap_, snap_, dir_ / "snaps/missing"}), 400, "layer 2 of \"backing_layers\"");
  ExpectVmStillServed("vm");
  ExpectRefused(LayersBody("vm", {snap_, dir_ / "outside/mem"}), 403, "not beneath an allowed backing root");
  ExpectVmStillServed("vm");
  ExpectRefused(LayersBody("vm", std::vector<std::string>(17, snap_)), 400, "more than the 16 a session may have");
  ExpectVmStillServed("vm");
  ExpectRefused(LayersBody("vm", {snap_, "relative/layer"}), 400, "\"backing_layers[1]\" must be an absolute path");
  ExpectVmStillServed("vm");
  HttpResponse r = PostNamingFifo(LayersBody("vm", {snap_, fifo}), fifo);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find(fifo + " is not a regular file (it is a FIFO)"), std::string::npos) << r.body;
  ExpectVmStillServed("vm");
  nlohmann::json both = LayersBody("vm", {snap_});
  both["backing_memory_path"] = snap_;
  ExpectRefused(both, 400, "not more: a session serves one memory");
  ExpectVmStillServed("vm");
  nlohmann::json not_a_path = LayersBody("vm", {snap_});
  not_a_path["backing_layers"].push_back(7);
  ExpectRefused(not_a_path, 400, "backing_layers");
  ExpectVmStillServed("vm");
}

TEST_F(PagerCreateTest, ARefusedCreateLeavesTheLiveSessionOfThatIdServing) {
  StartPagerWithRoot();
  StartVm("vm");
  ASSERT_EQ(::mkfifo((dir_ / "snaps/fifo").c_str(), 0600), 0) << std::strerror(errno);
  std::filesystem::create_directories(dir_ / "snaps/dir");
  WriteTestSnapshot(dir_ / "outside/mem", kSnapshotBytes, 32);

  ExpectRefused(Body("vm", dir_ / "snaps/missing"), 400, "No such file");
  ExpectVmStillServed("vm");
  ExpectRefused(Body("vm", dir_ / "outside/mem"), 403, "not beneath an allowed backing root");
  ExpectVmStillServed("vm");
  ExpectRefused(Body("vm", dir_ / "snaps/../outside/mem"), 403, "leads outside");
  ExpectVmStillServed("vm");
  HttpResponse fifo = PostNamingFifo(Body("vm", dir_ / "snaps/fifo"), dir_ / "snaps/fifo");
  EXPECT_EQ(fifo.status, 400) << fifo.body;
  ExpectVmStillServed("vm");
  ExpectRefused(Body("vm", dir_ / "snaps/dir"), 400, "is not a regular file");
  ExpectVmStillServed("vm");
  ExpectRefused(Body("vm", "relative/mem"), 400, "absolute");
  ExpectVmStillServed("vm");
  nlohmann::json control = Body("vm", snap_);
  control["cache_key"] = "key\nwith a newline";
  ExpectRefused(control, 400, "cache_key");
  ExpectVmStillServed("vm");
  ExpectRefused(Body("vm", dir_ / "snaps/" + std::string(300, 'n')), 400, "NAME_MAX");
  ExpectVmStillServed("vm");
  nlohmann::json wrong_type = Body("vm", snap_);
  wrong_type["kill_client_on_failure"] = "yes";
  ExpectRefused(wrong_type, 400, "kill_client_on_failure");
  ExpectVmStillServed("vm");

  // A file that is not a socket where the new session would listen.
  const std::string socket_path = pager_->root_dir() + "/sessions/vm.sock";
  ASSERT_NE(::access(socket_path.c_str(), F_OK), 0) << "a serving session's socket file is removed";
  std::ofstream(socket_path) << "not a socket";
  ExpectRefused(Body("vm", snap_), 409, "not a socket");
  ExpectVmStillServed("vm");
  std::filesystem::remove(socket_path);

  // The whole VM, byte-exact, after all of that.
  ASSERT_EQ(SessionState("vm"), "serving");
  EXPECT_TRUE(MatchesSnapshotFile(vm_->memory, snap_));

  // A good create still replaces it.
  HttpResponse replaced = Post(Body("vm", snap_));
  ASSERT_EQ(replaced.status, 200) << replaced.body;
  nlohmann::json s = Session("vm");
  EXPECT_EQ(s.value("state", ""), "waiting") << s.dump();
  EXPECT_NE(s.value("incarnation", uint64_t{0}), incarnation_);
}

TEST_F(PagerCreateTest, HostileFileTypesAreRefusedAtOnceNamingTheType) {
  StartPager();
  StartVm("vm");
  const std::string fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  ASSERT_EQ(::symlink(fifo.c_str(), (dir_ / "link-to-fifo").c_str()), 0) << std::strerror(errno);
  auto sock = ListenUnixSocket(dir_ / "a.sock", 0600);
  ASSERT_TRUE(sock.ok()) << sock.status().ToString();

  for (const std::string& path : {fifo, dir_ / "link-to-fifo"}) {
    HttpResponse r = PostNamingFifo(Body("fifo", path), fifo);
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_NE(r.body.find(path + " is not a regular file (it is a FIFO)"), std::string::npos) << r.body;
  }
  struct Case {
    std::string path;
    std::string type;
  };
  for (const Case& c : {Case{"/dev/zero", "a character device"}, Case{"/dev/null", "a character device"},
                        Case{dir_.path(), "a directory"}, Case{dir_ / "a.sock", "a socket"}}) {
    ExpectRefused(Body("other", c.path), 400, c.path + " is not a regular file (it is " + c.type + ")");
  }
  // Nothing of that was kept, and the pager still creates and serves.
  auto list = pager_->client().ListSessions();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_EQ(list->size(), 1u);
  ExpectVmStillServed("vm");
  EXPECT_FALSE(CreateSession("after", snap_).empty());
}

TEST_F(PagerCreateTest, AFifoBeneathTheRootIsRefusedAtOnceToo) {
  StartPagerWithRoot();
  const std::string fifo = dir_ / "snaps/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  ASSERT_EQ(::symlink("fifo", (dir_ / "snaps/link").c_str()), 0) << std::strerror(errno);
  for (const std::string& path : {fifo, dir_ / "snaps/link"}) {
    HttpResponse r = PostNamingFifo(Body("fifo", path), fifo);
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_NE(r.body.find(path + " is not a regular file (it is a FIFO)"), std::string::npos) << r.body;
    EXPECT_EQ(r.body.find("/proc/self/fd"), std::string::npos) << r.body;
  }
  EXPECT_FALSE(CreateSession("after", snap_).empty());
}

// A create in flight when SIGTERM comes neither keeps the pager from exiting
// nor leaves a session behind (socket file, record).
TEST_F(PagerCreateTest, SigtermStopsThePagerWithCreatesInFlight) {
  StartPager();
  const std::string fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  std::atomic<bool> stop{false};
  std::atomic<int> answers{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      HttpClient http(ControlSocket());
      for (int i = 0; !stop.load(); ++i) {
        std::string path = (t % 2 == 0) ? fifo : snap_;
        auto r = http.Send("POST", "/sessions", Body("c" + std::to_string(t) + "-" + std::to_string(i), path).dump(),
                           std::chrono::seconds(60));
        if (!r.ok()) return;  // the pager is gone
        answers.fetch_add(1);
      }
    });
  }
  // Failure guard only: whenever SIGTERM comes, the pager must exit.
  WaitFor([&] { return answers.load() >= 40; }, std::chrono::seconds(3));
  pager_->Kill(SIGTERM);
  int wait_status = 0;
  bool exited = pager_->WaitForExit(std::chrono::seconds(20), &wait_status);
  UniqueFd writer;
  if (!exited) writer.reset(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));  // let it go on
  stop.store(true);
  EXPECT_TRUE(exited) << "the pager did not exit within 20 s of SIGTERM with creates in flight";
  if (!exited) exited = pager_->WaitForExit(std::chrono::seconds(20), &wait_status);
  for (auto& c : clients) c.join();
  ASSERT_TRUE(exited);
  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) << "wait status " << wait_status;
  // Nothing of any session is left: no socket, no record.
  std::vector<std::string> left;
  for (const char* sub : {"/sessions", "/live"}) {
    for (const auto& e : std::filesystem::directory_iterator(pager_->root_dir() + sub)) left.push_back(e.path());
  }
  EXPECT_TRUE(left.empty()) << left.size() << " files left, the first " << left.front();
}

TEST_F(PagerCreateTest, ErrorsNameThePathAsGivenAndDotsAndSlashesAreNormalized) {
  StartPagerWithRoot();
  std::filesystem::create_directories(dir_ / "snaps/dir");
  ExpectRefused(Body("dir", dir_ / "snaps/dir"), 400, (dir_ / "snaps/dir") + " is not a regular file");
  EXPECT_EQ(Post(Body("dir", dir_ / "snaps/dir")).body.find("/proc/self/fd"), std::string::npos);

  // "//" and "/./" are spelling, wherever they are; ".." stays the kernel's
  // business beneath the root.
  const std::string root = dir_ / "snaps";
  std::string spelled = "/." + dir_.path().substr(0, 5) + "/" + dir_.path().substr(5) + "//snaps/./mem";
  HttpResponse r = Post(Body("spelled", spelled));
  ASSERT_EQ(r.status, 200) << spelled << " -> " << r.body;
  EXPECT_EQ(Session("spelled").value("backing_memory_path", ""), spelled) << "shown as the caller wrote it";
  auto vm = VmmStandIn::Restore(nlohmann::json::parse(r.body).value("uffd_socket_path", ""), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
  EXPECT_EQ(Post(Body("dots", root + "/./dir/../mem")).status, 200);
  ExpectRefused(Body("escape", root + "//..//outside/mem"), 403, root + "//..//outside/mem");
}

TEST_F(PagerCreateTest, PathsTooLongForTheKernelAreRefusedNamingTheLimit) {
  StartPager();
  std::string long_path = dir_.path();
  while (long_path.size() < 5000) long_path += "/" + std::string(100, 'd');
  ExpectRefused(Body("long", long_path), 400, "PATH_MAX");
  ExpectRefused(Body("long", long_path), 400, "4096");
  ExpectRefused(Body("long", dir_ / std::string(256, 'c')), 400, "NAME_MAX");
  ExpectRefused(Body("long", dir_ / std::string(256, 'c')), 400, "255");
  // The longest that the kernel accepts are not refused for their length.
  ExpectRefused(Body("long", dir_ / std::string(255, 'c')), 400, "No such file");
}

TEST_F(PagerCreateTest, ControlCharactersAreRefusedNamingTheField) {
  StartPager();
  StartVm("vm");
  struct Case {
    std::string field;
    std::string value;
  };
  const std::string forged = "\n[2030-01-01 00:00:00.000] [info] FORGED";
  for (const Case& c : {Case{"backing_memory_path", snap_ + forged}, Case{"backing_memory_path", snap_ + '\0' + "x"},
                        Case{"backing_memory_path", snap_ + "\x7f"}, Case{"cache_key", "key" + forged},
                        Case{"cache_key", std::string("k\0y", 3)}, Case{"instance_id", "vm" + forged},
                        Case{"instance_id", "vm\x1b[31m"}, Case{"session_id", "vm" + forged},
                        Case{"session_id", std::string("vm\0", 3)}}) {
    nlohmann::json body = Body("ctl", snap_);
    body[c.field] = c.value;
    SCOPED_TRACE(c.field + " = " + nlohmann::json(c.value).dump());
    ExpectRefused(body, 400, "\"" + c.field + "\"");
    ExpectRefused(body, 400, "control character");
  }
  // The same as the default session id.
  ExpectRefused({{"instance_id", "vm\tx"}, {"backing_memory_path", snap_}}, 400, "instance_id");
  ExpectVmStillServed("vm");
  auto list = pager_->client().ListSessions();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_EQ(list->size(), 1u);
  std::string log = pager_->Log();
  EXPECT_EQ(log.find("\n[2030-01-01"), std::string::npos) << "a forged log line:\n" << log;
  EXPECT_EQ(log.find(std::string("vm\0", 3)), std::string::npos) << "a NUL in the log";
}

TEST_F(PagerCreateTest, SessionIdsMustLeaveTheirSocketPathRoomInAUnixAddress) {
  StartPager();
  const std::string sessions_dir = pager_->root_dir() + "/sessions";
  const size_t longest = kMaxSocketPathBytes - (sessions_dir + "/.sock").size();
  ASSERT_LT(longest, 127u) << "the test's data directory is too short to test this";
  ASSERT_GE(longest, 32u);
  // The longest id that fits makes a socket a VMM can reach.
  const std::string fits(longest, 'f');
  HttpResponse r = Post(Body(fits, snap_));
  ASSERT_EQ(r.status, 200) << r.body;
  auto vm = VmmStandIn::Restore(sessions_dir + "/" + fits + ".sock", kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
  // One more is refused, naming the longest that fits.
  ExpectRefused(Body(fits + "x", snap_), 400, "at most " + std::to_string(longest) + " characters");
  ExpectRefused({{"instance_id", fits + "x"}, {"backing_memory_path", snap_}}, 400,
                "at most " + std::to_string(longest) + " characters");
  // 129 characters are refused by the id syntax, as ever.
  ExpectRefused(Body(std::string(129, 'a'), snap_), 400, "1-128 characters");
  EXPECT_EQ(pager_->Log().find("room for session ids"), std::string::npos) << "no warning: ids have room here";
}

TEST_F(PagerCreateTest, ADataDirectoryWithRoomForShortIdsOnlyIsWarnedAboutAtStartUp) {
  // DATA/uffd/test/sessions/<id>.sock with room for 20 characters of id.
  std::string data_dir = dir_.path() + "/";
  const size_t fixed = std::string("/uffd/test/sessions/.sock").size();
  data_dir += std::string(kMaxSocketPathBytes - 20 - fixed - data_dir.size(), 'l');
  std::filesystem::create_directories(data_dir);
  auto pager = TestPager::Start(data_dir);
  ASSERT_TRUE(pager.ok()) << pager.status().ToString();
  pager_ = std::move(*pager);
  EXPECT_NE(pager_->Log().find("room for session ids of only 20 characters"), std::string::npos) << pager_->Log();
  ExpectRefused(Body(std::string(21, 'i'), snap_), 400, "at most 20 characters");
  EXPECT_FALSE(CreateSession(std::string(20, 'i'), snap_).empty());
}

}  // namespace
}  // namespace uffdpager::testing::create_test
