// VmmController: the instance's life, in Firecracker's terms — configure,
// start, pause/resume, snapshot create and load — independent of HTTP
// (firecracker_api.h turns requests into these calls and their errors into
// Firecracker's answers).
//
// One API request runs at a time (api_mu_). What GET / and the progress
// report read lives behind its own lock, so they answer even while a request
// is stuck — e.g. a Uffd load whose page server died — and the stall
// watchdog can say so.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/vmm_handshake.h"
#include "uffdpager/status.h"
#include "vmm/machine.h"
#include "vmm/snapshot_state.h"
#include "vmm/stall_watchdog.h"

namespace uffdpager::vmm {

struct VmmOptions {
  std::string instance_id = "anonymous-instance";
  uint64_t hole_start = 64 * kMiB;
  uint64_t hole_size = 64 * kMiB;
  GuestProgramConfig program;
  std::chrono::milliseconds stall_timeout{5000};
  std::chrono::milliseconds pause_timeout{5000};
  bool exit_on_stall = false;
};

enum class InstanceState { kNotStarted, kRunning, kPaused };
const char* InstanceStateName(InstanceState s);  // Firecracker's spelling

struct SnapshotCreateRequest {
  std::string snapshot_path;
  std::string mem_file_path;
  bool diff = false;
};

struct SnapshotLoadRequest {
  std::string snapshot_path;
  bool uffd = false;         // mem_backend.backend_type == "Uffd"
  std::string backend_path;  // memory file, or the page server's socket
  bool track_dirty_pages = false;
  bool resume_vm = false;
  // Host devices for this restore (Firecracker 1.12+); recorded, as tinyvmm
  // has no devices.
  std::vector<std::pair<std::string, std::string>> network_overrides;  // (iface_id, host_dev_name)
  std::optional<std::string> vsock_uds_path;
};

// Exit status of tinyvmm when --exit-on-stall fires.
inline constexpr int kStallExitCode = 4;

class VmmController {
 public:
  explicit VmmController(VmmOptions options);
  ~VmmController();

  // Errors carry Firecracker's fault messages.
  Status PutMachineConfig(const MachineConfig& config);
  MachineConfig GetMachineConfig() const;
  Status StartInstance();
  Status Pause();
  Status Resume();
  Status CreateSnapshot(const SnapshotCreateRequest& request);
  Status LoadSnapshot(const SnapshotLoadRequest& request);

  // Never block on a running request.
  nlohmann::json InstanceInfo() const;
  nlohmann::json GuestReport() const;
  // The last successful snapshot load as it was asked for (null before
  // one): backend, paths, flags and the device overrides.
  nlohmann::json LoadReport() const;

  // Stops the vCPUs; false if one, or a load, is stuck in the kernel.
  bool Shutdown(std::chrono::milliseconds timeout);

 private:
  std::vector<ActivitySample> SampleActivity() const;
  void ReportStall(const std::string& reason);
  void SetState(InstanceState s);
  InstanceState state() const;

  const VmmOptions options_;

  mutable std::mutex api_mu_;              // one request at a time
  MachineConfig config_;                   // written under api_mu_ and status_mu_, read under either
  bool configured_ = false;                // guarded by api_mu_: boot-specific resources set
  std::optional<VmmHandshake> handshake_;  // guarded by api_mu_: kept for the VM's life

  mutable std::mutex status_mu_;
  InstanceState state_ = InstanceState::kNotStarted;  // guarded by status_mu_
  std::shared_ptr<Machine> machine_;                  // guarded by status_mu_
  bool loading_ = false;                              // guarded by status_mu_
  std::string stall_reason_;                          // guarded by status_mu_
  nlohmann::json last_load_;                          // guarded by status_mu_

  std::unique_ptr<StallWatchdog> watchdog_;
};

}  // namespace uffdpager::vmm
