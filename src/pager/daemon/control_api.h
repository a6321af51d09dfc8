// ControlApi: the pager's HTTP/JSON control API (contract in docs/control-api.md):
//   GET  /health                    {"version","draining","active_sessions"}
//   GET  /stats                     cache and fault counters
//   GET  /sessions                  every session with its counters
//   GET  /sessions/{id}             one session
//   POST /sessions                  create (or replace) a session
//   POST /sessions/{id}/close       204, idempotent
//   POST /sessions/{id}/complete    204 once every page is in and unregistered
//   POST /drain                     refuse new sessions, exit when the last closes
//   GET  /metrics                   Prometheus text (also on --metrics-addr)
// Errors answer {"error": "..."} with a status that says what went wrong.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

#include "common/http_message.h"
#include "pager/metrics/fault_counters.h"
#include "pager/metrics/metrics_registry.h"
#include "pager/storage/page_cache.h"
#include "pager/daemon/session_registry.h"

namespace uffdpager {

struct ControlApiContext {
  SessionRegistry* registry = nullptr;
  PageCache* cache = nullptr;
  FaultCounters* counters = nullptr;
  std::atomic<uint64_t>* failed_sessions = nullptr;
  std::atomic<uint64_t>* refused_peers = nullptr;
  std::atomic<bool>* draining = nullptr;
  std::function<void()> on_drain;  // wakes the daemon to check for exit
  const MetricsRegistry* metrics = nullptr;
  std::string metrics_addr;  // where /metrics is also served over TCP, if anywhere
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
