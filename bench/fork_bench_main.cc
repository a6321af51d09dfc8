// fork_bench: time to fork N instances from one standby source, for sources
// of several memory sizes, with the uffd backend (forks name the source's
// bytes; the pager serves each fork's first restore lazily) against the
// eager copy of the file backend, in ONE run. For each fork it reports the
// fork time (snapctl's fork to Running: metadata, plus for uffd a pager
// session and a Uffd load; for file a copy of the memory file and a File
// load) and the time to the guest's first progress after the fork started.
// The uffd fork time must not grow with memory size (2 GiB / 64 MiB ≤ 1.5).
// Then the hot-pool cycle on a fork that changed 5% of its memory: a fork of
// it while it runs, and (after another 5%) its standby, timed, with the
// bytes each wrote; with layered snapshots both cost what the fork changed,
// not its memory.
// docs/benchmarks.md has the command and the numbers.
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/http_client.h"
#include "common/logging.h"
#include "common/wait_for.h"
#include "lifecycle/detached_process.h"
#include "uffdpager/lifecycle.h"

namespace fs = std::filesystem;
using namespace uffdpager;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kSkip = 77;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// vCPU 0's step, or -1 while the guest does not answer.
int64_t GuestStep(const std::string& api_socket) {
  auto r = HttpClient(api_socket).Send("GET", "/tinyvmm/guest", "", std::chrono::seconds(2));
  if (!r.ok() || r->status != 200) return -1;
  json g = json::parse(r->body, nullptr, false);
  if (!g.is_object() || !g.contains("vcpus") || g["vcpus"].empty()) return -1;
  return g["vcpus"][0].value("step", int64_t{-1});
}

struct ForkSample {
  double fork_ms = 0;
  double first_progress_ms = 0;
};

struct Row {
  uint64_t mem_mib = 0;
  std::string backend;
  std::vector<ForkSample> samples;
  json ToJson() const {
    json s = json::array();
    std::vector<double> f, p;
    for (const auto& x : samples) {
      s.push_back({{"fork_ms", x.fork_ms}, {"first_progress_ms", x.first_progress_ms}});
      f.push_back(x.fork_ms);
      p.push_back(x.first_progress_ms);
    }
    return {{"mem_mib", mem_mib},
            {"backend", backend},
            {"fork_ms_median", Median(f)},
            {"first_progress_ms_median", Median(p)},
            {"samples", s}};
  }
};

Status Check(const Status& st, const std::string& what) { return st.ok() ? st : st.WithContext(what); }

// The hot-pool cycle changes this fraction of a fork's memory before each
// of its two steps. The guest writes every page it reads (the bench sets
// --guest-write-every=1) and reads uniformly random pages, so N steps over
// P pages touch P * (1 - e^(-N/P)) distinct pages: N = -ln(1 - f) * P.
constexpr double kCycleDirtyFraction = 0.05;

int64_t CycleSteps(uint64_t mem_mib) {
  const double pages = double(mem_mib << 20) / 4096;
  return static_cast<int64_t>(-std::log(1 - kCycleDirtyFraction) * pages) + 1;
}

// The cycle on a running, pager-restored fork.
struct CycleSample {
  uint64_t mem_mib = 0;
  int64_t steps = 0;  // guest steps before each step of the cycle
  double fork_running_ms = 0;
  uint64_t fork_written_bytes = 0;  // disk the fork's Diff took
  double standby_ms = 0;
  uint64_t standby_written_bytes = 0;  // disk the standby's snapshot took
  json ToJson() const {
    return {{"mem_mib", mem_mib},
            {"dirty_fraction_target", kCycleDirtyFraction},
            {"steps", steps},
            {"fork_running_ms", fork_running_ms},
            {"fork_written_mib", fork_written_bytes / double(1 << 20)},
            {"fork_written_per_memory", fork_written_bytes / double(mem_mib << 20)},
            {"standby_ms", standby_ms},
            {"standby_written_mib", standby_written_bytes / double(1 << 20)},
            {"standby_written_per_memory", standby_written_bytes / double(mem_mib << 20)}};
  }
};

// Disk the blobs of a data directory take (allocated blocks: a sparse layer
// counts what it holds).
uint64_t BlobBytes(const std::string& data) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(data + "/blobs", ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) bytes += uint64_t(st.st_blocks) * 512;
  }
  return bytes;
}

// Lets the guest of `api` run `steps` more steps.
Status RunSteps(const std::string& name, const std::string& api, int64_t steps) {
  const int64_t start = GuestStep(api);
  if (!WaitFor([&] { return GuestStep(api) >= start + steps; }, std::chrono::seconds(300))) {
    return Status::Timeout(name + " did not run " + std::to_string(steps) + " steps");
  }
  return Status::Ok();
}

// Runs `op` and returns its time, and the disk the blobs grew by in *written.
template <typename Op>
Result<double> TimedWrite(const std::string& data, uint64_t* written, Op&& op) {
  const uint64_t before = BlobBytes(data);
  auto t0 = Clock::now();
  UFFD_RETURN_IF_ERROR(op());
  const double ms = Ms(Clock::now() - t0);
  const uint64_t after = BlobBytes(data);
  *written = after > before ? after - before : 0;
  return ms;
}

