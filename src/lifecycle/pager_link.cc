#include "lifecycle/pager_link.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "common/json_fields.h"
#include "common/wait_for.h"
#include "lifecycle/detached_process.h"

namespace uffdpager::lifecycle {

PagerLink::PagerLink(const std::string& data_dir, const DataDirConfig& config)
    : data_dir_(data_dir),
      config_(config),
      client_(PagerClient::ControlSocketPath(data_dir, config.pager_version_key)) {}

Status PagerLink::EnsureRunning() {
  if (client_.Health().ok()) return Status::Ok();
  if (!config_.pager_autostart) {
    return Status::Unavailable("uffd-pager is not running on " + client_.control_socket_path() +
                               " and this data directory does not start it (pager_autostart=false)");
  }
  if (config_.pager_binary.empty()) return Status::InvalidArgument("no pager_binary configured");
  std::string log = data_dir_ + "/uffd/pager-" + config_.pager_version_key + ".log";
  std::error_code ec;
  std::filesystem::create_directories(data_dir_ + "/uffd", ec);
  spdlog::info("starting {} for {}", config_.pager_binary, data_dir_);
  auto started =
      SpawnDetached({config_.pager_binary, "--data-dir", data_dir_, "--version-key", config_.pager_version_key,
                     "--cache-max-bytes", std::to_string(config_.pager_cache_bytes)},
                    log);
  if (!started.ok()) return started.status();
  // A pager that lost a race with another one exits at once; either way a
  // pager answering is what we wait for.
  if (WaitFor([&] { return client_.Health().ok(); }, std::chrono::seconds(10))) return Status::Ok();
  return Status::Unavailable("uffd-pager did not come up on " + client_.control_socket_path() + "; see " + log);
}

Result<CreatedSession> PagerLink::OpenSession(const std::string& instance, const std::string& backing_path) {
  UFFD_RETURN_IF_ERROR(EnsureRunning());
  CreateSessionRequest request;
  request.session_id = instance;
  request.instance_id = instance;
  request.backing_memory_path = backing_path;
  // Forks of one snapshot share one cache key: the pager reads each page once.
  request.cache_key = backing_path;
  request.kill_client_on_failure = true;
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
