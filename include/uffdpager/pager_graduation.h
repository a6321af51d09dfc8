// PagerGraduation: moves long-lived VMs off their pagers, at a pace.
//
// A VM restored through a pager depends on it until every page is in. With
// layered snapshots every restore goes through a pager, so VMs that live
// long must leave it: graduating a session is POST /sessions/{id}/complete
// (every missing page installed, the regions unregistered), after which the
// VM runs on its own memory and its pager may go. A pass looks at the
// serving sessions of every pager version under DATA/uffd/ and completes
// those older than the soak age, sessions of outdated versions first (so old
// versions drain to zero), then the oldest, at most `max_concurrent` at once
// (each completion reads the rest of its VM's memory). A completion that
// fails leaves its VM served by its pager as before (the session goes back to
// `serving`), and the session is skipped until `retry_backoff` has passed.
//
//   PagerGraduation graduation({.data_dir = "/var/lib/uffd-pager", .version_key = "v2"});
//   auto report = graduation.RunPass();   // call again every few seconds
//
// Not thread-safe: one caller runs the passes; it keeps the failures it saw
// between them (the backoff).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "uffdpager/pager_service.h"
#include "uffdpager/status.h"

namespace uffdpager {

struct GraduationOptions {
  std::string data_dir = "/var/lib/uffd-pager";
  // The current version: every other version's sessions go first.
  std::string version_key;
  // Sessions younger than this stay on their pager (most short-lived VMs
  // end before it).
  std::chrono::seconds soak_age{600};
  unsigned max_concurrent = 2;  // completions in flight at once, at least 1
  std::chrono::seconds retry_backoff{60};
  // At most this many graduations started by one pass (0: no bound).
  size_t max_per_pass = 0;
  // Bounds one completion (POST /sessions/{id}/complete blocks until done).
  std::chrono::milliseconds complete_timeout = std::chrono::minutes(10);
};

// One session a pass looked at.
struct GraduationCandidate {
  std::string version_key;
  std::string session_id;
  int64_t created_at_unix = 0;
  bool outdated = false;  // its pager is not the current version
};

// The candidates to graduate now, in order: those at least `soak_age` old
// at `now_unix`, outdated versions first, then the oldest, then by version
// key and id (a stable order).
std::vector<GraduationCandidate> GraduationOrder(std::vector<GraduationCandidate> candidates, int64_t now_unix,
                                                 std::chrono::seconds soak_age);

struct GraduationReport {
  // "VERSION/ID" of each session, in the order they were started.
  std::vector<std::string> graduated;
  std::vector<std::string> failed;  // "VERSION/ID: why"
  size_t soaking = 0;               // serving, younger than the soak age
  size_t backing_off = 0;           // failed before, within its backoff
  size_t deferred = 0;              // ready, beyond max_per_pass
  // Serving sessions still on a pager after the pass, per version key.
  std::map<std::string, size_t> still_served;
};

class PagerGraduation {
 public:
  // Checks the options (a version key, max_concurrent at least 1).
  static Result<PagerGraduation> Create(GraduationOptions options);

  // One pass (above). Errors only when no pager could be asked at all (the
  // data dir cannot be listed); a pager that does not answer its session
  // list is a failure in the report, and the others are still served.
  Result<GraduationReport> RunPass();

 private:
  PagerGraduation(GraduationOptions options, PagerService service)
      : options_(std::move(options)), service_(std::move(service)) {}

  GraduationOptions options_;
  PagerService service_;  // finds the running versions
  // "VERSION/ID" -> when its last completion failed.
  std::map<std::string, std::chrono::steady_clock::time_point> failed_at_;
};

}  // namespace uffdpager
