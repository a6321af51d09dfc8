// PagerDaemon: one uffd-pager process. Owns its directory
// DATA/uffd/VERSION/ (control.sock, handover.sock, pager.pid, sessions/,
// live/, working-sets/), the page cache, the metrics, the sessions, the control
// API, and what lets its sessions outlive it (SessionContinuity).
//
// Thread safety: Start and the destructor run on the main thread;
// WaitUntilDone runs there too. Shutdown may be called from any thread (the
// signal thread); the control API and hand-over threads call in through
// Notify.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/http_server.h"
#include "common/mutex.h"
#include "pager/access/backing_path_policy.h"
#include "pager/access/loopback_listener.h"
#include "pager/access/socket_permissions.h"
#include "pager/continuity/recovery_store.h"
#include "pager/continuity/session_continuity.h"
#include "pager/continuity/session_handover.h"
#include "pager/daemon/control_api.h"
#include "pager/daemon/pid_file.h"
#include "pager/daemon/systemd_notifier.h"
#include "pager/metrics/metrics_registry.h"
#include "pager/serving/session_registry.h"
#include "pager/storage/object_tier.h"
#include "pager/storage/page_cache.h"
#include "pager/storage/published_working_set.h"
#include "pager/storage/working_set_store.h"
#include "pager/storage/working_set_writer.h"

namespace uffdpager {

struct PagerOptions {
  std::string data_dir = "/var/lib/uffd-pager";
  std::string version_key;  // defaults to the pager's version
  uint64_t cache_max_bytes = 4ULL << 30;
  unsigned handshake_timeout_ms = 10000;
  size_t max_request_bytes = 1 << 20;
  unsigned http_idle_timeout_seconds = 10;
  // Fault-around: a stream of faults walking forward gets its next pages
  // in the same read, up to this many (a random fault gets one page). On by
  // default: it halves a first restore's reads from cold storage when the
  // guest walks memory (docs/benchmarks.md).
  uint64_t fault_around_max_pages = 64;
  // Record and replay of working sets (on by default: it is what makes a
  // second restore fast), and the bound of their compact copies on disk
  // (0: none; replay then reads the memory file).
  bool prefetch = true;
  unsigned prefetch_record_ms = 3000;
  uint64_t working_set_disk_bytes = 8ULL << 30;
  // Bound of the object disk tier (DATA/uffd/VERSION/object-cache/); 0: none.
  uint64_t object_cache_max_bytes = 0;
  // Chunks an object fetch reads ahead (ObjectChunkStore).
  uint64_t object_readahead_chunks = 7;
  // How often a failed request to the object store (timeout, refused or
  // reset connection, 5xx) is tried again, with backoff from 50 ms doubling
  // to 2 s. A vCPU waits on its chunk meanwhile, and a session fails only
  // past the last retry: the default waits out a store that is away for up
  // to 2.5 s (5.1 s at the jitter's high end) before failing a session.
  int object_store_retries = 7;
  // A replay of a record at least this old refines it (working_set_refinement.h).
  bool refine_working_sets = true;
  // Working sets of object-backed snapshots published beside the object and
  // fetched from there by a pager that has none (published_working_set.h).
  bool published_working_sets = true;
  unsigned working_set_refine_seconds = 60;
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
  void WaitUntilDone() EXCLUDES(mu_);
  void Shutdown() EXCLUDES(mu_);

  const std::string& root_dir() const { return root_dir_; }

 private:
  explicit PagerDaemon(PagerOptions options);
  // Start, in order: the directory and the pid file; the shared services
  // and the sessions (recovered, then taken over); the servers.
  Status PrepareDirectory();
  Status PrepareSessions(const SocketOwnership& ownership);
  Status StartServers(const SocketOwnership& ownership);
  // The object tier, if the AWS environment names a store; else why not
  // (object_tier_absent_).
  void StartObjectTier();
  // Removes the socket files under sessions/ that no recovered session owns.
  void RemoveDeadSockets(const std::vector<DetachedSession>& recovered);
  // The versions --take-over / --take-over-all name.
  std::vector<std::string> VersionsToTakeOver() const;
  // The giver's side of a hand-over: runs on the hand-over server's thread.
  void GiveSessionsTo(UniqueFd conn, const std::string& taker_version);
  void Notify() EXCLUDES(mu_);
  // Tells systemd we are alive (watchdog) and how many sessions we hold.
  void ReportToSystemd();

  PagerOptions options_;
  std::string root_dir_;
  std::string sessions_dir_;
  std::unique_ptr<PidFile> pid_file_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> handing_over_{false};
  BackingPathPolicy backing_policy_;
  // Before everything that may hold a session's backing file, so that it
  // outlives them (a url-backed file fetches through it).
  std::unique_ptr<ObjectTier> object_tier_;  // null: no object store configured
  std::string object_tier_absent_;
  MetricsRegistry metrics_;
  std::unique_ptr<PageCache> cache_;
  std::unique_ptr<WorkingSetStore> working_sets_;
  std::unique_ptr<WorkingSetWriter> working_set_writer_;
  std::unique_ptr<PublishedWorkingSetFetcher> published_working_sets_;  // null: no object store, or turned off
  std::unique_ptr<RecoveryStore> recovery_;
  std::unique_ptr<SessionRegistry> registry_;
  std::unique_ptr<SessionContinuity> continuity_;
  std::unique_ptr<HandoverServer> handover_;
  std::unique_ptr<ControlApi> api_;
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<HttpServer> metrics_server_;  // --metrics-addr

  SystemdNotifier systemd_;
  size_t announced_sessions_ = SIZE_MAX;  // what STATUS= last said (main thread)

  Mutex mu_;
  CondVar changed_{&mu_};
  bool shutdown_ GUARDED_BY(mu_) = false;
};

}  // namespace uffdpager
