#include "pager/daemon/control_api.h"

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "common/json_fields.h"
#include "common/object_url.h"
#include "common/url_path.h"
#include "common/version.h"
#include "pager/metrics/metrics_page.h"
#include "pager/metrics/prometheus_exposition.h"

namespace uffdpager {

using Json = nlohmann::json;

namespace {

// Paths, ids and cache keys come from clients and need not be UTF-8, which
// JSON requires: such bytes are answered as U+FFFD rather than failing the
// whole answer (a session with such a cache key would otherwise break
// GET /sessions for everyone).
HttpResponse JsonResponse(int status, const Json& body) {
  return HttpResponse{status, body.dump(-1, ' ', false, Json::error_handler_t::replace), "application/json"};
}
HttpResponse ErrorResponse(int status, const std::string& message) {
  return JsonResponse(status, {{"error", message}});
}
HttpResponse NoContent() { return HttpResponse{204, "", ""}; }

// `text` for a log line: control characters written as \xNN, so that what a
// client sent can never end the line and forge another.
std::string ForLog(const std::string& text) {
  std::string out;
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      out += fmt::format("\\x{:02x}", byte);
    } else {
      out += c;
    }
  }
  return out;
}

int HttpStatusFor(const Status& st) {
  switch (st.code()) {
    case ErrorCode::kInvalidArgument: return 400;
    case ErrorCode::kPermissionDenied: return 403;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kConflict: return 409;
    case ErrorCode::kUnavailable: return 503;
    default: return 500;
  }
}

// A create of a session on an object: the store's answer, passed on. A
// missing bucket or object is 404 (the caller named it), a store that
// cannot be reached or failed is a bad gateway, one too slow a timeout.
int HttpStatusForObjectStore(const Status& st) {
  switch (st.code()) {
    case ErrorCode::kUnavailable:
    case ErrorCode::kIoError:
    case ErrorCode::kProtocol: return 502;
    case ErrorCode::kTimeout: return 504;
    default: return HttpStatusFor(st);
  }
}

// 404 for a session id from a path; one no session can have says so.
HttpResponse NoSuchSession(const std::string& id) {
  if (IsValidSessionId(id)) return ErrorResponse(404, "no session " + id);
  return ErrorResponse(404, "no session \"" + id + "\": not a valid session id");
}

// The fields of POST /sessions, type-checked, the required ones present;
// what they mean (CheckSessionSpec) is checked by the registry.
Status ReadSessionSpec(const Json& body, SessionSpec* spec) {
  JsonFields fields(body);
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("session_id", &spec->id));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("instance_id", &spec->instance_id));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("backing_memory_path", &spec->backing_path));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("backing_memory_url", &spec->backing_url));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("backing_layers", &spec->backing_layers));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("cache_key", &spec->cache_key));
  if (spec->instance_id.empty()) return Status::InvalidArgument("\"instance_id\" is required");
  // Which memory, exactly one of path, URL and layers: CheckSessionSpec.
  if (spec->id.empty()) spec->id = spec->instance_id;
  if (spec->cache_key.empty()) spec->cache_key = spec->BackingName();
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("kill_client_on_failure", &spec->kill_client_on_failure));
  // (uid_t)-1 means "unchanged" to chown and is nobody's uid: not accepted.
  constexpr uint64_t kMaxId = 0xfffffffeULL;
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("socket_uid", &spec->socket_ownership.uid, kMaxId));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("socket_gid", &spec->socket_ownership.gid, kMaxId));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("expected_uid", &spec->expected_peer.uid, kMaxId));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("expected_pid", &spec->expected_peer.pid, 0x7fffffffULL));
  if (spec->expected_peer.pid && *spec->expected_peer.pid == 0) {
    return Status::InvalidArgument("\"expected_pid\" must be positive");
  }
  return Status::Ok();
}

}  // namespace

