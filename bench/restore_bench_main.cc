// restore_bench: how fast a VM gets its working set back through uffd-pager,
// measured side by side with its baselines in ONE run (file-backed restore
// with the page cache warm and cold, a minimal userfaultfd handler, raw
// batched UFFDIO_COPY), so machine noise affects every variant alike.
// docs/benchmarks.md has the command and a reading of the numbers.
#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <CLI/CLI.hpp>

#include "cold_restore.h"
#include "common/userfaultfd.h"
#include "readahead.h"
#include "report.h"
#include "restore_variants.h"
#include "stats.h"
#include "tinyvmm_restore.h"

namespace fs = std::filesystem;
using namespace uffdpager;
using namespace uffdpager::bench;
using nlohmann::json;

namespace {

const std::set<std::string> kSections = {"restore", "latency", "completion", "concurrent",
                                         "cold",    "tinyvmm", "layers",     "store"};

// The tinyvmm built next to this benchmark, when the build has the VMM.
#ifdef RESTORE_BENCH_TINYVMM_BIN
constexpr char kTinyVmmBin[] = RESTORE_BENCH_TINYVMM_BIN;
#else
constexpr char kTinyVmmBin[] = "";
#endif

json MachineJson() {
  utsname u{};
  ::uname(&u);
  char when[64];
  std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return {{"cpus_online", ::sysconf(_SC_NPROCESSORS_ONLN)},
          {"kernel", std::string(u.release)},
          {"machine", std::string(u.machine)},
          {"memory_bytes", uint64_t(::sysconf(_SC_PHYS_PAGES)) * uint64_t(::sysconf(_SC_PAGESIZE))},
          {"started_at", when}};
}

// A directory under /tmp for the pagers' data dirs, removed on every exit
// path of main.
class ScopedTempDir {
 public:
  static Result<ScopedTempDir> Create() {
    char name[] = "/tmp/uffd-bench.XXXXXX";
    if (::mkdtemp(name) == nullptr) return Status::FromErrno(errno, "mkdtemp");
    return ScopedTempDir(name);
  }
  ScopedTempDir(ScopedTempDir&& o) noexcept : path_(std::exchange(o.path_, "")) {}
  ~ScopedTempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  explicit ScopedTempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

int Fail(const Status& status, const char* what) {
  std::fprintf(stderr, "restore_bench: %s: %s\n", what, status.ToString().c_str());
  return 1;
}

// The readahead values of the cold section: those asked for, or the
// device's own and Linux's default; each once, in order.
std::vector<uint64_t> ReadaheadValues(std::vector<uint64_t> asked, uint64_t device_kib) {
  if (asked.empty()) asked = {device_kib, kLinuxDefaultReadaheadKib};
  std::vector<uint64_t> values;
  for (uint64_t kib : asked) {
    if (std::find(values.begin(), values.end(), kib) == values.end()) values.push_back(kib);
  }
  return values;
}

// The cold section with the device's readahead under our control for its
// duration; `skipped` gets why it could not run here (no root, no writable
// /sys, no block device under the snapshot), which is not a failure.
Result<json> RunColdSection(const BenchConfig& config, const std::vector<const WorkingSet*>& sets,
                            const std::vector<uint64_t>& asked_kib, std::string* skipped) {
  auto device = FindReadaheadDevice(config.snapshot_path);
  if (!device.ok()) {
    *skipped = device.status().ToString();
    return json();
  }
  auto readahead = ReadaheadOverride::Take(*device);
  if (!readahead.ok()) {
    *skipped = readahead.status().ToString();
    return json();
  }
  const std::vector<uint64_t> values = ReadaheadValues(asked_kib, device->original_kib);
  json section = {{"readahead_device", (*readahead)->Describe()}, {"readahead_kib", values}};
  auto cells = RunColdRestores(config, sets, values, **readahead);
  // On failure the override's destructor still puts the value back.
  if (!cells.ok()) return cells.status();
  section["results"] = *cells;
  return section;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path exe_dir = fs::read_symlink("/proc/self/exe").parent_path();
  BenchConfig config;
  config.pager.binary = UFFD_PAGER_BIN;
  std::string work_dir = (exe_dir.parent_path() / "bench-work").string();
  uint64_t memory_mib = 1024;
  uint64_t cache_max_mib = 0, concurrent_cache_mib = 0;
  bool quick = false, check_json = false;
  std::string json_out;
  std::vector<std::string> sections(kSections.begin(), kSections.end());
  TinyVmmBenchConfig tinyvmm;
  tinyvmm.binary = kTinyVmmBin;

  CLI::App app{"restore_bench: restore and fault cost of uffd-pager against its baselines, in one run"};
  app.add_option("--memory-mib", memory_mib, "snapshot (guest memory) size in MiB; a multiple of 8")
      ->capture_default_str()
      ->check(CLI::Range(8, 65536));
  app.add_option("--runs", config.runs, "runs per measurement; medians are reported")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--json-out", json_out, "write the results as JSON to this file");
  app.add_flag("--quick", quick,
               "smoke mode: 64 MiB, 1 run, fewer latency samples (the cold section runs if this machine lets it)");
  app.add_option("--work-dir", work_dir, "the generated snapshot file goes here")->capture_default_str();
  app.add_option("--pager-bin", config.pager.binary, "the uffd-pager to measure")->capture_default_str();
  app.add_option("--threads", config.vcpu_threads, "vCPU-like threads per restore")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--latency-pages", config.latency_pages, "single-page touches per latency run")->capture_default_str();
  app.add_option("--vms", config.concurrent_vms, "concurrent restores in the concurrency test")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--cache-max-mib", cache_max_mib, "pager cache bound (default: the snapshot size)");
  app.add_option("--concurrent-cache-mib", concurrent_cache_mib,
                 "pager cache bound in the concurrency test (default: a quarter of the snapshot)");
  auto* sections_option = app.add_option("--sections", sections, "which measurements to run")
                              ->check(CLI::IsMember(kSections))
                              ->capture_default_str();
  std::vector<std::string> flavor_names;
  for (const PagerFlavor& f : RestoreFlavors()) flavor_names.push_back(f.name);
  app.add_option("--flavors", config.flavors,
                 "pager flavors of the restore, cold and tinyvmm sections (default: all; "
                 "pager_on_demand, the reference, always runs)")
      ->check(CLI::IsMember(flavor_names));
  std::vector<uint64_t> readahead_kib;
  app.add_option("--readahead-kib", readahead_kib,
                 "readahead values (KiB, multiples of 4) of the cold section, each set on the snapshot's block device "
                 "for its variants and the original put back (default: the device's own and 128, Linux's default)")
      ->delimiter(',')
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 20));
  app.add_option("--tinyvmm-bin", tinyvmm.binary, "the tinyvmm for the tinyvmm section")->capture_default_str();
  app.add_option("--tinyvmm-mib", tinyvmm.memory_mib, "guest memory of the tinyvmm section (MiB)")
      ->capture_default_str()
      ->check(CLI::Range(32, 16384));
  app.add_option("--tinyvmm-vcpus", tinyvmm.vcpus, "vCPUs of the tinyvmm guest")
      ->capture_default_str()
      ->check(CLI::Range(1, 32));
  app.add_option("--tinyvmm-steps", tinyvmm.target_steps,
                 "pages each vCPU walks after the restore before the clock stops (default: one pass, as many as "
                 "it has pages)");
  app.add_flag("--check-json", check_json, "fail unless --json-out was written and reads back (smoke test)");
  CLI11_PARSE(app, argc, argv);

