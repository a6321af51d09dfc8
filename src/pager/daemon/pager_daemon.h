// PagerDaemon: one uffd-pager process. Owns its directory
// DATA/uffd/VERSION/ (control.sock, pager.pid, sessions/<id>.sock), the page
// cache, the sessions and the control API.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/http_server.h"
#include "pager/access/backing_path_policy.h"
#include "pager/daemon/control_api.h"
#include "pager/daemon/pid_file.h"
#include "pager/metrics/fault_counters.h"
#include "pager/storage/page_cache.h"
#include "pager/continuity/recovery_store.h"
#include "pager/continuity/session_handover.h"
#include "pager/daemon/session_registry.h"
#include "pager/daemon/systemd_notifier.h"
#include "pager/storage/working_set_store.h"

namespace uffdpager {

struct PagerOptions {
  std::string data_dir = "/var/lib/uffd-pager";
  std::string version_key;  // defaults to the pager's version
  uint64_t cache_max_bytes = 4ULL << 30;
  unsigned handshake_timeout_ms = 10000;
  size_t max_request_bytes = 1 << 20;
  unsigned http_idle_timeout_seconds = 10;
  uint64_t fault_around_max_pages = 0;
  bool prefetch = false;
  unsigned prefetch_record_ms = 3000;
  ZeroPageMode zero_pages = ZeroPageMode::kDetect;
  // Security: who may connect to the sockets (user/group names or ids; empty:
  // only the pager's user), and where backing files may live (empty: anywhere).
  std::string socket_owner;
  std::string socket_group;
  std::vector<std::string> allowed_backing_roots;
  // Also serve GET /metrics on this loopback HOST:PORT (empty: only on control.sock).
  std::string metrics_addr;
  // Upgrade: at start, take the live sessions of these versions' pagers
  // (or of every other version's), which then exit.
  std::vector<std::string> take_over_versions;
  bool take_over_all = false;
};

class PagerDaemon {
 public:
  static Result<std::unique_ptr<PagerDaemon>> Start(PagerOptions options);
  ~PagerDaemon();  // closes every session, removes control.sock and pager.pid

  // Blocks until the pager drained and no session holds a VM, or Shutdown().
  void WaitUntilDone();
  void Shutdown();

  const std::string& root_dir() const { return root_dir_; }

 private:
  explicit PagerDaemon(PagerOptions options);
  Status Prepare();
  void Notify();
  // Serves again the sessions a crashed predecessor left (records and fd store).
  void RecoverSessions(std::vector<RecoveredSession> recovered);
  // Takes the sessions of the pagers named by --take-over / --take-over-all.
  void TakeOverOlderPagers();
  // The giver's side of a hand-over: runs on the hand-over server's thread.
  void GiveSessionsTo(UniqueFd conn, const std::string& taker_version);
  // Tells systemd we are alive (watchdog) and how many sessions we hold.
  void ReportToSystemd();

  PagerOptions options_;
  std::string root_dir_;
  std::unique_ptr<PidFile> pid_file_;
  FaultCounters counters_;
  std::atomic<uint64_t> failed_sessions_{0};
  std::atomic<uint64_t> refused_peers_{0};
  std::atomic<bool> draining_{false};
  BackingPathPolicy backing_policy_;
  std::unique_ptr<PageCache> cache_;
  std::unique_ptr<WorkingSetStore> working_sets_;
  std::unique_ptr<RecoveryStore> recovery_;
  std::unique_ptr<SessionRegistry> registry_;
  std::unique_ptr<HandoverServer> handover_;
  std::atomic<bool> handing_over_{false};
  std::unique_ptr<ControlApi> api_;
  MetricsRegistry metrics_;
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<HttpServer> metrics_server_;  // --metrics-addr

  SystemdNotifier systemd_;
  size_t announced_sessions_ = SIZE_MAX;  // what STATUS= last said

  std::mutex mu_;
  std::condition_variable changed_;
  bool shutdown_ = false;
};

}  // namespace uffdpager
