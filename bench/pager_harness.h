// The benchmark's side of a real uffd-pager: which pager configurations
// (flavors) exist, starting a fresh pager for one, and restoring a VM through
// it exactly as Firecracker does (session, GuestMemory, UFFD handshake).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/guest_memory.h"
#include "common/vmm_handshake.h"
#include "uffdpager/pager_process.h"
#include "uffdpager/status.h"

namespace uffdpager::bench {

// One way to run the pager. A flavor whose `required_flag` is missing from
// `uffd-pager --help` is skipped with a note, so the harness runs against
// pagers that do not have every feature yet.
struct PagerFlavor {
  std::string name;                     // "pager_on_demand", ...
  std::vector<std::string> extra_args;  // appended to the pager's command line
  std::string required_flag;            // empty: always available
};

// Every flavor the restore comparisons run, in table order; with `only`
// non-empty, just those named there plus on-demand (every ratio's
// reference). Adding a pager feature to the benchmark is one line here.
std::vector<PagerFlavor> RestoreFlavors(const std::vector<std::string>& only = {});

// The on-demand flavor (no fault-around, no prefetch): the reference.
PagerFlavor OnDemandFlavor();

// What a user gets without flags (pager_default).
Result<PagerFlavor> DefaultFlavor();

// `uffd-pager --help` (bounded: the pager prints it and exits).
Result<std::string> PagerHelpText(const std::string& binary);

// Where pagers run and what they serve.
struct PagerSetup {
  std::string binary;
  // Pagers get their data dirs below this. Kept short (a directory under
  // /tmp): session socket paths must fit in sockaddr_un's 108 bytes.
  std::string data_root;
  uint64_t cache_max_bytes = 0;
};

// A guest restored through a pager session; destroying it is the VM going
// away (the session is closed by the owner first).
struct RestoredGuest {
  std::string session_id;
  GuestMemory memory;
  VmmHandshake handshake;

  const uint8_t* PageAddress(uint64_t page) const;
};

// What a launched pager finds in its data directory.
enum class PagerDataDir {
  kFresh,  // emptied first: the pager has never seen anything
  kKeep,   // as an earlier pager of the same tag left it (its recorded working sets)
};

class BenchPager {
 public:
  // Starts a fresh pager process (empty cache) of `flavor`; `tag` names its
  // data dir (below setup.data_root).
  static Result<std::unique_ptr<BenchPager>> Launch(const PagerSetup& setup, const PagerFlavor& flavor,
                                                    const std::string& tag, PagerDataDir data = PagerDataDir::kFresh);

  const PagerClient& client() const { return process_->client(); }
  pid_t pid() const { return process_->pid(); }
  const std::string& data_dir() const { return data_dir_; }

  // POST /sessions for `snapshot` (a path, or an "s3://" object) under a
  // fixed cache key (so every restore of the snapshot shares the pager's
  // cache); with `layers`, for that chain instead (base first), whose bytes
  // are the snapshot's.
  Result<std::string> CreateSession(const std::string& session_id, const std::string& snapshot,
                                    const std::vector<std::string>& layers = {}) const;

  // What a VMM does on PUT /snapshot/load with the Uffd backend: lay out
  // `bytes` of guest memory in two regions (as Firecracker does once memory
  // crosses the MMIO gap) and hand them to the session's socket.
  static Result<std::unique_ptr<RestoredGuest>> HandOver(const std::string& session_id, const std::string& socket_path,
                                                         uint64_t bytes);

  // Polls GET /sessions/{id} until its state is `state`, for at most `timeout`.
  Status WaitForState(const std::string& session_id, const std::string& state, std::chrono::milliseconds timeout) const;

  // The session's own counters (faults, pages copied, ...), or {} if gone.
  nlohmann::json SessionCounters(const std::string& session_id) const;

 private:
  BenchPager(std::unique_ptr<PagerProcess> process, std::string data_dir);
  std::unique_ptr<PagerProcess> process_;
  std::string data_dir_;

 public:
  ~BenchPager();  // stops the pager (SIGTERM, then SIGKILL)
};

// Bounds a step that cannot be interrupted (threads blocked in a page fault
// cannot be cancelled): if not disarmed within `limit`, prints what hung and
// exits the whole benchmark with status 3 rather than hang forever (killing
// the pagers it started first, so none outlives it, and putting back a
// device readahead the cold section changed).
class Deadline {
 public:
  Deadline(std::string what, std::chrono::seconds limit);
  ~Deadline();  // disarms

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace uffdpager::bench
