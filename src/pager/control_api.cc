#include "pager/control_api.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "pager/pager_version.h"

namespace uffdpager {

using Json = nlohmann::json;

namespace {

HttpResponse JsonResponse(int status, const Json& body) { return HttpResponse{status, body.dump(), "application/json"}; }
HttpResponse ErrorResponse(int status, const std::string& message) { return JsonResponse(status, {{"error", message}}); }
HttpResponse NoContent() { return HttpResponse{204, "", ""}; }

int HttpStatusFor(const Status& st) {
  switch (st.code()) {
    case ErrorCode::kInvalidArgument: return 400;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kConflict: return 409;
    case ErrorCode::kUnavailable: return 503;
    default: return 500;
  }
}

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    if (j > i) parts.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

// Reads an optional string field; false (with *error set) if present but not a string.
bool OptionalString(const Json& body, const char* field, std::string* out, std::string* error) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return true;
  if (!it->is_string()) {
    *error = std::string("\"") + field + "\" must be a string";
    return false;
  }
  *out = it->get<std::string>();
  return true;
}

}  // namespace

HttpResponse ControlApi::Handle(const HttpRequest& request) {
  auto parts = SplitPath(request.path);
  const std::string& m = request.method;
  auto method_not_allowed = [&] { return ErrorResponse(405, m + " is not allowed on " + request.path); };
  if (parts.size() == 1 && parts[0] == "health") return m == "GET" ? Health() : method_not_allowed();
  if (parts.size() == 1 && parts[0] == "stats") return m == "GET" ? Stats() : method_not_allowed();
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

HttpResponse ControlApi::Health() {
  return JsonResponse(200, {{"version", ctx_.version_key},
                            {"pager_version", kPagerVersion},
                            {"draining", ctx_.draining->load()},
                            {"active_sessions", ctx_.registry->CountActive()}});
}

HttpResponse ControlApi::Stats() {
  Json j = ctx_.counters->ToJson();
  auto cache = ctx_.cache->Counters();
  j["cache_bytes"] = cache.bytes;
  j["cache_max_bytes"] = cache.max_bytes;
  j["cache_items"] = cache.items;
  j["cache_hits"] = cache.hits;
  j["cache_misses"] = cache.misses;
  j["cache_evictions"] = cache.evictions;
  j["cache_uncached_loads"] = cache.uncached_loads;
  j["cache_zero_items"] = cache.zero_items;
  j["copies"] = j["pages_copied"].get<uint64_t>() + j["zero_pages"].get<uint64_t>();
  j["active_sessions"] = ctx_.registry->CountActive();
  j["failed_sessions"] = ctx_.failed_sessions->load();
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
  if (!s) return ErrorResponse(404, "no session " + id);
  return JsonResponse(200, s->Describe());
}

HttpResponse ControlApi::CreateSession(const std::string& body_text) {
  if (ctx_.draining->load()) return ErrorResponse(503, "the pager is draining and accepts no new sessions");
  Json body = Json::parse(body_text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return ErrorResponse(400, "request body is not valid JSON");
  if (!body.is_object()) return ErrorResponse(400, "request body must be a JSON object");
  SessionSpec spec;
  std::string error;
  if (!OptionalString(body, "session_id", &spec.id, &error) ||
      !OptionalString(body, "instance_id", &spec.instance_id, &error) ||
      !OptionalString(body, "backing_memory_path", &spec.backing_path, &error) ||
      !OptionalString(body, "cache_key", &spec.cache_key, &error)) {
    return ErrorResponse(400, error);
  }
  if (spec.instance_id.empty()) return ErrorResponse(400, "\"instance_id\" is required");
  if (spec.backing_path.empty()) return ErrorResponse(400, "\"backing_memory_path\" is required");
  if (spec.backing_path[0] != '/') return ErrorResponse(400, "\"backing_memory_path\" must be an absolute path");
  if (spec.id.empty()) spec.id = spec.instance_id;
  if (spec.cache_key.empty()) spec.cache_key = spec.backing_path;
  if (auto it = body.find("kill_client_on_failure"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) return ErrorResponse(400, "\"kill_client_on_failure\" must be a boolean");
    spec.kill_client_on_failure = it->get<bool>();
  }
  auto session = ctx_.registry->Create(spec);
  if (!session.ok()) {
    const Status& st = session.status();
    // A backing file that cannot be opened is a bad request, not a pager fault.
    int status = st.code() == ErrorCode::kNotFound ? 400 : HttpStatusFor(st);
    spdlog::warn("create session {} refused: {}", spec.id, st.ToString());
    return ErrorResponse(status, st.ToString());
  }
  return JsonResponse(200, {{"session_id", spec.id},
                            {"uffd_socket_path", (*session)->socket_path()},
                            {"pager_version", kPagerVersion}});
}

HttpResponse ControlApi::CloseSession(const std::string& id) {
  ctx_.registry->Close(id, "closed through the API");
  if (ctx_.on_drain) ctx_.on_drain();
  return NoContent();
}

HttpResponse ControlApi::CompleteSession(const std::string& id) {
  auto s = ctx_.registry->Find(id);
  if (!s) return ErrorResponse(404, "no session " + id);
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
