#include "vmm/vmm_controller.h"

#include <spdlog/spdlog.h>

#include <cstdlib>

#include "common/version.h"

namespace uffdpager::vmm {

namespace {

constexpr char kNotAfterStart[] = "The requested operation is not supported after starting the microVM.";
constexpr char kNotBeforeStart[] = "The requested operation is not supported before starting the microVM.";

Status LoadError(const std::string& what, const Status& cause) {
  return Status::Error(cause.code() == ErrorCode::kInternal ? ErrorCode::kInternal : ErrorCode::kInvalidArgument,
                       "Load snapshot error: Failed to restore from snapshot: " + what + ": " + cause.ToString());
}

}  // namespace

const char* InstanceStateName(InstanceState s) {
  switch (s) {
    case InstanceState::kNotStarted: return "Not started";
    case InstanceState::kRunning: return "Running";
    case InstanceState::kPaused: return "Paused";
  }
  return "?";
}

VmmController::VmmController(VmmOptions options) : options_(std::move(options)) {
  watchdog_ = std::make_unique<StallWatchdog>(
      options_.stall_timeout, [this] { return SampleActivity(); },
      [this](const std::string& reason) { ReportStall(reason); });
}

VmmController::~VmmController() { watchdog_.reset(); }

void VmmController::SetState(InstanceState s) {
  std::lock_guard<std::mutex> lock(status_mu_);
  state_ = s;
}

InstanceState VmmController::state() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  return state_;
}

Status VmmController::PutMachineConfig(const MachineConfig& config) {
  std::lock_guard<std::mutex> lock(api_mu_);
  if (state() != InstanceState::kNotStarted) return Status::InvalidArgument(kNotAfterStart);
  if (config.vcpu_count < 1 || config.vcpu_count > kMaxVcpus ||
      (config.smt && config.vcpu_count % 2 != 0 && config.vcpu_count != 1)) {
    return Status::InvalidArgument(
        "The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.");
  }
  uint64_t page = config.huge_pages == "2M" ? 2 * kMiB : kGuestPageSize;
  if (config.mem_size_mib == 0 || (config.mem_size_mib * kMiB) % page != 0) {
    return Status::InvalidArgument("The memory size (MiB) is either 0, or not a multiple of the configured page size.");
  }
  auto layout = GuestLayout::ForMemorySize(config.mem_size_mib * kMiB, options_.hole_start, options_.hole_size, page);
  if (!layout.ok()) return Status::InvalidArgument("The memory size (MiB) is invalid: " + layout.status().message());
  auto walk = GuestWalk::Create(*layout, config.vcpu_count, options_.program);
  if (!walk.ok()) return Status::InvalidArgument("The memory size (MiB) is invalid: " + walk.status().message());
  {
    std::lock_guard<std::mutex> g(status_mu_);
    config_ = config;
  }
  configured_ = true;
  return Status::Ok();
}

MachineConfig VmmController::GetMachineConfig() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  return config_;
}

Status VmmController::StartInstance() {
  std::lock_guard<std::mutex> lock(api_mu_);
  if (state() != InstanceState::kNotStarted) return Status::InvalidArgument(kNotAfterStart);
  uint64_t page = config_.huge_pages == "2M" ? 2 * kMiB : kGuestPageSize;
  auto layout = GuestLayout::ForMemorySize(config_.mem_size_mib * kMiB, options_.hole_start, options_.hole_size, page);
  if (!layout.ok()) return Status::InvalidArgument("Start microvm error: " + layout.status().ToString());
  auto walk = GuestWalk::Create(*layout, config_.vcpu_count, options_.program);
  if (!walk.ok()) return Status::InvalidArgument("Start microvm error: " + walk.status().ToString());
  auto ram = GuestRam::AllocateAnonymous(*layout);
  if (!ram.ok()) return Status::InvalidArgument("Start microvm error: " + ram.status().ToString());
  UFFD_RETURN_IF_ERROR(walk->Install(*ram));
  const GuestWalk& w = *walk;
  auto machine = Machine::Create(
      config_, options_.program, std::move(*ram),
      [&w](uint32_t i, kvm_regs* regs, kvm_sregs* sregs) { w.InitialRegisters(i, regs, sregs); }, 0);
  if (!machine.ok()) return Status::InvalidArgument("Start microvm error: " + machine.status().ToString());
  std::shared_ptr<Machine> m = std::move(*machine);
  m->Resume();
  {
    std::lock_guard<std::mutex> s(status_mu_);
    machine_ = m;
    state_ = InstanceState::kRunning;
  }
  spdlog::info("started: {} vCPUs, {} MiB in {} region(s)", config_.vcpu_count, config_.mem_size_mib,
               m->ram().layout().regions.size());
  return Status::Ok();
}

