// LifecycleTest: runs the real snapctl binary (a subprocess per command, as
// an operator would, so that a crash injected into one command kills only
// that command) over a private data directory, with real tinyvmm guests and
// the real uffd-pager that snapctl starts. Guest state is checked exactly
// against tinyvmm's host-side model (VerifyGuestProgress) between snapshots
// the test keeps copies of. Skips where /dev/kvm or userfaultfd is missing.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/child_process.h"
#include "common/durable_file.h"
#include "common/http_client.h"
#include "common/object_url.h"
#include "common/userfaultfd.h"
#include "common/wait_for.h"
#include "lifecycle/crash_point.h"
#include "lifecycle/detached_process.h"
#include "uffdpager/lifecycle.h"
#include "uffdpager/pager_client.h"
#include "vmm/guest_program.h"
#include "vmm/snapshot_state.h"
#include "vmm/snapshot_verifier.h"

#ifndef SNAPCTL_BIN
#error "SNAPCTL_BIN must name the snapctl binary"
#endif

namespace uffdpager::lifecycle::testing {

using nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

// A snapshot the test copied out of the data directory, to verify later
// snapshots against even after the instance is gone.
struct KeptSnapshot {
  std::string state;
  std::string mem;
  uint32_t step = 0;          // vCPU 0's step in it
  uint64_t steps_of_all = 0;  // the steps of every vCPU, summed
};

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is not available on this machine";
    auto uffd = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
    if (!uffd.ok()) GTEST_SKIP() << "userfaultfd is not available: " << uffd.status().ToString();
    // snapctl starts VMMs and the pager detached; as a subreaper this test
    // inherits them when their intermediate parent exits, and reaps them.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    char tmpl[] = "/tmp/lc.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    data_ = dir_ + "/data";
    fs::create_directories(dir_ + "/kept");
    Init("uffd");
  }

  void TearDown() override {
    if (!data_.empty() && fs::exists(data_ + "/config.json")) StopDataDir();
    ReapChildren();
    if (dir_.empty()) return;
    if (!HasFailure()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
      return;
    }
    std::cerr << "test files kept in " << dir_ << "\n";
    for (const auto& f : fs::recursive_directory_iterator(dir_)) {
      if (f.path().extension() == ".log") {
        std::ifstream in(f.path());
        std::string text((std::istreambuf_iterator<char>(in)), {});
        if (text.size() > 6000) text = "..." + text.substr(text.size() - 6000);
        std::cerr << "==== " << f.path() << "\n" << text << "\n";
      }
    }
  }

  // No background compaction (--compact-depth 0): each test's chains stay
  // as its commands leave them; the compaction tests turn it on.
  void Init(const std::string& backend) {
    ASSERT_EQ(Snapctl({"init", "--backend", backend, "--vmm-arg=--mem-hole-start-mib", "--vmm-arg=16",
                       "--vmm-arg=--mem-hole-size-mib", "--vmm-arg=16", "--pager-cache-bytes",
                       std::to_string(256u << 20), "--compact-depth", "0"}),
              0);
  }

  // snapctl's command line over the test's data directory, with `env`
  // ("NAME=VALUE") set for this command alone.
  std::vector<std::string> SnapctlArgv(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                                       const std::string& extra_flag = "") {
    std::vector<std::string> argv;
    if (!env.empty()) argv.push_back("/usr/bin/env");
    argv.insert(argv.end(), env.begin(), env.end());
    argv.insert(argv.end(), {SNAPCTL_BIN, "--data-dir", data_, "--log-level", "info"});
    if (!extra_flag.empty()) argv.push_back(extra_flag);
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  // Starts snapctl and returns without waiting for it.
  Result<ChildProcess> StartSnapctl(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                                    const std::string& extra_flag = "") {
    return ChildProcess::Spawn(SnapctlArgv(args, env, extra_flag), dir_ + "/snapctl.log");
  }

  // Runs snapctl; returns its exit status (-1 if it did not exit normally).
  // `crash_at` arms UFFDPAGER_LIFECYCLE_CRASH_AT for this command only.
  int Snapctl(std::vector<std::string> args, const std::string& crash_at = "", const std::string& extra_flag = "") {
    std::vector<std::string> env;
    if (!crash_at.empty()) env.push_back("UFFDPAGER_LIFECYCLE_CRASH_AT=" + crash_at);
    auto p = StartSnapctl(args, env, extra_flag);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (!p.ok()) return -1;
    int status = 0;
    if (!p->WaitForExit(120s, &status)) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  void Ok(std::vector<std::string> args) {
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    ASSERT_EQ(Snapctl(args), 0) << "snapctl " << joined << "failed; see " << dir_ << "/snapctl.log";
  }

  // The checked state, in process (the library snapctl is built on).
  InstanceStatus Show(const std::string& name) {
    auto life = Lifecycle::Open({data_, "", std::nullopt});
    EXPECT_TRUE(life.ok()) << life.status().ToString();
    if (!life.ok()) return {};
    auto s = (*life)->Show(name);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : InstanceStatus{};
  }

  json Metadata(const std::string& name) {
    std::ifstream in(data_ + "/instances/" + name + "/instance.json");
    return json::parse(in, nullptr, false);
  }
  // The blob ids of the instance's snapshot memory, base first.
  std::vector<std::string> Chain(const std::string& name) {
    json m = Metadata(name);
    if (!m.contains("snapshot")) return {};
    return m["snapshot"]["memory_layers"].get<std::vector<std::string>>();
  }
  // The top layer of the instance's snapshot memory (its only blob when the
  // chain is one).
  std::string BlobOf(const std::string& name) {
    auto chain = Chain(name);
    return chain.empty() ? "" : chain.back();
  }
  // A layer written between two snapshots holds no more pages than the
  // guest could have touched in between: one walked page per step of each
  // vCPU, plus the reserved pages (code, parameters, status, page tables,
  // the generation the VMM writes at a load) and a little slack. A copy of
  // the memory (or a layer of every page served) is far above that.
  void ExpectLayerHoldsOnlyTouchedPages(const std::string& blob, const KeptSnapshot& from, const KeptSnapshot& to) {
    const uint64_t steps = to.steps_of_all - from.steps_of_all;
    const uint64_t bound = (steps + 2 * vmm::kReservedPages) * 4096;
    const uint64_t allocated = AllocatedBytes(BlobPath(blob));
    EXPECT_LE(allocated, bound) << "layer " << blob << " after " << steps << " guest steps";
    EXPECT_LT(allocated, fs::file_size(BlobPath(blob))) << "a layer is sparse";
    std::cout << "layer " << blob << ": " << allocated << " bytes allocated of " << fs::file_size(BlobPath(blob))
              << " after " << steps << " guest steps\n";
  }

  // The first `n` layers of `chain`.
  static std::vector<std::string> Prefix(const std::vector<std::string>& chain, size_t n) {
    return std::vector<std::string>(chain.begin(),
                                    chain.begin() + static_cast<std::ptrdiff_t>(std::min(n, chain.size())));
  }

  // Bytes the file really occupies on disk (st_blocks), not its size.
  uint64_t AllocatedBytes(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }
  std::string BlobPath(const std::string& blob) { return data_ + "/blobs/" + blob; }
  std::set<std::string> Blobs() {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(data_ + "/blobs")) out.insert(e.path().filename().string());
    return out;
  }
  bool HasInstance(const std::string& name) { return fs::exists(data_ + "/instances/" + name + "/instance.json"); }

  // The compaction records in flight (DATA/compactions/BLOB.json).
  std::vector<std::string> CompactionRecords() {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(data_ + "/compactions")) {
      if (e.path().extension() == ".json") out.push_back(e.path().stem().string());
    }
    return out;
  }

  // Nothing half-done is left: no journal record, no compaction record, no
  // staging folder, no trash, and every blob is named by some instance.
  void ExpectConsistentDataDir() {
    EXPECT_TRUE(fs::is_empty(data_ + "/journal")) << "journal records left";
    EXPECT_TRUE(CompactionRecords().empty()) << "compaction records left";
    EXPECT_TRUE(fs::is_empty(data_ + "/trash"));
    std::set<std::string> named;
    for (const auto& e : fs::directory_iterator(data_ + "/instances")) {
      std::string n = e.path().filename().string();
      EXPECT_NE(n.rfind(".staging-", 0), 0u) << "staging folder left: " << n;
      json m = Metadata(n);
      ASSERT_TRUE(m.is_object()) << n << " has no readable metadata";
      if (m.contains("snapshot")) {
        auto chain = m["snapshot"]["memory_layers"].get<std::vector<std::string>>();
        EXPECT_FALSE(chain.empty()) << n;
        for (const auto& blob : chain) {
          if (IsObjectUrl(blob)) continue;  // in object storage, not a blob
          named.insert(blob);
          EXPECT_TRUE(fs::exists(BlobPath(blob))) << n << " names a missing layer " << blob;
        }
        EXPECT_TRUE(
            fs::exists(data_ + "/instances/" + n + "/snapshot/" + m["snapshot"]["state_file"].get<std::string>()));
      }
      if (m.contains("vmm")) {
        for (const auto& blob : m["vmm"]["backing_layers"].get<std::vector<std::string>>()) {
          if (IsObjectUrl(blob)) continue;
          named.insert(blob);
          EXPECT_TRUE(fs::exists(BlobPath(blob))) << n << "'s VMM names a missing layer " << blob;
        }
      }
    }
    EXPECT_EQ(Blobs(), named) << "blobs on disk vs blobs named by metadata";
  }

  std::string ApiSocket(const std::string& name) { return data_ + "/instances/" + name + "/api.sock"; }

  json Guest(const std::string& name) {
    auto r = HttpClient(ApiSocket(name)).Send("GET", "/tinyvmm/guest", "", 5s);
    if (!r.ok() || r->status != 200) return json();
    return json::parse(r->body, nullptr, false);
  }

  // Guest progress to wait for, scaled down where a sanitizer slows every
  // fault the pager serves (the checks are exact at any step count).
  static uint32_t Steps(uint32_t n) {
#if defined(UFFDPAGER_TSAN_BUILD)
    return std::max<uint32_t>(n / 4, 20);
#elif defined(UFFDPAGER_SANITIZER_BUILD)
    return std::max<uint32_t>(n / 2, 20);
#else
    return n;
#endif
  }

  void WaitForSteps(const std::string& name, uint32_t steps) {
    bool ok = WaitFor(
        [&] {
          json g = Guest(name);
          if (!g.is_object() || !g.contains("vcpus") || g["vcpus"].empty()) return false;
          for (const auto& v : g["vcpus"]) {
            if (v["step"].get<uint32_t>() < steps) return false;
          }
          return true;
        },
        60s, 20ms);
    ASSERT_TRUE(ok) << name << " did not reach step " << steps << ": " << Guest(name).dump();
  }

  // Stops every VMM the current data directory knows of, then its pager.
  void StopDataDir() {
    auto life = Lifecycle::Open({data_, "", std::nullopt});
    if (life.ok()) {
      auto list = (*life)->List();
      if (list.ok()) {
        for (const auto& s : *list) (void)(*life)->Delete(s.name);
      }
    }
    StopPager();
  }

  // Boots `name` (32 MiB), lets its guest run, puts it to standby, and keeps
  // that snapshot as `label` (default: the name): the source most tests fork.
  KeptSnapshot MakeStandbySource(const std::string& name, const std::string& label = "", int vcpus = 1) {
    Ok({"create", name, "--vcpus", std::to_string(vcpus), "--mem-mib", "32"});
    WaitForSteps(name, Steps(300));
    Ok({"standby", name});
    return Keep(name, label.empty() ? name : label);
  }

  // Copies the instance's current snapshot out of the data directory.
  KeptSnapshot Keep(const std::string& name, const std::string& label) {
    json m = Metadata(name);
    KeptSnapshot k{dir_ + "/kept/" + label + ".state", dir_ + "/kept/" + label + ".mem"};
    if (!m.contains("snapshot")) {
      ADD_FAILURE() << name << " has no snapshot to keep";
      return k;
    }
    fs::copy_file(data_ + "/instances/" + name + "/snapshot/" + m["snapshot"]["state_file"].get<std::string>(),
                  k.state);
    FlattenChain(m["snapshot"]["memory_layers"].get<std::vector<std::string>>(), k.mem);
    auto s = vmm::ReadSnapshotStateFile(k.state);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (s.ok() && !s->vcpus.empty()) k.step = s->vcpus[0].progress.step;
    if (s.ok()) {
      for (const auto& v : s->vcpus) k.steps_of_all += v.progress.step;
    }
    return k;
  }

  // Writes into `out` the memory a chain of layers holds, read the way the
  // pager reads it: each page from the topmost layer whose data (SEEK_DATA)
  // holds it, zeros where none does. The test's own reading, independent of
  // the lifecycle's merge.
  void FlattenChain(const std::vector<std::string>& chain, const std::string& out) {
    ASSERT_FALSE(chain.empty());
    const uint64_t size = ChainSize(chain);
    std::string bytes(size, '\0');
    for (size_t i = 0; i < chain.size(); ++i) {
      const std::string& blob = chain[i];
      if (IsObjectUrl(blob)) {
        ASSERT_NO_FATAL_FAILURE(OverlayObjectLayer(blob, /*is_base=*/i == 0, &bytes));
        continue;
      }
      ASSERT_EQ(fs::file_size(BlobPath(blob)), size) << "every layer has the base's size: " << blob;
      int fd = ::open(BlobPath(blob).c_str(), O_RDONLY | O_CLOEXEC);
      ASSERT_GE(fd, 0) << BlobPath(blob);
      for (off_t at = 0; static_cast<uint64_t>(at) < size;) {
        off_t data = ::lseek(fd, at, SEEK_DATA);
        if (data < 0) break;  // ENXIO: only a hole is left
        off_t hole = ::lseek(fd, data, SEEK_HOLE);
        ASSERT_GT(hole, data);
        ASSERT_EQ(::pread(fd, bytes.data() + data, static_cast<size_t>(hole - data), data), hole - data);
        at = hole;
      }
      ::close(fd);
    }
    std::ofstream(out, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

  // The size of the chain's memory: its first local layer's (a test with
  // object layers tells it otherwise, ObjectLayerSize).
  uint64_t ChainSize(const std::vector<std::string>& chain) {
    for (const auto& layer : chain) {
      if (!IsObjectUrl(layer)) return fs::file_size(BlobPath(layer));
    }
    return ObjectLayerSize(chain.front());
  }
  // Object layers (an imported snapshot's): tests that use object storage
  // read them (the whole object for a base, its page map's extents above),
  // as the pager does.
  virtual uint64_t ObjectLayerSize(const std::string& url) {
    ADD_FAILURE() << "this test reads no object layer: " << url;
    return 0;
  }
  virtual void OverlayObjectLayer(const std::string& url, bool /*is_base*/, std::string* /*bytes*/) {
    ADD_FAILURE() << "this test reads no object layer: " << url;
  }

  // `to` is exactly what the guest model computes from `from`: every vCPU's
  // checksum, and every walked page's bytes (the guest's markers).
  void ExpectExact(const KeptSnapshot& from, const KeptSnapshot& to) {
    auto report = vmm::VerifyGuestProgress(from.state, from.mem, to.state, to.mem);
    ASSERT_TRUE(report.ok()) << from.state << " -> " << to.state << ": " << report.status().ToString();
    EXPECT_GT(report->steps_replayed, 0u);
    EXPECT_GT(report->pages_compared, 0u);
  }

  // The generation the VMM wrote into guest memory at its last load.
  static uint64_t GenerationIn(const std::string& mem) {
    std::ifstream in(mem, std::ios::binary);
    in.seekg(vmm::kGenerationGpa);
    uint64_t g = 0;
    in.read(reinterpret_cast<char*>(&g), sizeof(g));
    return g;
  }

  // The file's contents as a short string, for equality checks. Hashed by
  // the standard library (not instrumented): a loop here over each byte of a
  // guest's memory is a checked load per byte under TSan.
  static std::string Digest(const std::string& path) {
    auto bytes = ReadWholeFile(path);
    EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
    return bytes.ok() ? std::to_string(std::hash<std::string>{}(*bytes)) : std::string("unreadable");
  }

  // The data directory's pager version key (config.json).
  std::string PagerKey() {
    std::ifstream in(data_ + "/config.json");
    json config = json::parse(in, nullptr, false);
    return config.is_object() ? config.value("pager_version_key", "") : "";
  }

  PagerClient Pager() { return PagerClient(PagerClient::ControlSocketPath(data_, PagerKey())); }

  void StopPager() {
    std::ifstream in(data_ + "/uffd/" + PagerKey() + "/pager.pid");
    pid_t pid = 0;
    if (!(in >> pid) || pid <= 0) return;
    auto id = IdentifyProcess(pid);
    if (id.ok()) (void)id->Terminate();
  }

  // The detached processes snapctl started came to us (subreaper) when
  // they exited; collect them.
  static void ReapChildren() {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }

  std::string dir_;
  std::string data_;
};

}  // namespace uffdpager::lifecycle::testing
