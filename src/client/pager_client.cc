#include "uffdpager/pager_client.h"

#include "common/http_client.h"
#include "common/json_fields.h"
#include "common/url_path.h"

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

// An answer without the fields the API promises: the pager broke the protocol.
Status Malformed(const char* request, const Status& st) {
  return Status::Protocol(std::string(request) + " answered " + st.message());
}

// Answers of older pagers may lack fields; those keep their defaults.
Status ReadHealth(const Json& j, PagerHealth* h) {
  JsonFields fields(j);
  h->answer = j;
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("version", &h->version));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("pager_version", &h->pager_version));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("draining", &h->draining));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("metrics_addr", &h->metrics_addr));
  return fields.ReadOptional("active_sessions", &h->active_sessions);
}

Status ReadCreatedSession(const Json& j, CreatedSession* created) {
  JsonFields fields(j);
  created->answer = j;
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("session_id", &created->session_id));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("uffd_socket_path", &created->uffd_socket_path));
  return fields.ReadOptional("pager_version", &created->pager_version);
}

// "/sessions/ID" plus `tail`, the id escaped so that it arrives as one path
// segment whatever it holds ("../drain?" is a session id to the pager, never
// a way to another endpoint).
Result<std::string> SessionPath(const std::string& session_id, const char* tail = "") {
  auto escaped = EscapePathSegment(session_id);
  if (!escaped.ok()) return escaped.status().WithContext("session id");
  return "/sessions/" + *escaped + tail;
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
    // An error without a readable "error" field is quoted whole.
    std::string message = response->body;
    (void)JsonFields(parsed).ReadOptional("error", &message);
    return Status::Error(CodeForHttpStatus(response->status), std::string(method) + " " + path + ": HTTP " +
                                                                  std::to_string(response->status) + ": " + message);
  }
  if (parsed.is_discarded()) return Status::Protocol(std::string(method) + " " + path + ": answer is not JSON");
  return parsed;
}

Result<PagerHealth> PagerClient::Health(std::chrono::milliseconds timeout) const {
  auto j = Call("GET", "/health", "", timeout);
  if (!j.ok()) return j.status();
  PagerHealth h;
  if (Status st = ReadHealth(*j, &h); !st.ok()) return Malformed("GET /health", st);
  return h;
}

Result<Json> PagerClient::Stats() const { return Call("GET", "/stats", "", std::chrono::seconds(10)); }

Result<Json> PagerClient::ListSessions() const {
  auto j = Call("GET", "/sessions", "", std::chrono::seconds(10));
  if (!j.ok()) return j.status();
  std::vector<Json> sessions;
  if (Status st = JsonFields(*j).Read("sessions", &sessions); !st.ok()) return Malformed("GET /sessions", st);
  return Json(std::move(sessions));
}

Result<Json> PagerClient::GetSession(const std::string& session_id) const {
  auto path = SessionPath(session_id);
  if (!path.ok()) return path.status();
  return Call("GET", *path, "", std::chrono::seconds(10));
}

Result<CreatedSession> PagerClient::CreateSession(const CreateSessionRequest& request) const {
  Json body = {{"instance_id", request.instance_id}};
  if (!request.backing_memory_path.empty()) body["backing_memory_path"] = request.backing_memory_path;
  if (!request.backing_memory_url.empty()) body["backing_memory_url"] = request.backing_memory_url;
  if (!request.backing_layers.empty()) body["backing_layers"] = request.backing_layers;
  if (!request.session_id.empty()) body["session_id"] = request.session_id;
  if (!request.cache_key.empty()) body["cache_key"] = request.cache_key;
  if (request.kill_client_on_failure) body["kill_client_on_failure"] = true;
  if (request.socket_uid) body["socket_uid"] = *request.socket_uid;
  if (request.socket_gid) body["socket_gid"] = *request.socket_gid;
  if (request.expected_uid) body["expected_uid"] = *request.expected_uid;
  if (request.expected_pid) body["expected_pid"] = *request.expected_pid;
  auto j = Call("POST", "/sessions", body.dump(), std::chrono::seconds(30));
  if (!j.ok()) return j.status();
  CreatedSession created;
  if (Status st = ReadCreatedSession(*j, &created); !st.ok()) return Malformed("POST /sessions", st);
  return created;
}

Status PagerClient::CloseSession(const std::string& session_id) const {
  auto path = SessionPath(session_id, "/close");
  if (!path.ok()) return path.status();
  return Call("POST", *path, "", std::chrono::seconds(30)).status();
}

Status PagerClient::CompleteSession(const std::string& session_id, std::chrono::milliseconds timeout) const {
  auto path = SessionPath(session_id, "/complete");
  if (!path.ok()) return path.status();
  return Call("POST", *path, "", timeout).status();
}

Status PagerClient::Drain() const { return Call("POST", "/drain", "", std::chrono::seconds(10)).status(); }

}  // namespace uffdpager
