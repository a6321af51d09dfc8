// TinyVmmTest: a test that runs real tinyvmm processes (and, for Uffd
// restores, a real uffd-pager) in a private temp directory, talks to them
// over their real API sockets, and checks the guest against the host-side
// model (guest_program.h). Skips, saying why, where /dev/kvm or
// userfaultfd is missing.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/child_process.h"
#include "common/durable_file.h"
#include "common/http_client.h"
#include "common/userfaultfd.h"
#include "common/wait_for.h"
#include "uffdpager/pager_client.h"
#include "vmm/guest_program.h"
#include "vmm/snapshot_state.h"
#include "vmm/snapshot_verifier.h"

#ifndef TINYVMM_BIN
#error "TINYVMM_BIN must name the tinyvmm binary"
#endif
#ifndef TINYVMM_TEST_PAGER_BIN
#error "TINYVMM_TEST_PAGER_BIN must name the uffd-pager binary"
#endif

namespace uffdpager::vmm::testing {

using nlohmann::json;
using namespace std::chrono_literals;

struct VmmInstance {
  ChildProcess process;
  std::unique_ptr<HttpClient> api;
  std::string socket;
};

struct Answer {
  int status = 0;
  json body;
  std::string fault() const { return body.is_object() ? body.value("fault_message", "") : ""; }
};

class TinyVmmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is not available on this machine";
    auto uffd = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
    if (!uffd.ok()) GTEST_SKIP() << "userfaultfd is not available: " << uffd.status().ToString();
    char tmpl[] = "/tmp/tvmm.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }

