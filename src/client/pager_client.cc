#include "uffdpager/pager_client.h"

#include "common/http_client.h"

namespace uffdpager {

using Json = nlohmann::json;

namespace {

ErrorCode CodeForHttpStatus(int status) {
  switch (status) {
    case 400: return ErrorCode::kInvalidArgument;
    case 403: return ErrorCode::kPermissionDenied;
    case 404: return ErrorCode::kNotFound;
    case 409: return ErrorCode::kConflict;
    case 413: return ErrorCode::kInvalidArgument;
    case 503: return ErrorCode::kUnavailable;
    default: return ErrorCode::kInternal;
  }
}

}  // namespace

PagerClient::PagerClient(std::string control_socket_path) : socket_path_(std::move(control_socket_path)) {}

std::string PagerClient::ControlSocketPath(const std::string& data_dir, const std::string& version_key) {
  return data_dir + "/uffd/" + version_key + "/control.sock";
}

Result<Json> PagerClient::Call(const char* method, const std::string& path, const std::string& body,
                               std::chrono::milliseconds timeout) const {
  auto response = HttpClient(socket_path_).Send(method, path, body, timeout);
  if (!response.ok()) return response.status();
  Json parsed = response->body.empty() ? Json::object() : Json::parse(response->body, nullptr, false);
  if (response->status < 200 || response->status >= 300) {
    std::string message = (parsed.is_object() && parsed.contains("error") && parsed["error"].is_string())
                              ? parsed["error"].get<std::string>()
                              : response->body;
    return Status::Error(CodeForHttpStatus(response->status),
                         std::string(method) + " " + path + ": HTTP " + std::to_string(response->status) + ": " +
                             message);
  }
  if (parsed.is_discarded()) return Status::Protocol(std::string(method) + " " + path + ": answer is not JSON");
  return parsed;
}

Result<PagerHealth> PagerClient::Health(std::chrono::milliseconds timeout) const {
  auto j = Call("GET", "/health", "", timeout);
  if (!j.ok()) return j.status();
  PagerHealth h;
  h.version = j->value("version", "");
  h.draining = j->value("draining", false);
  h.active_sessions = j->value("active_sessions", uint64_t{0});
  return h;
}

Result<Json> PagerClient::Stats() const { return Call("GET", "/stats", "", std::chrono::seconds(10)); }

Result<Json> PagerClient::ListSessions() const {
  auto j = Call("GET", "/sessions", "", std::chrono::seconds(10));
  if (!j.ok()) return j.status();
  return (*j)["sessions"];
}

Result<Json> PagerClient::GetSession(const std::string& session_id) const {
  return Call("GET", "/sessions/" + session_id, "", std::chrono::seconds(10));
}

Result<CreatedSession> PagerClient::CreateSession(const CreateSessionRequest& request) const {
  Json body = {{"instance_id", request.instance_id}, {"backing_memory_path", request.backing_memory_path}};
  if (!request.session_id.empty()) body["session_id"] = request.session_id;
  if (!request.cache_key.empty()) body["cache_key"] = request.cache_key;
  if (request.kill_client_on_failure) body["kill_client_on_failure"] = true;
  if (request.socket_uid) body["socket_uid"] = *request.socket_uid;
  if (request.socket_gid) body["socket_gid"] = *request.socket_gid;
  if (request.expected_uid) body["expected_uid"] = *request.expected_uid;
  if (request.expected_pid) body["expected_pid"] = *request.expected_pid;
  auto j = Call("POST", "/sessions", body.dump(), std::chrono::seconds(30));
  if (!j.ok()) return j.status();
  return CreatedSession{j->value("session_id", ""), j->value("uffd_socket_path", ""), j->value("pager_version", "")};
}

Status PagerClient::CloseSession(const std::string& session_id) const {
  return Call("POST", "/sessions/" + session_id + "/close", "", std::chrono::seconds(30)).status();
}

Status PagerClient::CompleteSession(const std::string& session_id, std::chrono::milliseconds timeout) const {
  return Call("POST", "/sessions/" + session_id + "/complete", "", timeout).status();
}

Status PagerClient::Drain() const { return Call("POST", "/drain", "", std::chrono::seconds(10)).status(); }

}  // namespace uffdpager
