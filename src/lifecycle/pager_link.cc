#include "lifecycle/pager_link.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/durable_file.h"
#include "common/json_fields.h"
#include "common/object_url.h"
#include "common/wait_for.h"
#include "lifecycle/detached_process.h"

namespace uffdpager::lifecycle {

PagerLink::PagerLink(const std::string& data_dir, const DataDirConfig& config)
    : data_dir_(data_dir),
      config_(config),
      client_(PagerClient::ControlSocketPath(data_dir, config.pager_version_key)) {}

namespace {

constexpr auto kPagerStartTimeout = std::chrono::seconds(10);

}  // namespace

std::string PagerLink::StartedMarkerPath() const {
  return data_dir_ + "/uffd/pager-" + config_.pager_version_key + ".started";
}

Status PagerLink::EnsureRunning() {
  auto health = client_.Health();
  if (health.ok() && health->draining) {
    // A draining pager takes no session and exits once none holds a VM
    // (one this directory stopped, say): wait for it, then start another.
    WaitFor([&] { return !client_.Health(std::chrono::seconds(1)).ok(); }, kPagerStartTimeout);
  } else if (health.ok()) {
    return Status::Ok();
  }
  if (!config_.pager_autostart) {
    return Status::Unavailable("uffd-pager is not running on " + client_.control_socket_path() +
                               " and this data directory does not start it (pager_autostart=false)");
  }
  if (config_.pager_binary.empty()) {
    return Status::Unavailable("uffd-pager is not running and no pager_binary is configured (snapctl init)");
  }
  if (::access(config_.pager_binary.c_str(), X_OK) != 0) {
    return Status::Unavailable("uffd-pager is not running and " + config_.pager_binary +
                               " cannot be run: " + std::strerror(errno));
  }
  std::string log = data_dir_ + "/uffd/pager-" + config_.pager_version_key + ".log";
  std::error_code ec;
  std::filesystem::create_directories(data_dir_ + "/uffd", ec);
  spdlog::info("starting {} for {}", config_.pager_binary, data_dir_);
  auto started =
      SpawnDetached({config_.pager_binary, "--data-dir", data_dir_, "--version-key", config_.pager_version_key,
                     "--cache-max-bytes", std::to_string(config_.pager_cache_bytes)},
                    log);
  if (!started.ok()) return started.status().WithCode(ErrorCode::kUnavailable).WithContext("start uffd-pager");
  // A pager that lost a race with another one exits at once; either way a
  // pager answering is what we wait for.
  if (!WaitFor([&] { return client_.Health().ok(); }, kPagerStartTimeout)) {
    return Status::Unavailable("uffd-pager did not come up on " + client_.control_socket_path() + "; see " + log);
  }
  if (started->IsAlive()) {
    nlohmann::json marker = {{"pid", started->pid}, {"start_time", started->start_time}};
    if (Status st = WriteFileAtomically(StartedMarkerPath(), marker.dump() + "\n"); !st.ok()) {
      spdlog::warn("cannot record the pager this directory started: {}", st.ToString());
    }
  }
  return Status::Ok();
}

Status PagerLink::StopIfStartedHere() {
  const std::string marker_path = StartedMarkerPath();
  auto text = ReadWholeFile(marker_path, 4096);
  if (!text.ok()) return Status::Ok();  // nothing started here
  ProcessIdentity started;
  nlohmann::json marker = nlohmann::json::parse(*text, nullptr, false);
  JsonFields fields(marker);
  if (!fields.Read("pid", &started.pid).ok() || !fields.Read("start_time", &started.start_time).ok() ||
      !started.IsAlive()) {
    ::unlink(marker_path.c_str());  // gone (or unreadable): nothing to stop
    return Status::Ok();
  }
  auto health = client_.Health(std::chrono::seconds(2));
  if (!health.ok() || health->active_sessions > 0) return Status::Ok();  // not ours to judge, or in use
  spdlog::info("stopping the pager this directory started (pid {}): no VM needs it", started.pid);
  UFFD_RETURN_IF_ERROR(client_.Drain());
  if (!WaitFor([&] { return !started.IsAlive(); }, kPagerStartTimeout)) {
    return Status::Timeout("the drained pager (pid " + std::to_string(started.pid) + ") did not exit");
  }
  ::unlink(marker_path.c_str());
  return Status::Ok();
}

Result<CreatedSession> PagerLink::OpenSession(const std::string& instance, const std::vector<std::string>& layers) {
  if (layers.empty() || layers.size() > kMaxPagerLayers) {
    return Status::InvalidArgument("a pager session serves 1 to " + std::to_string(kMaxPagerLayers) + " layers, not " +
                                   std::to_string(layers.size()));
  }
  UFFD_RETURN_IF_ERROR(EnsureRunning());
  CreateSessionRequest request;
  request.session_id = instance;
  request.instance_id = instance;
  if (layers.size() == 1) {
    // An object layer is read from the store with the pager's own AWS_*
    // environment (inherited from the snapctl that started it).
    (IsObjectUrl(layers.front()) ? request.backing_memory_url : request.backing_memory_path) = layers.front();
    // Forks of one snapshot share one cache key: the pager reads each page once.
    request.cache_key = layers.front();
  } else {
    // The pager keys its cache by each layer itself, so forks over a shared
    // lower layer share its pages.
    request.backing_layers = layers;
  }
  request.kill_client_on_failure = true;
  request.socket_uid = config_.vmm_uid;
  request.expected_uid = config_.vmm_uid;
  request.socket_gid = config_.vmm_gid;
  return client_.CreateSession(request);
}

Status PagerLink::CloseSession(const std::string& session_id) {
  if (session_id.empty()) return Status::Ok();
  Status st = client_.CloseSession(session_id);
  if (st.ok() || st.code() == ErrorCode::kNotFound) return Status::Ok();
  if (!client_.Health().ok()) return Status::Ok();  // no pager, no session
  return st;
}

std::string PagerLink::SessionProblem(const std::string& session_id) const {
  auto health = client_.Health();
  if (!health.ok()) return "pager unreachable: " + health.status().ToString();
  auto session = client_.GetSession(session_id);
  if (!session.ok()) return "pager session " + session_id + ": " + session.status().ToString();
  JsonFields fields(*session);
  std::string state;
  std::string reason;
  Status read = fields.Read("state", &state);
  if (read.ok()) read = fields.ReadOptional("reason", &reason);
  if (!read.ok()) return "pager session " + session_id + " answered oddly: " + read.message();
  if (state == "waiting" || state == "serving" || state == "completing" || state == "completed") return "";
  return "pager session " + session_id + " is " + state + (reason.empty() ? "" : ": " + reason);
}

}  // namespace uffdpager::lifecycle