  void TearDown() override {
    vmms_.clear();  // kills them
    pager_.reset();
    if (!dir_.empty() && !HasFailure()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    } else if (!dir_.empty()) {
      std::cerr << "test files kept in " << dir_ << "\n";
      for (auto& f : std::filesystem::directory_iterator(dir_)) {
        if (f.path().extension() == ".log") {
          std::ifstream in(f.path());
          std::cerr << "==== " << f.path() << "\n" << in.rdbuf() << "\n";
        }
      }
    }
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Starts tinyvmm with small-guest defaults: the hole at 16 MiB, so a
  // 32 MiB guest has two regions.
  VmmInstance& StartVmm(const std::string& name, std::vector<std::string> extra = {}) {
    auto vmm = std::make_unique<VmmInstance>();
    vmm->socket = Path(name + ".sock");
    std::vector<std::string> args = {TINYVMM_BIN, "--api-sock",           vmm->socket, "--id",
                                     name,        "--mem-hole-start-mib", "16",        "--mem-hole-size-mib",
                                     "16",        "--log-level",          "debug"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto p = ChildProcess::Spawn(args, Path(name + ".log"));
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (p.ok()) vmm->process = std::move(*p);
    vmm->api = std::make_unique<HttpClient>(vmm->socket);
    bool up = WaitFor([&] { return vmm->api->Send("GET", "/", "", 1s).ok(); }, 10s);
    EXPECT_TRUE(up) << "tinyvmm did not answer on " << vmm->socket << ":\n" << vmm->process.Log();
    vmms_.push_back(std::move(vmm));
    return *vmms_.back();
  }

  Answer Call(VmmInstance& vmm, const std::string& method, const std::string& path, const json& body = nullptr,
              std::chrono::milliseconds timeout = 30s) {
    auto r = vmm.api->Send(method, path, body.is_null() ? "" : body.dump(), timeout);
    if (!r.ok()) {
      ADD_FAILURE() << method << " " << path << ": " << r.status().ToString();
      return {};
    }
    Answer a;
    a.status = r->status;
    if (!r->body.empty()) a.body = json::parse(r->body, nullptr, false);
    return a;
  }

  void ExpectNoContent(VmmInstance& vmm, const std::string& method, const std::string& path, const json& body) {
    Answer a = Call(vmm, method, path, body);
    EXPECT_EQ(a.status, 204) << method << " " << path << " " << body.dump() << " -> " << a.body.dump();
  }

  json Guest(VmmInstance& vmm) { return Call(vmm, "GET", "/tinyvmm/guest", nullptr, 5s).body; }

  // Waits until every vCPU has done at least `steps` steps (bounded).
  void WaitForSteps(VmmInstance& vmm, uint32_t steps) {
    bool ok = WaitFor(
        [&] {
          json g = Guest(vmm);
          if (!g.contains("vcpus") || g["vcpus"].empty()) return false;
          for (const auto& v : g["vcpus"]) {
            if (v["step"].get<uint32_t>() < steps) return false;
          }
          return true;
        },
        20s);
    ASSERT_TRUE(ok) << "guest did not reach step " << steps << ": " << Guest(vmm).dump();
  }

  void Boot(VmmInstance& vmm, int vcpus, int mib, bool track_dirty_pages) {
    ExpectNoContent(vmm, "PUT", "/machine-config",
                    {{"vcpu_count", vcpus}, {"mem_size_mib", mib}, {"track_dirty_pages", track_dirty_pages}});
    ExpectNoContent(vmm, "PUT", "/actions", {{"action_type", "InstanceStart"}});
  }

  void Pause(VmmInstance& vmm) { ExpectNoContent(vmm, "PATCH", "/vm", {{"state", "Paused"}}); }
  void Resume(VmmInstance& vmm) { ExpectNoContent(vmm, "PATCH", "/vm", {{"state", "Resumed"}}); }

  void Snapshot(VmmInstance& vmm, const std::string& state, const std::string& mem, const std::string& type = "Full") {
    ExpectNoContent(vmm, "PUT", "/snapshot/create",
                    {{"snapshot_type", type}, {"snapshot_path", Path(state)}, {"mem_file_path", Path(mem)}});
  }

  void LoadFile(VmmInstance& vmm, const std::string& state, const std::string& mem, bool resume, bool track = false) {
    ExpectNoContent(vmm, "PUT", "/snapshot/load",
                    {{"snapshot_path", Path(state)},
                     {"mem_backend", {{"backend_type", "File"}, {"backend_path", Path(mem)}}},
                     {"track_dirty_pages", track},
                     {"resume_vm", resume}});
  }

  void StartPager() {
    std::string data = Path("pager");
    std::filesystem::create_directories(data);
    auto p = ChildProcess::Spawn({TINYVMM_TEST_PAGER_BIN, "--data-dir", data, "--version-key", "t", "--cache-max-bytes",
                                  std::to_string(256u << 20), "--log-level", "debug"},
                                 Path("pager.log"));
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    pager_ = std::make_unique<ChildProcess>(std::move(*p));
    pager_client_ = std::make_unique<PagerClient>(PagerClient::ControlSocketPath(data, "t"));
    ASSERT_TRUE(WaitFor([&] { return pager_client_->Health().ok(); }, 10s)) << pager_->Log();
  }

  // A pager session serving `mem`; returns its UFFD socket.
  std::string PagerSession(const std::string& id, const std::string& mem) {
    CreateSessionRequest req;
    req.session_id = id;
    req.instance_id = id;
    req.backing_memory_path = Path(mem);
    req.cache_key = Path(mem);
    auto created = pager_client_->CreateSession(req);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    return created.ok() ? created->uffd_socket_path : "";
  }

  void LoadUffd(VmmInstance& vmm, const std::string& state, const std::string& socket, bool resume,
                bool track = false) {
    ExpectNoContent(vmm, "PUT", "/snapshot/load",
                    {{"snapshot_path", Path(state)},
                     {"mem_backend", {{"backend_type", "Uffd"}, {"backend_path", socket}}},
                     {"track_dirty_pages", track},
                     {"resume_vm", resume}});
  }

  static std::vector<uint8_t> ReadBytes(const std::string& path) {
    auto bytes = ReadWholeFileBytes(path);
    EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
    return bytes.ok() ? std::move(*bytes) : std::vector<uint8_t>{};
  }

  SnapshotState ReadState(const std::string& name) {
    auto s = ReadSnapshotStateFile(Path(name));
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : SnapshotState{};
  }

  // The guest's progress as the state file saved it.
  static std::vector<VcpuProgress> Progress(const SnapshotState& s) {
    std::vector<VcpuProgress> out;
    for (const auto& v : s.vcpus) out.push_back(v.progress);
    return out;
  }

  // The check that ties the guest to the memory file: replaying the walk
  // over `from_mem` from `from_state`'s progress must reach exactly
  // `to_state`'s checksums and leave exactly `to_mem`'s bytes in every
  // walked page.
  void ExpectModelMatches(const std::string& from_state, const std::string& from_mem, const std::string& to_state,
                          const std::string& to_mem) {
    SnapshotState a = ReadState(from_state), b = ReadState(to_state);
    ASSERT_EQ(a.vcpus.size(), b.vcpus.size());
    for (size_t i = 0; i < b.vcpus.size(); ++i) {
      EXPECT_GT(b.vcpus[i].progress.step, a.vcpus[i].progress.step) << "vCPU " << i << " made no progress";
      // The registers are the progress: the state file is self-consistent.
      EXPECT_EQ(static_cast<uint32_t>(b.vcpus[i].regs.rdi), b.vcpus[i].progress.step);
      EXPECT_EQ(static_cast<uint32_t>(b.vcpus[i].regs.rbp), b.vcpus[i].progress.checksum);
    }
    auto report = VerifyGuestProgress(Path(from_state), Path(from_mem), Path(to_state), Path(to_mem));
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_GT(report->steps_replayed, 0u);
    EXPECT_GT(report->pages_compared, 0u);
  }

  std::string dir_;
  std::vector<std::unique_ptr<VmmInstance>> vmms_;
  std::unique_ptr<ChildProcess> pager_;
  std::unique_ptr<PagerClient> pager_client_;
};

}  // namespace uffdpager::vmm::testing