HttpResponse ControlApi::Handle(const HttpRequest& request) {
  // Split before decoding: an escaped '/' or '?' stays inside its segment.
  auto decoded = DecodePathSegments(request.path);
  if (!decoded.ok()) return ErrorResponse(400, decoded.status().message());
  const std::vector<std::string>& parts = *decoded;
  const std::string& m = request.method;
  auto method_not_allowed = [&] { return ErrorResponse(405, m + " is not allowed on " + request.path); };
  if (parts.size() == 1 && parts[0] == "health") return m == "GET" ? Health() : method_not_allowed();
  if (parts.size() == 1 && parts[0] == "stats") return m == "GET" ? Stats() : method_not_allowed();
  if (parts.size() == 1 && parts[0] == "metrics") return m == "GET" ? Metrics() : method_not_allowed();
  if (parts.size() == 1 && parts[0] == "drain") return m == "POST" ? Drain() : method_not_allowed();
  if (parts.size() == 1 && parts[0] == "sessions") {
    if (m == "GET") return ListSessions();
    if (m == "POST") return CreateSession(request.body);
    return method_not_allowed();
  }
  if (parts.size() == 2 && parts[0] == "sessions") return m == "GET" ? DescribeSession(parts[1]) : method_not_allowed();
  if (parts.size() == 3 && parts[0] == "sessions") {
    if (parts[2] == "close") return m == "POST" ? CloseSession(parts[1]) : method_not_allowed();
    if (parts[2] == "complete") return m == "POST" ? CompleteSession(parts[1]) : method_not_allowed();
  }
  return ErrorResponse(404, "no such endpoint: " + m + " " + request.path);
}

HttpResponse ControlApi::HandleMetricsOnly(const HttpRequest& request) {
  if (request.path != "/metrics") return ErrorResponse(404, "only GET /metrics is served here");
  if (request.method != "GET") return ErrorResponse(405, request.method + " is not allowed on /metrics");
  return Metrics();
}

HttpResponse ControlApi::Health() {
  Json j = {{"version", ctx_.version_key},
            {"pager_version", kVersion},
            {"draining", ctx_.draining->load()},
            {"active_sessions", ctx_.registry->CountActive()}};
  if (!ctx_.metrics_addr.empty()) j["metrics_addr"] = ctx_.metrics_addr;
  return JsonResponse(200, j);
}

HttpResponse ControlApi::Metrics() {
  MetricsPageSources sources;
  sources.registry = ctx_.metrics;
  sources.cache = ctx_.cache->Counters();
  sources.working_set_writer = ctx_.working_set_writer;
  if (ctx_.object_tier != nullptr) sources.object_tier = ctx_.object_tier->Stats();
  for (auto state : kAllSessionStates) sources.sessions_by_state[SessionStateName(state)] = 0;
  for (const auto& session : ctx_.registry->List()) ++sources.sessions_by_state[SessionStateName(session->state())];
  sources.draining = ctx_.draining->load();
  sources.uptime_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - ctx_.started_at).count();
  sources.version_key = ctx_.version_key;
  sources.pager_version = kVersion;
  return HttpResponse{200, RenderMetricsPage(sources), PrometheusWriter::kContentType};
}

HttpResponse ControlApi::Stats() {
  Json j = ctx_.metrics->pager_counters().ToJson();
  auto cache = ctx_.cache->Counters();
  j["cache_bytes"] = cache.bytes;
  j["cache_max_bytes"] = cache.max_bytes;
  j["cache_items"] = cache.items;
  j["cache_hits"] = cache.hits;
  j["cache_misses"] = cache.misses;
  j["cache_evictions"] = cache.evictions;
  j["cache_uncached_loads"] = cache.uncached_loads;
  j["cache_zero_items"] = cache.zero_items;
  if (ctx_.working_set_writer != nullptr) {
    j["working_set_disk_bytes"] = ctx_.working_set_writer->disk_bytes();
    j["working_set_disk_max_bytes"] = ctx_.working_set_writer->max_bytes();
    j["working_set_files"] = ctx_.working_set_writer->files();
    j["working_set_write_errors"] = ctx_.working_set_writer->write_errors();
    j["working_sets_published"] = ctx_.working_set_writer->published();
    j["working_set_publish_errors"] = ctx_.working_set_writer->publish_errors();
  }
  if (ctx_.object_tier != nullptr) {
    const ObjectTierStats o = ctx_.object_tier->Stats();
    for (const auto& f : kObjectTierStatFields) j[f.name] = o.*f.field;
  }
  j["copies"] = j["pages_copied"].get<uint64_t>() + j["zero_pages"].get<uint64_t>();
  j["active_sessions"] = ctx_.registry->CountActive();
  j["failed_sessions"] = ctx_.metrics->failed_sessions();
  j["refused_peers"] = ctx_.metrics->refused_peers();
  j["refused_handshakes"] = ctx_.metrics->refused_handshakes();
  j["draining"] = ctx_.draining->load();
  j["version"] = ctx_.version_key;
  j["uptime_seconds"] =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - ctx_.started_at).count();
  return JsonResponse(200, j);
}

