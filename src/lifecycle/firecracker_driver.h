// FirecrackerDriver: one VMM driven through Firecracker's HTTP API on its
// Unix socket. Only requests and fields of Firecracker's API (1.x) are used,
// so the same driver runs Firecracker and tinyvmm; errors carry the VMM's
// {"fault_message"}.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/http_client.h"
#include "lifecycle/detached_process.h"
#include "uffdpager/lifecycle.h"

namespace uffdpager::lifecycle {

struct VmmLaunch {
  std::string binary;
  std::vector<std::string> args;  // after --api-sock SOCKET --id NAME
  std::string instance_id;
  std::string api_socket;
  std::string log_path;
};

// kUnavailable unless `binary` is a file this process may execute.
Status CheckVmmBinary(const std::string& binary);

enum class SnapshotKind { kFull, kDiff };
enum class LoadBackend { kFile, kUffd };

class FirecrackerDriver {
 public:
  explicit FirecrackerDriver(std::string api_socket) : api_(std::move(api_socket)) {}

  // Starts the VMM detached (it outlives this process) and waits until its
  // API answers. A stale socket file at the path is removed first
  // (Firecracker refuses to bind over one). A VMM that cannot be started or
  // exits at once is kUnavailable, with the end of its output.
  static Result<ProcessIdentity> Launch(const VmmLaunch& launch,
                                        std::chrono::milliseconds ready_timeout = std::chrono::seconds(10));

  Status Boot(const BootConfig& boot);
  Status Pause();
  Status Resume();
  Status CreateSnapshot(SnapshotKind kind, const std::string& state_path, const std::string& mem_path);
  // Dirty page tracking is always asked for: every later standby may be a
  // Diff. The overrides go in only when there are some.
  Status LoadSnapshot(const std::string& state_path, LoadBackend backend, const std::string& backend_path,
                      const RestoreOptions& options);
  // GET / (Firecracker's InstanceInfo: "state" is "Running", "Paused", ...).
  Result<nlohmann::json> Describe(std::chrono::milliseconds timeout = std::chrono::seconds(2)) const;

 private:
  Status Call(const char* method, const std::string& path, const nlohmann::json& body,
              std::chrono::milliseconds timeout = std::chrono::minutes(5)) const;
  HttpClient api_;
};

}  // namespace uffdpager::lifecycle
