#include "tinyvmm_restore.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unordered_set>

#include "common/child_process.h"
#include "common/http_client.h"
#include "common/wait_for.h"
#include "stats.h"
#include "vmm/guest_program.h"
#include "vmm/snapshot_state.h"

namespace uffdpager::bench {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// Bounds on every wait: a guest that stops making progress (a page server
// that stopped serving) fails the run instead of hanging it. Nothing in this
// process touches guest memory, so plain timeouts suffice (no Deadline).
constexpr auto kBootLimit = std::chrono::seconds(30);
constexpr auto kLoadLimit = std::chrono::seconds(120);
constexpr auto kProgressLimit = std::chrono::seconds(300);
// How often the guest's counters are read while timing. Each read is an HTTP
// request to the VMM, which competes with the vCPUs on a small machine; 5 ms
// is fine enough for restores that take seconds.
constexpr auto kPollPeriod = std::chrono::milliseconds(5);

// One tinyvmm process and its API socket; killed (SIGTERM, then SIGKILL) and
// reaped when destroyed.
class TinyVmm {
 public:
  static Result<std::unique_ptr<TinyVmm>> Start(const std::string& binary, const std::string& socket,
                                                const std::string& log) {
    std::error_code ec;
    std::filesystem::remove(socket, ec);
    auto process = ChildProcess::Spawn({binary, "--api-sock", socket, "--id", "bench", "--log-level", "warn"}, log);
    if (!process.ok()) return process.status();
    auto vm = std::unique_ptr<TinyVmm>(new TinyVmm(std::move(*process), socket));
    if (!WaitFor([&] { return vm->api_.Send("GET", "/", "", std::chrono::seconds(1)).ok(); }, kBootLimit)) {
      return Status::Timeout("tinyvmm did not answer on " + socket + ": " + vm->process_.Log());
    }
    return vm;
  }

  // A request Firecracker answers with 204 No Content.
  Status Do(const std::string& method, const std::string& path, const json& body,
            std::chrono::milliseconds timeout = std::chrono::seconds(30)) const {
    auto r = api_.Send(method, path, body.dump(), timeout);
    if (!r.ok()) return r.status().WithContext(method + " " + path);
    if (r->status != 204) {
      return Status::Internal(method + " " + path + " -> " + std::to_string(r->status) + " " + r->body);
    }
    return Status::Ok();
  }

  // GET /tinyvmm/guest: every vCPU's step, checksum and PRNG state.
  Result<std::vector<vmm::VcpuProgress>> Guest() const {
    auto r = api_.Send("GET", "/tinyvmm/guest", "", std::chrono::seconds(5));
    if (!r.ok()) return r.status();
    json g = json::parse(r->body, nullptr, false);
    if (r->status != 200 || !g.is_object() || !g.contains("vcpus")) {
      return Status::Internal("GET /tinyvmm/guest -> " + std::to_string(r->status) + " " + r->body);
    }
    std::vector<vmm::VcpuProgress> out;
    for (const json& v : g["vcpus"]) {
      out.push_back({v.value("step", 0u), v.value("checksum", 0u), v.value("prng", 0u)});
    }
    return out;
  }

 private:
  TinyVmm(ChildProcess process, const std::string& socket) : process_(std::move(process)), api_(socket) {}
  ChildProcess process_;
  HttpClient api_;
};

// Waits until every vCPU's step count reaches its target.
Status WaitForSteps(const TinyVmm& vm, const std::vector<uint32_t>& targets, std::chrono::seconds limit) {
  Status last = Status::Ok();
  bool reached = WaitFor(
      [&] {
        auto guest = vm.Guest();
        if (!guest.ok()) {
          last = guest.status();
          return false;
        }
        if (guest->size() != targets.size()) return false;
        for (size_t i = 0; i < targets.size(); ++i) {
          if ((*guest)[i].step < targets[i]) return false;
        }
        return true;
      },
      limit, kPollPeriod);
  if (reached) return Status::Ok();
  return Status::Timeout("the guest did not reach its target steps" + (last.ok() ? "" : ": " + last.ToString()));
}

// The snapshot as the host-side model sees it: the walk, the memory file's
// bytes and each vCPU's progress at the snapshot.
class GuestModel {
 public:
  static Result<GuestModel> Load(const std::string& state_path, const std::string& mem_path) {
    auto state = vmm::ReadSnapshotStateFile(state_path);
    if (!state.ok()) return state.status();
    auto walk = vmm::GuestWalk::Create(state->layout, state->machine.vcpu_count, state->program);
    if (!walk.ok()) return walk.status();
    std::ifstream in(mem_path, std::ios::binary);
    std::vector<uint8_t> image(state->layout.total_size());
    if (!in.read(reinterpret_cast<char*>(image.data()), std::streamsize(image.size()))) {
      return Status::Internal("cannot read " + mem_path);
    }
    std::vector<vmm::VcpuProgress> start;
    for (const auto& v : state->vcpus) start.push_back(v.progress);
    return GuestModel(std::move(*walk), std::move(image), std::move(start));
  }

