// ObjectRangeFetcher: many ranged GETs of S3 objects in flight at once,
// over kept-alive connections (one libcurl multi handle driven by a thread
// of the fetcher's own).
//
// Made for a page fetcher that keeps one fetch in flight per chunk: the
// caller decides what to fetch and owns the buffers; the fetcher runs each
// request, retries it within the configuration's RetryPolicy (timeouts,
// broken or refused connections, 5xx; never another 4xx), and reports its
// outcome exactly once. It does not merge or deduplicate requests: two
// Submits of one range are two GETs.
//
// Contract:
//   - Submit never blocks on the network. Up to `max_in_flight` requests are
//     on the wire at once; more wait in a FIFO queue (unbounded: the caller
//     bounds what it submits, e.g. by its chunk table).
//   - Each request's callback runs exactly once, on the fetcher's thread,
//     with OK (buffer filled, byte-exact) or an error classified as
//     object_exchange.h describes (kConflict: the object no longer has the
//     ETag the request pinned). A retried request's bytes are written again
//     from the start; the buffer's content is undefined unless OK.
//   - Callbacks must be short and must not block on other fetches (they hold
//     up every transfer); they may call Submit.
//   - The destructor stops the thread; requests not finished by then get
//     their callback with kUnavailable ("fetcher stopped") before it returns.
//     REQUIRES: not called from a callback.
//
// Thread-safety: Submit and FetchAll are safe from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/object_store_config.h"
#include "common/object_url.h"
#include "common/thread_annotations.h"
#include "uffdpager/status.h"

namespace uffdpager {

struct RangeRequest {
  ObjectUrl object;
  uint64_t offset = 0;
  size_t length = 0;            // > 0
  std::string if_match;         // the ETag from Head; empty: whatever the object is now
  std::byte* buffer = nullptr;  // `length` bytes, the caller's until the callback ran
};

using RangeCallback = std::function<void(const Status&)>;

class ObjectRangeFetcher {
 public:
  struct Options {
    int max_in_flight = 16;
    // Called on the fetcher's thread with how long each request that
    // succeeded spent on the wire (its last attempt): for a histogram.
    // Must be short, as callbacks are.
    std::function<void(std::chrono::nanoseconds)> on_success_latency;
  };

  // Starts the fetcher's thread. kInternal if libcurl cannot make a multi
  // handle; kInvalidArgument for max_in_flight < 1.
  static Result<std::unique_ptr<ObjectRangeFetcher>> Start(ObjectStoreConfig config, Options options);
  ~ObjectRangeFetcher();
  ObjectRangeFetcher(const ObjectRangeFetcher&) = delete;
  ObjectRangeFetcher& operator=(const ObjectRangeFetcher&) = delete;

  // Queues `request`; `done` gets its outcome (contract above).
  void Submit(RangeRequest request, RangeCallback done);

  // Submits every request and waits for all of them; one Status per
  // request, in order. REQUIRES: not called from a callback.
  std::vector<Status> FetchAll(std::span<const RangeRequest> requests);

  const ObjectStoreConfig& config() const { return config_; }

  // Over the fetcher's life: attempts started, retries among them, bytes
  // received by requests that succeeded.
  struct Counters {
    uint64_t attempts = 0;
    uint64_t retries = 0;
    uint64_t bytes = 0;
  };
  Counters counters() const;

 private:
  struct Job;
  class Loop;

  ObjectRangeFetcher(ObjectStoreConfig config, Options options);

  void Run();

  const ObjectStoreConfig config_;
  const Options options_;
  std::unique_ptr<Loop> loop_;  // the multi handle and the jobs on it: the fetcher's thread only

  Mutex mu_;
  std::deque<std::unique_ptr<Job>> submitted_ GUARDED_BY(mu_);
  bool stopping_ GUARDED_BY(mu_) = false;

  std::atomic<uint64_t> attempts_{0};
  std::atomic<uint64_t> retries_{0};
  std::atomic<uint64_t> bytes_{0};
  std::thread thread_;
};

}  // namespace uffdpager
