#include "lifecycle/firecracker_driver.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fstream>

#include "common/json_fields.h"
#include "common/wait_for.h"

namespace uffdpager::lifecycle {

using nlohmann::json;

namespace {

// The end of a log, for an error message: the instance folder holding the
// log may be gone by the time a person reads it.
std::string LogTail(const std::string& path) {
  constexpr std::streamoff kTail = 1500;
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return "";
  std::streamoff size = in.tellg();
  in.seekg(std::max<std::streamoff>(0, size - kTail));
  std::string text((std::istreambuf_iterator<char>(in)), {});
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text.empty() ? "" : "; its output ends: " + text;
}

}  // namespace

Status CheckVmmBinary(const std::string& binary) {
  if (binary.empty()) return Status::Unavailable("no VMM binary configured (snapctl init --vmm-binary)");
  if (::access(binary.c_str(), X_OK) != 0) {
    return Status::Unavailable("VMM binary " + binary + " cannot be run: " + std::strerror(errno));
  }
  return Status::Ok();
}

Result<ProcessIdentity> FirecrackerDriver::Launch(const VmmLaunch& launch, std::chrono::milliseconds ready_timeout) {
  UFFD_RETURN_IF_ERROR(CheckVmmBinary(launch.binary));
  ::unlink(launch.api_socket.c_str());
  std::vector<std::string> argv = {launch.binary, "--api-sock", launch.api_socket, "--id", launch.instance_id};
  argv.insert(argv.end(), launch.args.begin(), launch.args.end());
  auto process = SpawnDetached(argv, launch.log_path);
  // Whatever kept it from starting (exec's ENOENT included), the VMM is unavailable.
  if (!process.ok()) return process.status().WithCode(ErrorCode::kUnavailable).WithContext("start VMM");
  FirecrackerDriver driver(launch.api_socket);
  bool up =
      WaitFor([&] { return !process->IsAlive() || driver.Describe(std::chrono::seconds(1)).ok(); }, ready_timeout);
  if (!process->IsAlive()) {
    return Status::Unavailable("VMM " + launch.binary + " exited at start-up" + LogTail(launch.log_path));
  }
  if (!up) {
    (void)process->Terminate();
    return Status::Timeout("VMM did not answer on " + launch.api_socket + "; see " + launch.log_path);
  }
  return *process;
}

Status FirecrackerDriver::Call(const char* method, const std::string& path, const json& body,
                               std::chrono::milliseconds timeout) const {
  auto r = api_.Send(method, path, body.is_null() ? "" : body.dump(), timeout);
  if (!r.ok()) return r.status().WithContext(std::string(method) + " " + path);
  if (r->status >= 200 && r->status < 300) return Status::Ok();
  // A fault without a readable fault_message is quoted whole.
  json answer = json::parse(r->body, nullptr, false);
  std::string fault = r->body;
  (void)JsonFields(answer).ReadOptional("fault_message", &fault);
  // The VMM refused: the operation failed (a 4xx is not a state conflict of ours).
  return Status::Error(r->status >= 500 ? ErrorCode::kInternal : ErrorCode::kInvalidArgument,
                       std::string(method) + " " + path + " -> " + std::to_string(r->status) + ": " + fault);
}

Status FirecrackerDriver::Boot(const BootConfig& boot) {
  UFFD_RETURN_IF_ERROR(
      Call("PUT", "/machine-config",
           {{"vcpu_count", boot.vcpu_count}, {"mem_size_mib", boot.mem_size_mib}, {"track_dirty_pages", true}}));
  for (const auto& [path, body] : boot.pre_boot_requests.items()) UFFD_RETURN_IF_ERROR(Call("PUT", path, body));
  return Call("PUT", "/actions", {{"action_type", "InstanceStart"}});
}

Status FirecrackerDriver::Pause() { return Call("PATCH", "/vm", {{"state", "Paused"}}); }

Status FirecrackerDriver::Resume() { return Call("PATCH", "/vm", {{"state", "Resumed"}}); }

Status FirecrackerDriver::CreateSnapshot(SnapshotKind kind, const std::string& state_path,
                                         const std::string& mem_path) {
  return Call("PUT", "/snapshot/create",
              {{"snapshot_type", kind == SnapshotKind::kDiff ? "Diff" : "Full"},
               {"snapshot_path", state_path},
               {"mem_file_path", mem_path}});
}

Status FirecrackerDriver::LoadSnapshot(const std::string& state_path, LoadBackend backend,
                                       const std::string& backend_path, const RestoreOptions& options) {
  json body = {{"snapshot_path", state_path},
               {"mem_backend",
                {{"backend_type", backend == LoadBackend::kUffd ? "Uffd" : "File"}, {"backend_path", backend_path}}},
               {"track_dirty_pages", true},
               {"resume_vm", options.resume}};
  // Only when asked for: Firecracker before 1.12 refuses these fields.
  if (!options.network_overrides.empty()) {
    json overrides = json::array();
    for (const auto& o : options.network_overrides) {
      overrides.push_back({{"iface_id", o.iface_id}, {"host_dev_name", o.host_dev_name}});
    }
    body["network_overrides"] = overrides;
  }
  if (!options.vsock_uds_path.empty()) body["vsock_override"] = {{"uds_path", options.vsock_uds_path}};
  return Call("PUT", "/snapshot/load", body);
}

Result<json> FirecrackerDriver::Describe(std::chrono::milliseconds timeout) const {
  auto r = api_.Send("GET", "/", "", timeout);
  if (!r.ok()) return r.status();
  if (r->status != 200) return Status::Protocol("GET / -> " + std::to_string(r->status) + ": " + r->body);
  json j = json::parse(r->body, nullptr, false);
  if (!j.is_object()) return Status::Protocol("GET / answered no JSON object");
  return j;
}

}  // namespace uffdpager::lifecycle