  const std::vector<vmm::VcpuProgress>& start() const { return start_; }
  uint32_t pages_per_vcpu() const { return walk_.pages_per_vcpu(); }

  // Replays every vCPU from the snapshot to `steps[i]` over a copy of the
  // memory file; `touched` (optional) collects the guest pages read.
  std::vector<vmm::VcpuProgress> Replay(const std::vector<uint32_t>& steps,
                                        std::unordered_set<uint64_t>* touched) const {
    std::vector<uint8_t> image = image_;  // the walk writes into the pages it reads
    auto page_at = [&](uint64_t gpa) -> uint8_t* {
      if (touched) touched->insert(gpa);
      auto off = walk_.layout().FileOffsetOf(gpa);
      return image.data() + *off;  // the walk only picks pages inside the layout
    };
    std::vector<vmm::VcpuProgress> out;
    for (uint32_t v = 0; v < start_.size(); ++v) {
      vmm::VcpuProgress p = start_[v];
      while (p.step < steps[v]) p = walk_.Step(v, p, page_at);
      out.push_back(p);
    }
    return out;
  }

  // The guest, paused at `reported`, must have computed exactly the model's
  // checksums: every byte of every page it read went into them.
  Status Check(const std::vector<vmm::VcpuProgress>& reported) const {
    if (reported.size() != start_.size()) return Status::Internal("the restored guest has a different vCPU count");
    std::vector<uint32_t> steps;
    for (const auto& p : reported) steps.push_back(p.step);
    auto want = Replay(steps, nullptr);
    for (size_t i = 0; i < want.size(); ++i) {
      if (!(want[i] == reported[i])) {
        return Status::Internal("vCPU " + std::to_string(i) + " at step " + std::to_string(reported[i].step) +
                                ": checksum " + std::to_string(reported[i].checksum) + ", the model's " +
                                std::to_string(want[i].checksum) + " (the guest read wrong bytes)");
      }
    }
    return Status::Ok();
  }

 private:
  GuestModel(vmm::GuestWalk walk, std::vector<uint8_t> image, std::vector<vmm::VcpuProgress> start)
      : walk_(std::move(walk)), image_(std::move(image)), start_(std::move(start)) {}
  vmm::GuestWalk walk_;
  std::vector<uint8_t> image_;
  std::vector<vmm::VcpuProgress> start_;
};

// Everything one restore needs.
struct Setup {
  const TinyVmmBenchConfig* vmm = nullptr;
  std::string state_path, mem_path;
  std::string socket_dir;  // short paths: sockaddr_un holds 108 bytes
  std::vector<uint32_t> targets;
  const GuestModel* model = nullptr;
};

// Boots the source guest, lets it run (and write), and writes the Full
// snapshot both files of which the restores use.
Status MakeSnapshot(const Setup& s) {
  auto vm = TinyVmm::Start(s.vmm->binary, s.socket_dir + "/source.sock", s.vmm->work_dir + "/source.log");
  if (!vm.ok()) return vm.status();
  UFFD_RETURN_IF_ERROR(
      (*vm)->Do("PUT", "/machine-config", {{"vcpu_count", s.vmm->vcpus}, {"mem_size_mib", s.vmm->memory_mib}}));
  UFFD_RETURN_IF_ERROR((*vm)->Do("PUT", "/actions", {{"action_type", "InstanceStart"}}));
  std::vector<uint32_t> steps(s.vmm->vcpus, uint32_t(s.vmm->source_steps));
  UFFD_RETURN_IF_ERROR(WaitForSteps(**vm, steps, std::chrono::seconds(60)));
  UFFD_RETURN_IF_ERROR((*vm)->Do("PATCH", "/vm", {{"state", "Paused"}}));
  return (*vm)->Do("PUT", "/snapshot/create",
                   {{"snapshot_type", "Full"}, {"snapshot_path", s.state_path}, {"mem_file_path", s.mem_path}},
                   std::chrono::seconds(120));
}

struct Sample {
  double ms = 0;       // PUT /snapshot/load sent -> every vCPU at its target step
  double load_ms = 0;  // PUT /snapshot/load sent -> answered (VM running)
  json counters;       // the pager session's counters ({} for File)
};

// One restore of the snapshot into a fresh tinyvmm with `mem_backend`; for a
// Uffd restore, `pager` serves `session_id`.
Result<Sample> RestoreOnce(const Setup& s, const json& mem_backend, const BenchPager* pager,
                           const std::string& session_id, const std::string& tag) {
  auto vm = TinyVmm::Start(s.vmm->binary, s.socket_dir + "/" + tag + ".sock", s.vmm->work_dir + "/" + tag + ".log");
  if (!vm.ok()) return vm.status();
  Sample sample;
  const auto start = Clock::now();
  UFFD_RETURN_IF_ERROR((*vm)->Do("PUT", "/snapshot/load",
                                 {{"snapshot_path", s.state_path}, {"mem_backend", mem_backend}, {"resume_vm", true}},
                                 kLoadLimit));
  sample.load_ms = Ms(Clock::now() - start);
  UFFD_RETURN_IF_ERROR(WaitForSteps(**vm, s.targets, kProgressLimit).WithContext(tag));
  sample.ms = Ms(Clock::now() - start);

  // Paused at a step boundary, the reported progress is exact: check it.
  UFFD_RETURN_IF_ERROR((*vm)->Do("PATCH", "/vm", {{"state", "Paused"}}));
  auto reported = (*vm)->Guest();
  if (!reported.ok()) return reported.status();
  UFFD_RETURN_IF_ERROR(s.model->Check(*reported).WithContext(tag));
  if (pager != nullptr) {
    sample.counters = pager->SessionCounters(session_id);
    vm->reset();  // the VMM goes first, so nothing waits on a closed session
    // Closing joins the session thread, which saves a prefetch recording.
    UFFD_RETURN_IF_ERROR(pager->client().CloseSession(session_id));
  }
  return sample;
}

// The samples of one variant.
struct TinyvmmSeries {
  std::string name;
  std::vector<double> ms, load_ms, faults, prefetch_pages, fault_around_pages;
  std::string skipped;