Status VmmController::Pause() {
  std::lock_guard<std::mutex> lock(api_mu_);
  if (state() == InstanceState::kNotStarted) return Status::InvalidArgument(kNotBeforeStart);
  std::shared_ptr<Machine> m;
  {
    std::lock_guard<std::mutex> s(status_mu_);
    m = machine_;
  }
  Status st = m->Pause(options_.pause_timeout);
  if (!st.ok()) return Status::Error(st.code(), "Failed to pause the vCPUs: " + st.ToString());
  SetState(InstanceState::kPaused);
  return Status::Ok();
}

Status VmmController::Resume() {
  std::lock_guard<std::mutex> lock(api_mu_);
  if (state() == InstanceState::kNotStarted) return Status::InvalidArgument(kNotBeforeStart);
  std::shared_ptr<Machine> m;
  {
    std::lock_guard<std::mutex> s(status_mu_);
    m = machine_;
  }
  std::string fatal = m->FatalError();
  if (!fatal.empty()) return Status::Internal("Failed to resume the vCPUs: " + fatal);
  m->Resume();
  SetState(InstanceState::kRunning);
  return Status::Ok();
}

Status VmmController::CreateSnapshot(const SnapshotCreateRequest& request) {
  std::lock_guard<std::mutex> lock(api_mu_);
  InstanceState s = state();
  if (s == InstanceState::kNotStarted) return Status::InvalidArgument(kNotBeforeStart);
  if (s != InstanceState::kPaused) {
    return Status::InvalidArgument("Create snapshot error: Cannot save the microVM state: the vCPUs are not paused.");
  }
  std::shared_ptr<Machine> m;
  {
    std::lock_guard<std::mutex> g(status_mu_);
    m = machine_;
  }
  if (request.diff && !m->config().track_dirty_pages) {
    return Status::InvalidArgument("Diff snapshots are not allowed on uVMs with dirty page tracking disabled.");
  }
  auto state = m->CaptureState();
  if (!state.ok()) return Status::InvalidArgument("Create snapshot error: " + state.status().ToString());
  auto stats = request.diff ? m->WriteDiffMemory(request.mem_file_path) : m->WriteFullMemory(request.mem_file_path);
  if (!stats.ok()) {
    return Status::InvalidArgument("Create snapshot error: Cannot write memory file: " + stats.status().ToString());
  }
  Status st = WriteSnapshotStateFile(request.snapshot_path, *state);
  if (!st.ok())
    return Status::InvalidArgument("Create snapshot error: Cannot save the microVM state: " + st.ToString());
  spdlog::info("{} snapshot: {} pages into {}, state into {}", request.diff ? "diff" : "full", stats->pages_written,
               request.mem_file_path, request.snapshot_path);
  return Status::Ok();
}