HttpResponse ControlApi::ListSessions() {
  Json list = Json::array();
  for (const auto& s : ctx_.registry->List()) list.push_back(s->Describe());
  return JsonResponse(200, {{"sessions", list}});
}

HttpResponse ControlApi::DescribeSession(const std::string& id) {
  auto s = ctx_.registry->Find(id);
  if (!s) return NoSuchSession(id);
  return JsonResponse(200, s->Describe());
}

HttpResponse ControlApi::CreateSession(const std::string& body_text) {
  if (ctx_.draining->load()) return ErrorResponse(503, "the pager is draining and accepts no new sessions");
  Json body = Json::parse(body_text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return ErrorResponse(400, "request body is not valid JSON");
  if (!body.is_object()) return ErrorResponse(400, "request body must be a JSON object");
  SessionSpec spec;
  if (Status st = ReadSessionSpec(body, &spec); !st.ok()) return ErrorResponse(400, st.message());
  auto session = ctx_.registry->Create(spec);
  if (!session.ok()) {
    const Status& st = session.status();
    // A backing file that does not exist is a bad request, not a pager fault.
    // A refusal for lack of permission is 403: a path outside the allowed
    // backing roots, a file the pager may not read, a socket owner the pager
    // may not give (not root). Whatever the refusal, a live session of the
    // same id was not touched (SessionRegistry::Create).
    // A store that fails is a bad gateway, wherever the object is named.
    const bool objects =
        !spec.backing_url.empty() || std::any_of(spec.backing_layers.begin(), spec.backing_layers.end(),
                                                 [](const std::string& layer) { return IsObjectUrl(layer); });
    int status = !spec.backing_url.empty()           ? HttpStatusForObjectStore(st)
                 : st.code() == ErrorCode::kNotFound ? 400
                 : objects                           ? HttpStatusForObjectStore(st)
                                                     : HttpStatusFor(st);
    spdlog::warn("create session {} refused: {}", ForLog(spec.id), st.ToString());
    return ErrorResponse(status, st.ToString());
  }
  return JsonResponse(
      200, {{"session_id", spec.id}, {"uffd_socket_path", (*session)->socket_path()}, {"pager_version", kVersion}});
}

HttpResponse ControlApi::CloseSession(const std::string& id) {
  // Idempotent for any id a session can have; another one is a mistake.
  if (!IsValidSessionId(id)) return NoSuchSession(id);
  ctx_.registry->Close(id, "closed through the API");
  if (ctx_.on_drain) ctx_.on_drain();
  return NoContent();
}

HttpResponse ControlApi::CompleteSession(const std::string& id) {
  auto s = ctx_.registry->Find(id);
  if (!s) return NoSuchSession(id);
  Status st = s->Complete();
  if (!st.ok()) return ErrorResponse(HttpStatusFor(st) == 503 ? 409 : HttpStatusFor(st), st.ToString());
  if (ctx_.on_drain) ctx_.on_drain();
  return NoContent();
}

HttpResponse ControlApi::Drain() {
  if (!ctx_.draining->exchange(true)) spdlog::info("draining: new sessions refused; exiting when the last closes");
  if (ctx_.on_drain) ctx_.on_drain();
  return NoContent();
}

}  // namespace uffdpager
