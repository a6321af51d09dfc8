// ControlApi: the pager's HTTP/JSON control API (contract in docs/control-api.md):
//   GET  /health                    {"version","pager_version","draining","active_sessions"[,"metrics_addr"]}
//   GET  /stats                     cache and fault counters
//   GET  /sessions                  every session with its counters
//   GET  /sessions/{id}             one session
//   POST /sessions                  create (or replace) a session
//   POST /sessions/{id}/close       204, idempotent
//   POST /sessions/{id}/complete    204 once every page is in and unregistered
//   POST /drain                     refuse new sessions, exit once no session holds a VM
//   GET  /metrics                   Prometheus text (also on --metrics-addr)
// Errors answer {"error": "..."} with a status that says what went wrong.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

#include "common/http_message.h"
#include "pager/metrics/metrics_registry.h"
#include "pager/serving/session_registry.h"
#include "pager/storage/object_tier.h"
#include "pager/storage/page_cache.h"
#include "pager/storage/working_set_writer.h"

namespace uffdpager {

// What the API answers from; every pointer is required and outlives the API.
struct ControlApiContext {
  SessionRegistry* registry = nullptr;
  const PageCache* cache = nullptr;
  const MetricsRegistry* metrics = nullptr;
  const WorkingSetWriter* working_set_writer = nullptr;  // may be null
  const ObjectTier* object_tier = nullptr;               // may be null
  std::atomic<bool>* draining = nullptr;
  std::function<void()> on_drain;  // wakes the daemon to check for exit
  std::string metrics_addr;        // where /metrics is also served over TCP, if anywhere
  std::string version_key;
  std::chrono::steady_clock::time_point started_at;
};

class ControlApi {
 public:
  explicit ControlApi(ControlApiContext context) : ctx_(std::move(context)) {}
  HttpResponse Handle(const HttpRequest& request);
  // The only route served on --metrics-addr: GET /metrics; everything else
  // is 404 there, so the TCP port never exposes the control API.
  HttpResponse HandleMetricsOnly(const HttpRequest& request);

 private:
  HttpResponse Health();
  HttpResponse Stats();
  HttpResponse Metrics();
  HttpResponse ListSessions();
  HttpResponse CreateSession(const std::string& body);
  HttpResponse DescribeSession(const std::string& id);
  HttpResponse CloseSession(const std::string& id);
  HttpResponse CompleteSession(const std::string& id);
  HttpResponse Drain();

  ControlApiContext ctx_;
};

}  // namespace uffdpager