  void Add(const Sample& sample) {
    ms.push_back(sample.ms);
    load_ms.push_back(sample.load_ms);
    if (!sample.counters.is_object()) return;
    faults.push_back(sample.counters.value("faults", 0.0));
    prefetch_pages.push_back(sample.counters.value("prefetch_pages", 0.0));
    fault_around_pages.push_back(sample.counters.value("fault_around_pages", 0.0));
  }

  json ToJson() const {
    json j = {{"name", name}};
    if (!skipped.empty()) {
      j["skipped"] = skipped;
      return j;
    }
    j["median_ms"] = Median(ms);
    j["median_load_ms"] = Median(load_ms);
    j["samples_ms"] = ms;
    j["samples_load_ms"] = load_ms;
    if (!faults.empty()) {
      j["median_faults"] = Median(faults);
      j["median_prefetch_pages"] = Median(prefetch_pages);
      j["median_fault_around_pages"] = Median(fault_around_pages);
    }
    return j;
  }
};

}  // namespace

std::string TinyVmmUnavailableReason(const TinyVmmBenchConfig& vmm) {
  if (vmm.binary.empty() || ::access(vmm.binary.c_str(), X_OK) != 0) {
    return "no tinyvmm binary at '" + vmm.binary + "' (build with -DUFFDPAGER_WITH_VMM=ON, or pass --tinyvmm-bin)";
  }
  if (::access("/dev/kvm", R_OK | W_OK) != 0) return "/dev/kvm is not available on this machine";
  return "";
}