// The cycle: the fork changes 5% of its memory, is forked while it runs (a
// Diff of what it changed, and the new fork restored), changes another 5%,
// and goes to standby (a Diff again).
Result<CycleSample> RunCycle(Lifecycle& life, const std::string& data, const std::string& name, uint64_t mem_mib) {
  const std::string api = data + "/instances/" + name + "/api.sock";
  CycleSample sample{mem_mib, CycleSteps(mem_mib)};
  UFFD_RETURN_IF_ERROR(RunSteps(name, api, sample.steps));
  auto fork_ms = TimedWrite(data, &sample.fork_written_bytes, [&] {
    return Check(life.Fork(name, name + "-ff", ForkTarget::kRunning), "fork the running " + name);
  });
  if (!fork_ms.ok()) return fork_ms.status();
  sample.fork_running_ms = *fork_ms;
  UFFD_RETURN_IF_ERROR(Check(life.Delete(name + "-ff"), "delete " + name + "-ff"));
  UFFD_RETURN_IF_ERROR(RunSteps(name, api, sample.steps));
  auto standby_ms =
      TimedWrite(data, &sample.standby_written_bytes, [&] { return Check(life.Standby(name), "standby " + name); });
  if (!standby_ms.ok()) return standby_ms.status();
  sample.standby_ms = *standby_ms;
  return sample;
}

// One source of `mem_mib`, then N forks with each backend, then the cycle
// on the first uffd fork.
Result<std::vector<Row>> BenchSize(const std::string& work, uint64_t mem_mib, int forks, const DataDirConfig& base,
                                   CycleSample* cycle) {
  std::string data = work + "/size-" + std::to_string(mem_mib);
  UFFD_RETURN_IF_ERROR(Lifecycle::InitDataDir(data, base));
  auto uffd = Lifecycle::Open({data, "", MemoryBackend::kUffd});
  auto file = Lifecycle::Open({data, "", MemoryBackend::kFile});
  if (!uffd.ok()) return uffd.status();
  if (!file.ok()) return file.status();
  BootConfig boot;
  boot.vcpu_count = 1;
  boot.mem_size_mib = mem_mib;
  UFFD_RETURN_IF_ERROR(Check((*uffd)->Create("src", boot), "create source"));
  std::string src_api = data + "/instances/src/api.sock";
  if (!WaitFor([&] { return GuestStep(src_api) >= 300; }, std::chrono::seconds(30))) {
    return Status::Timeout("the source guest made no progress");
  }
  UFFD_RETURN_IF_ERROR(Check((*uffd)->Standby("src"), "standby source"));
  std::vector<Row> rows;
  for (auto* life : {uffd->get(), file->get()}) {
    Row row{mem_mib, MemoryBackendName(life->config().backend), {}};
    std::vector<std::string> names;
    for (int i = 0; i < forks; ++i) {
      std::string name = row.backend + "-" + std::to_string(i);
      std::string api = data + "/instances/" + name + "/api.sock";
      auto t0 = Clock::now();
      UFFD_RETURN_IF_ERROR(Check(life->Fork("src", name, ForkTarget::kRunning), "fork " + name));
      auto t1 = Clock::now();
      // The restored guest stands at the snapshot's step; any later step is
      // progress the guest made on its restored memory.
      int64_t at_restore = GuestStep(api);
      bool moved =
          WaitFor([&] { return GuestStep(api) > at_restore; }, std::chrono::seconds(30), std::chrono::milliseconds(1));
      auto t2 = Clock::now();
      if (!moved) return Status::Timeout(name + " made no progress");
      row.samples.push_back({Ms(t1 - t0), Ms(t2 - t0)});
      names.push_back(name);
    }
    if (life == uffd->get()) {
      auto sample = RunCycle(*life, data, names.front(), mem_mib);
      if (!sample.ok()) return sample.status();
      *cycle = *sample;
    }
    for (const auto& n : names) UFFD_RETURN_IF_ERROR(Check(life->Delete(n), "delete " + n));
    rows.push_back(row);
  }
  UFFD_RETURN_IF_ERROR((*uffd)->Delete("src"));
  return rows;
}