  bool tinyvmm_left_out = false;
  if (quick) {
    memory_mib = 64;
    config.runs = 1;
    config.latency_pages = 1024;
    // A KVM guest per variant costs seconds: the smoke test leaves it out
    // unless asked for by name, and then runs a small one.
    tinyvmm_left_out = sections_option->count() == 0 && std::erase(sections, "tinyvmm") > 0;
    tinyvmm.memory_mib = 32;
    tinyvmm.target_steps = 2000;
  }
  if (memory_mib % 8 != 0) return Fail(Status::InvalidArgument("--memory-mib must be a multiple of 8"), "options");
  for (uint64_t kib : readahead_kib) {
    if (kib % 4 != 0) return Fail(Status::InvalidArgument("--readahead-kib values must be multiples of 4"), "options");
  }
  if (check_json && json_out.empty()) return Fail(Status::InvalidArgument("--check-json needs --json-out"), "options");
  config.memory_bytes = memory_mib * kMiB;
  config.pager.cache_max_bytes = (cache_max_mib ? cache_max_mib : memory_mib) * kMiB;
  config.concurrent_cache_bytes = concurrent_cache_mib ? concurrent_cache_mib * kMiB : config.memory_bytes / 4;
  std::set<std::string> wanted(sections.begin(), sections.end());