Result<json> RunTinyVmmRestore(const BenchConfig& config, const TinyVmmBenchConfig& vmm) {
  std::error_code ec;
  std::filesystem::create_directories(vmm.work_dir, ec);
  if (ec) return Status::FromErrno(ec.value(), "create " + vmm.work_dir);
  // Each VMM appends to its log here (kept after a failed run, to read);
  // start from none so they describe this run only.
  for (const auto& entry : std::filesystem::directory_iterator(vmm.work_dir, ec)) {
    if (entry.path().extension() == ".log") std::filesystem::remove(entry.path(), ec);
  }
  Setup s;
  s.vmm = &vmm;
  const std::string base = vmm.work_dir + "/source-" + std::to_string(vmm.memory_mib) + "mib";
  s.state_path = base + ".state";
  s.mem_path = base + ".mem";
  s.socket_dir = config.pager.data_root;
  Progress("tinyvmm: booting a " + std::to_string(vmm.memory_mib) + " MiB, " + std::to_string(vmm.vcpus) +
           "-vCPU guest and taking a Full snapshot");
  UFFD_RETURN_IF_ERROR(MakeSnapshot(s).WithContext("tinyvmm source snapshot"));
  auto model = GuestModel::Load(s.state_path, s.mem_path);
  if (!model.ok()) return model.status();
  s.model = &*model;
  const uint64_t steps = vmm.target_steps ? vmm.target_steps : model->pages_per_vcpu();
  for (const auto& p : model->start()) s.targets.push_back(uint32_t(p.step + steps));
  std::unordered_set<uint64_t> touched;
  model->Replay(s.targets, &touched);

  // The pagers serve the whole guest from their cache.
  PagerSetup setup = config.pager;
  setup.cache_max_bytes = std::max<uint64_t>(setup.cache_max_bytes, vmm.memory_mib * kMiB);
  std::vector<TinyvmmSeries> series = {{"file_warm"}};
  std::vector<PagerFlavor> flavors;
  for (const PagerFlavor& flavor : RestoreFlavors(config.flavors)) {
    bool available = flavor.required_flag.empty() || config.pager_help.find(flavor.required_flag) != std::string::npos;
    for (const char* cache : {"_cold", "_warm"}) {
      series.push_back({flavor.name + cache});
      if (!available) series.back().skipped = "skipped: `uffd-pager --help` has no " + flavor.required_flag;
    }
    if (available) flavors.push_back(flavor);
  }
  auto find = [&series](const std::string& name) -> TinyvmmSeries& {
    return *std::find_if(series.begin(), series.end(), [&](const TinyvmmSeries& x) { return x.name == name; });
  };

  // Runs interleave the variants, as in the other sections, so drift of a
  // shared machine spreads over all of them.
  for (unsigned run = 0; run < config.runs; ++run) {
    const std::string r = std::to_string(run);
    UFFD_RETURN_IF_ERROR(WarmPageCache(s.mem_path));
    auto file = RestoreOnce(s, {{"backend_type", "File"}, {"backend_path", s.mem_path}}, nullptr, "", "file-" + r);
    if (!file.ok()) return file.status();
    find("file_warm").Add(*file);
    for (const PagerFlavor& flavor : flavors) {
      // A fresh pager: its cache and its prefetch records start empty.
      UFFD_RETURN_IF_ERROR(WarmPageCache(s.mem_path));
      auto pager = BenchPager::Launch(setup, flavor, "tinyvmm-" + flavor.name);
      if (!pager.ok()) return pager.status().WithContext("launch " + flavor.name);
      for (const char* cache : {"cold", "warm"}) {
        const std::string id = "tinyvmm-" + std::string(cache) + "-" + r;
        auto socket = (*pager)->CreateSession(id, s.mem_path);
        if (!socket.ok()) return socket.status();
        auto sample = RestoreOnce(s, {{"backend_type", "Uffd"}, {"backend_path", *socket}}, pager->get(), id,
                                  flavor.name + "-" + cache + "-" + r);
        if (!sample.ok()) return sample.status().WithContext(flavor.name + " " + cache);
        find(flavor.name + "_" + cache).Add(*sample);
      }
    }
    Progress("tinyvmm run " + std::to_string(run + 1) + "/" + std::to_string(config.runs) + " done");
  }

  const double file_ms = Median(find("file_warm").ms);
  const double on_demand_cold = Median(find("pager_on_demand_cold").ms);
  const double on_demand_warm = Median(find("pager_on_demand_warm").ms);
  json variants = json::array();
  for (const TinyvmmSeries& x : series) {
    json j = x.ToJson();
    if (x.skipped.empty()) {
      const double median = Median(x.ms);
      j["ratio_vs_file_warm"] = median / file_ms;
      if (x.name.starts_with("pager")) {
        j["ratio_vs_on_demand"] = median / (x.name.ends_with("_warm") ? on_demand_warm : on_demand_cold);
      }
    }
    variants.push_back(j);
  }
  return json{{"guest_mib", vmm.memory_mib},
              {"vcpus", vmm.vcpus},
              {"pages_per_vcpu", model->pages_per_vcpu()},
              {"steps_per_vcpu", steps},
              {"source_steps", vmm.source_steps},
              {"distinct_pages_read", touched.size()},
              {"distinct_mib_read", touched.size() * double(vmm::kGuestPageSize) / double(kMiB)},
              {"verified", "each restore: paused, per-vCPU checksums equal the model's replay"},
              {"variants", variants}};
}

}  // namespace uffdpager::bench