void StopPager(const std::string& data) {
  std::ifstream in(data + "/uffd/default/pager.pid");
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 0) return;
  auto id = IdentifyProcess(pid);
  if (id.ok()) (void)id->Terminate();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fork_bench: fork N instances from one standby source; uffd vs eager copy"};
  std::vector<uint64_t> sizes = {64, 512, 2048};
  int forks = 4;
  bool quick = false, check_json = false;
  std::string work_dir, json_out;
  DataDirConfig config;
  config.vmm_binary = FORK_BENCH_VMM_BIN;
  config.pager_binary = FORK_BENCH_PAGER_BIN;
  config.pager_cache_bytes = 4ULL << 30;
  // Every page the guest reads it writes: the cycle dirties what it asks for.
  config.vmm_args = {"--guest-write-every=1"};
  app.add_option("--sizes-mib", sizes, "source memory sizes")->delimiter(',')->capture_default_str();
  app.add_option("--forks", forks, "forks per size and backend")->capture_default_str();
  app.add_option("--work-dir", work_dir, "where the data directories go (default: a new /tmp/fork-bench.*)");
  app.add_option("--json-out", json_out, "write the results as JSON here");
  app.add_flag("--quick", quick, "smoke run: one 32 MiB source, 2 forks");
  app.add_flag("--check-json", check_json, "re-read --json-out and check its shape (smoke test)");
  app.add_option("--vmm", config.vmm_binary, "VMM binary")->capture_default_str();
  app.add_option("--pager", config.pager_binary, "uffd-pager binary")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  ConfigureLogging("fork_bench", "warn");
  if (quick) {
    sizes = {32};
    forks = 2;
  }
  if (::access("/dev/kvm", R_OK | W_OK) != 0 || ::access("/dev/userfaultfd", R_OK | W_OK) != 0) {
    std::cerr << "fork_bench: needs /dev/kvm and /dev/userfaultfd; skipping\n";
    return kSkip;
  }
  // The VMMs and the pager are started detached; as a subreaper we collect
  // them when they exit.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  bool own_work_dir = work_dir.empty();
  if (own_work_dir) {
    char tmpl[] = "/tmp/fork-bench.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return 1;
    work_dir = tmpl;
  } else {
    fs::remove_all(work_dir);
    fs::create_directories(work_dir);
  }
  json results = json::array();
  json cycles = json::array();
  std::vector<CycleSample> cycle_samples;
  std::map<std::pair<std::string, uint64_t>, double> median_fork;
  int exit_code = 0;
  for (uint64_t size : sizes) {
    CycleSample cycle;
    auto rows = BenchSize(work_dir, size, forks, config, &cycle);
    StopPager(work_dir + "/size-" + std::to_string(size));
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    if (!rows.ok()) {
      std::cerr << "fork_bench: " << size << " MiB: " << rows.status().ToString() << "\n";
      exit_code = 1;
      break;
    }
    for (const auto& r : *rows) {
      json j = r.ToJson();
      results.push_back(j);
      median_fork[{r.backend, size}] = j["fork_ms_median"].get<double>();
      std::cout << fmt::format("{:>6} MiB  {:<5} fork median {:8.1f} ms   first progress median {:8.1f} ms   ({})\n",
                               size, r.backend, j["fork_ms_median"].get<double>(),
                               j["first_progress_ms_median"].get<double>(), forks);
    }
    cycles.push_back(cycle.ToJson());
    cycle_samples.push_back(cycle);
    std::cout << fmt::format(
        "{:>6} MiB  cycle ({} steps each): fork of the running fork {:8.1f} ms writing {:.3f}x its memory; its "
        "standby {:8.1f} ms writing {:.3f}x\n",
        size, cycle.steps, cycle.fork_running_ms, cycle.fork_written_bytes / double(size << 20), cycle.standby_ms,
        cycle.standby_written_bytes / double(size << 20));
    fs::remove_all(work_dir + "/size-" + std::to_string(size));
  }
  json out = {{"forks", forks}, {"results", results}, {"cycle", cycles}};
  if (exit_code == 0 && cycle_samples.size() > 1) {
    const CycleSample& lo = cycle_samples.front();
    const CycleSample& hi = cycle_samples.back();
    out["cycle_fork_running_ratio_largest_to_smallest"] = hi.fork_running_ms / lo.fork_running_ms;
    out["cycle_standby_ratio_largest_to_smallest"] = hi.standby_ms / lo.standby_ms;
    std::cout << fmt::format("cycle {} MiB / {} MiB: fork of a running fork {:.2f}, standby {:.2f} (flat: <= 1.5)\n",
                             hi.mem_mib, lo.mem_mib, hi.fork_running_ms / lo.fork_running_ms,
                             hi.standby_ms / lo.standby_ms);
  }
  if (exit_code == 0 && sizes.size() > 1) {
    double lo = median_fork[{"uffd", sizes.front()}], hi = median_fork[{"uffd", sizes.back()}];
    double ratio = lo > 0 ? hi / lo : 0;
    out["uffd_fork_time_ratio_largest_to_smallest"] = ratio;
    std::cout << fmt::format("uffd fork time {} MiB / {} MiB = {:.2f} (target <= 1.5: {})\n", sizes.back(),
                             sizes.front(), ratio, ratio <= 1.5 ? "met" : "NOT met");
  }
  if (!json_out.empty()) std::ofstream(json_out) << out.dump(2) << "\n";
  if (check_json && !json_out.empty()) {
    std::ifstream in(json_out);
    json back = json::parse(in, nullptr, false);
    bool ok = back.is_object() && back["results"].is_array() && !back["results"].empty();
    for (const auto& r : back["results"]) ok = ok && r["samples"].size() == static_cast<size_t>(forks);
    if (!ok) {
      std::cerr << "fork_bench: " << json_out << " does not have the expected shape\n";
      exit_code = 1;
    }
  }
  if (own_work_dir) fs::remove_all(work_dir);
  return exit_code;
}