Status VmmController::LoadSnapshot(const SnapshotLoadRequest& request) {
  std::lock_guard<std::mutex> lock(api_mu_);
  if (state() != InstanceState::kNotStarted) return Status::InvalidArgument(kNotAfterStart);
  if (configured_) {
    return Status::InvalidArgument("Loading a microVM snapshot not allowed after configuring boot-specific resources.");
  }
  auto saved = ReadSnapshotStateFile(request.snapshot_path);
  if (!saved.ok()) return LoadError("Failed to get snapshot state from file", saved.status());
  auto walk = GuestWalk::Create(saved->layout, saved->machine.vcpu_count, saved->program);
  if (!walk.ok()) return LoadError("Invalid snapshot state", walk.status());

  std::optional<GuestRam> ram;
  if (request.uffd) {
    auto anon = GuestRam::AllocateAnonymous(saved->layout);
    if (!anon.ok()) return LoadError("Failed to load guest memory", anon.status());
    ram.emplace(std::move(*anon));
    auto handshake = PerformVmmHandshake(*ram->anonymous(), request.backend_path, {});
    if (!handshake.ok()) {
      return LoadError(
          "Failed to load guest memory: Cannot connect to UDS in order to send information on handling guest "
          "memory page-faults",
          handshake.status());
    }
    handshake_.emplace(std::move(*handshake));
  } else {
    auto mapped = GuestRam::MapFilePrivately(saved->layout, request.backend_path);
    if (!mapped.ok()) return LoadError("Failed to load guest memory", mapped.status());
    ram.emplace(std::move(*mapped));
  }

  MachineConfig config = saved->machine;
  config.track_dirty_pages = request.track_dirty_pages;
  const SnapshotState& st = *saved;
  // From here on guest memory is touched; with Uffd every first touch waits
  // for the page server, so the watchdog watches the load too.
  {
    std::lock_guard<std::mutex> g(status_mu_);
    loading_ = true;
  }
  auto machine = Machine::Create(
      config, saved->program, std::move(*ram),
      [&st](uint32_t i, kvm_regs* regs, kvm_sregs* sregs) {
        *regs = st.vcpus[i].regs;
        *sregs = st.vcpus[i].sregs;
      },
      saved->generation + 1);
  if (!machine.ok()) {
    std::lock_guard<std::mutex> g(status_mu_);
    loading_ = false;
    return LoadError("Failed to create the microVM", machine.status());
  }
  std::shared_ptr<Machine> m = std::move(*machine);
  // Like Firecracker's VMGenID (and VMClock) update: the VMM thread writes
  // guest memory while the load is still in progress. With Uffd this is a
  // fault the page server must serve before the request can complete.
  uint64_t generation[2] = {m->generation(), 0x544e59564d4d4745ULL};
  Status w = m->ram().WriteFromVmm(kGenerationGpa, generation, sizeof(generation));
  {
    std::lock_guard<std::mutex> g(status_mu_);
    loading_ = false;
    if (w.ok()) {
      machine_ = m;
      state_ = InstanceState::kPaused;
    }
  }
  if (!w.ok()) return LoadError("Failed to update the VM generation", w);
  configured_ = true;
  nlohmann::json network_overrides = nlohmann::json::array();
  for (const auto& [iface, host_dev] : request.network_overrides) {
    network_overrides.push_back({{"iface_id", iface}, {"host_dev_name", host_dev}});
  }
  {
    std::lock_guard<std::mutex> g(status_mu_);
    config_ = config;
    last_load_ = {{"snapshot_path", request.snapshot_path}, {"backend_type", request.uffd ? "Uffd" : "File"},
                  {"backend_path", request.backend_path},   {"track_dirty_pages", request.track_dirty_pages},
                  {"resume_vm", request.resume_vm},         {"network_overrides", network_overrides}};
    if (request.vsock_uds_path) last_load_["vsock_override"] = {{"uds_path", *request.vsock_uds_path}};
  }
  spdlog::info("snapshot {} loaded ({} backend {}), generation {}", request.snapshot_path,
               request.uffd ? "Uffd" : "File", request.backend_path, m->generation());
  if (request.resume_vm) {
    m->Resume();
    SetState(InstanceState::kRunning);
  }
  return Status::Ok();
}

nlohmann::json VmmController::InstanceInfo() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  nlohmann::json j = {{"id", options_.instance_id},
                      {"state", InstanceStateName(state_)},
                      {"vmm_version", kVersion},
                      {"app_name", "tinyvmm"},
                      {"stalled", !stall_reason_.empty()}};
  if (!stall_reason_.empty()) j["stall_reason"] = stall_reason_;
  return j;
}

nlohmann::json VmmController::GuestReport() const {
  std::shared_ptr<Machine> m;
  nlohmann::json j;
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    m = machine_;
    j["state"] = InstanceStateName(state_);
    j["stalled"] = !stall_reason_.empty();
  }
  nlohmann::json vcpus = nlohmann::json::array();
  uint64_t total = 0;
  if (m) {
    auto activity = m->Activity();
    for (size_t i = 0; i < activity.size(); ++i) {
      const auto& a = activity[i];
      vcpus.push_back({{"index", i},
                       {"step", a.progress.step},
                       {"checksum", a.progress.checksum},
                       {"prng", a.progress.prng},
                       {"exits", a.exits},
                       {"running", a.running}});
      total += a.progress.step;
    }
    j["generation"] = m->generation();
    j["fatal_error"] = m->FatalError();
  }
  j["vcpus"] = vcpus;
  j["total_steps"] = total;
  return j;
}

nlohmann::json VmmController::LoadReport() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  return last_load_;
}

std::vector<ActivitySample> VmmController::SampleActivity() const {
  std::shared_ptr<Machine> m;
  std::vector<ActivitySample> out;
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    m = machine_;
    out.push_back({"snapshot load", loading_, 0});
  }
  if (m) {
    auto activity = m->Activity();
    for (size_t i = 0; i < activity.size(); ++i) {
      out.push_back({"vCPU " + std::to_string(i), activity[i].running, activity[i].exits});
    }
  }
  return out;
}

void VmmController::ReportStall(const std::string& reason) {
  spdlog::error("stalled: {}", reason);
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    stall_reason_ = reason;
  }
  if (options_.exit_on_stall) {
    spdlog::critical("exiting because of the stall (--exit-on-stall)");
    spdlog::default_logger()->flush();
    std::_Exit(kStallExitCode);
  }
}

bool VmmController::Shutdown(std::chrono::milliseconds timeout) {
  watchdog_.reset();
  std::shared_ptr<Machine> m;
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    // A load stuck writing guest memory holds an API thread in the kernel.
    if (loading_) return false;
    m = machine_;
  }
  return m ? m->Shutdown(timeout) : true;
}

}  // namespace uffdpager::vmm