  // Without userfaultfd there is nothing to measure: exit 77, which ctest
  // reports as skipped (as the other suites skip where the device is missing).
  if (auto probe = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK); !probe.ok()) {
    std::fprintf(stderr, "restore_bench: skipping, no userfaultfd: %s\n", probe.status().ToString().c_str());
    return 77;
  }

  auto help = PagerHelpText(config.pager.binary);
  if (!help.ok()) return Fail(help.status(), "uffd-pager --help");
  config.pager_help = *help;

  std::error_code ec;
  fs::create_directories(work_dir, ec);
  auto data_root = ScopedTempDir::Create();
  if (!data_root.ok()) return Fail(data_root.status(), "create pager data directory");
  config.pager.data_root = data_root->path();
  tinyvmm.work_dir = fs::absolute(work_dir + "/tinyvmm").string();
  config.snapshot_path = fs::absolute(work_dir + fmt::format("/snapshot-{}mib.mem", memory_mib)).string();
  std::fprintf(stderr, "restore_bench: %llu MiB snapshot at %s, %u run(s)\n",
               static_cast<unsigned long long>(memory_mib), config.snapshot_path.c_str(), config.runs);
  if (Status st = GenerateSnapshotFile(config.snapshot_path, config.memory_bytes); !st.ok()) {
    return Fail(st, "generate snapshot");
  }

  const uint64_t pages = config.memory_bytes / kPageSize;
  WorkingSet realistic = RealisticWorkingSet(pages, config.vcpu_threads, 10, 10, 7);
  WorkingSet random = RandomWorkingSet(pages, config.vcpu_threads, 20, 11);

  json results = {{"benchmark", "restore_bench"},
                  {"machine", MachineJson()},
                  {"config",
                   {{"memory_bytes", config.memory_bytes},
                    {"runs", config.runs},
                    {"vcpu_threads", config.vcpu_threads},
                    {"latency_pages", config.latency_pages},
                    {"concurrent_vms", config.concurrent_vms},
                    {"cache_max_bytes", config.pager.cache_max_bytes},
                    {"concurrent_cache_max_bytes", config.concurrent_cache_bytes},
                    {"pager_binary", config.pager.binary},
                    {"tinyvmm_mib", tinyvmm.memory_mib},
                    {"tinyvmm_vcpus", tinyvmm.vcpus},
                    {"readahead_kib_asked", readahead_kib},
                    {"quick", quick}}},
                  {"notes", json::array()}};
  for (const PagerFlavor& flavor : RestoreFlavors(config.flavors)) {
    if (!flavor.required_flag.empty() && config.pager_help.find(flavor.required_flag) == std::string::npos) {
      results["notes"].push_back(flavor.name + " skipped: this uffd-pager has no " + flavor.required_flag);
    }
  }

  if (tinyvmm_left_out) results["notes"].push_back("tinyvmm section left out in --quick (ask: --sections tinyvmm)");
  auto started = std::chrono::steady_clock::now();
  if (wanted.count("restore")) {
    results["restore"] = json::array();
    for (const WorkingSet* set : {&realistic, &random}) {
      auto r = RunRestoreComparison(config, *set);
      if (!r.ok()) return Fail(r.status(), "restore comparison");
      results["restore"].push_back(*r);
    }
  }
  if (wanted.count("latency")) {
    auto r = RunFaultLatency(config);
    if (!r.ok()) return Fail(r.status(), "fault latency");
    results["fault_latency"] = *r;
  }
  if (wanted.count("completion")) {
    auto r = RunCompletionThroughput(config);
    if (!r.ok()) return Fail(r.status(), "completion throughput");
    results["completion"] = *r;
  }
  if (wanted.count("concurrent")) {
    auto r = RunConcurrentRestores(config, realistic);
    if (!r.ok()) return Fail(r.status(), "concurrent restores");
    results["concurrent"] = *r;
  }
  std::string cold_skipped;
  if (wanted.count("cold")) {
    BenchConfig cold = config;
    std::vector<const WorkingSet*> cold_sets = {&realistic, &random};
    if (quick) {
      // Once through every step, briefly: one working set, and the flavor
      // that records beside the reference (unless flavors were named).
      cold_sets = {&realistic};
      if (cold.flavors.empty()) cold.flavors = {"pager_default"};
    }
    auto r = RunColdSection(cold, cold_sets, readahead_kib, &cold_skipped);
    if (!r.ok()) return Fail(r.status(), "cold restores");
    if (cold_skipped.empty()) {
      results["cold"] = *r;
      if (quick) {
        results["notes"].push_back(fmt::format("cold section in --quick: realistic working set, flavors {} and {}",
                                               fmt::join(cold.flavors, ", "), OnDemandFlavor().name));
      }
    } else {
      results["notes"].push_back("cold section skipped: " + cold_skipped);
    }
  }
  if (wanted.count("tinyvmm")) {
    if (std::string why = TinyVmmUnavailableReason(tinyvmm); !why.empty()) {
      results["notes"].push_back("tinyvmm section skipped: " + why);
    } else {
      auto r = RunTinyVmmRestore(config, tinyvmm);
      if (!r.ok()) return Fail(r.status(), "tinyvmm restores");
      results["tinyvmm"] = *r;
    }
  }
  if (wanted.count("layers")) {
    auto r = RunLayeredRestore(config, realistic);
    if (!r.ok()) return Fail(r.status(), "layered restores");
    results["layers"] = *r;
  }
  if (wanted.count("store")) {
    std::string store_skipped;
    auto r = RunStoreRestore(config, realistic, &store_skipped);
    if (!r.ok()) return Fail(r.status(), "restores from the object store");
    if (store_skipped.empty()) {
      results["store"] = *r;
    } else {
      results["notes"].push_back("store section skipped: " + store_skipped);
    }
  }
  results["elapsed_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  PrintTables(results);
  if (!json_out.empty()) {
    if (Status st = WriteJson(results, json_out); !st.ok()) return Fail(st, "write JSON");
    std::fprintf(stderr, "restore_bench: results written to %s\n", json_out.c_str());
  }
  // What ran is reported; the section that could not run here makes the
  // run count as skipped (77, as ctest's bench tests expect), not failed.
  if (!cold_skipped.empty()) {
    std::fprintf(stderr, "restore_bench: skipping the cold section: %s\n", cold_skipped.c_str());
    return 77;
  }
  return 0;
}
