// ObjectChunkStore: the local disk tier of one version of one object (its URL
// and the ETag a session pinned): a sparse file of the object's size, filled
// 1 MiB chunk by chunk from the store as sessions need them, and a sidecar
// that records which chunks are present with an XXH3 of each.
//
// Files, under the pager's object cache directory, named by a hash of URL and
// ETag (two versions never share a file, so never a page):
//   PREFIX.mem     the object's bytes where fetched, holes elsewhere
//   PREFIX.chunks  a header naming the object version, then one 16-byte
//                  record (chunk index, XXH3 of the chunk) per chunk written
//
// Single flight: a chunk is fetched once however many sessions ask for it at
// once; the others wait for that fetch. Chunks recorded by an earlier pager
// process are reused after their XXH3 is checked (at first use); a mismatch
// (a torn write, a damaged disk) fetches the chunk again.
//
// Once the store says the object changed (kConflict: it no longer has the
// pinned ETag), every later EnsureRange fails with that error: no session of
// this version is ever served bytes of another.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/object_range_fetcher.h"
#include "common/object_url.h"
#include "common/thread_annotations.h"
#include "common/unique_fd.h"
#include "pager/storage/backing_file.h"
#include "uffdpager/status.h"

namespace uffdpager {

// One version of an object: what a session is bound to.
struct ObjectVersion {
  ObjectUrl url;
  std::string etag;  // as the store sent it, quotes included
  uint64_t size = 0;

  // "s3://b/k etag \"...\" size N": the identity of its bytes.
  std::string ToString() const;
};

// What the disk tier counts, pager-wide (relaxed atomics).
struct ObjectTierCounters {
  std::atomic<uint64_t> chunk_hits{0};      // chunks asked for that were on disk already
  std::atomic<uint64_t> chunk_misses{0};    // chunks fetched from the store
  std::atomic<uint64_t> chunks_reused{0};   // chunks of an earlier process whose XXH3 held
  std::atomic<uint64_t> chunks_damaged{0};  // chunks on disk whose XXH3 did not hold (refetched)
  std::atomic<uint64_t> fetch_errors{0};    // chunk fetches that failed
};

// Fetches every request, returning one Status per request in order
// (ObjectRangeFetcher::FetchAll; tests pass their own).
using ChunkFetch = std::function<std::vector<Status>(std::span<const RangeRequest>)>;

class ObjectChunkStore : public RangeFiller {
 public:
  static constexpr uint64_t kChunkBytes = 1ULL << 20;
  // Chunks fetched with a demanded one, in the same round of parallel GETs,
  // where the caller allows (its readahead_end) and they are absent: a
  // store's round trip, not its bandwidth, is what a restore waits on, so
  // fetching one chunk at a time made each vCPU's walk through memory pay
  // one round trip per MiB. (uffd-pager --object-readahead-chunks.)
  static constexpr uint64_t kDefaultReadaheadChunks = 7;
  static constexpr uint64_t kMaxReadaheadChunks = 63;

  // Opens (or creates) PREFIX.mem and PREFIX.chunks for `object`. A sidecar
  // of another object version (or a damaged one) is started afresh.
  // `grew` (may be empty) is called, with no lock held, after chunks were
  // written, with their bytes. A fetch reads up to `readahead_chunks` chunks ahead (at most
  // kMaxReadaheadChunks). REQUIRES: `counters` outlives the store.
  static Result<std::shared_ptr<ObjectChunkStore>> Open(ObjectVersion object, const std::string& prefix,
                                                        ChunkFetch fetch, ObjectTierCounters* counters,
                                                        std::function<void(uint64_t bytes)> grew = {},
                                                        uint64_t readahead_chunks = kDefaultReadaheadChunks);

  // Makes every chunk that [offset, offset+length) touches present; when it
  // has to fetch one, up to readahead_chunks absent chunks after them that
  // lie before `readahead_end` are fetched with it. A failed readahead fetch
  // leaves that chunk absent (the next call that needs it tries again),
  // except a conflict, which breaks the store as any does.
  using RangeFiller::EnsureRange;
  Status EnsureRange(uint64_t offset, uint64_t length, uint64_t readahead_end) override EXCLUDES(mu_);

  const ObjectVersion& object() const { return object_; }
  const std::string& data_path() const { return data_path_; }
  uint64_t chunk_count() const { return chunk_count_; }

 private:
  enum class ChunkState : uint8_t {
    kAbsent,
    kRecorded,  // written by an earlier process; XXH3 not yet checked
    kBusy,      // one caller is checking or fetching it; others wait
    kPresent,
  };
  struct Claim {
    uint64_t chunk = 0;
    bool recorded = false;  // was kRecorded: check before fetching
  };

  ObjectChunkStore(ObjectVersion object, std::string data_path, ChunkFetch fetch, ObjectTierCounters* counters);
  // Reads the sidecar's records (or writes a new header).
  Status LoadSidecar(const std::string& path);
  uint64_t ChunkLength(uint64_t chunk) const;
  // Whether a chunk of [first, last] is being checked or fetched.
  bool AnyBusy(uint64_t first, uint64_t last) const REQUIRES(mu_);
  // Checks or fetches the claimed chunks; one outcome per claim (OK: present
  // now).
  std::vector<Status> Fill(const std::vector<Claim>& claims) EXCLUDES(mu_);
  // Whether the chunk's bytes on disk still have `hash`.
  bool ChunkIntact(uint64_t chunk, uint64_t hash) const;
  Status WriteChunk(uint64_t chunk, const std::byte* bytes) EXCLUDES(mu_);

  const ObjectVersion object_;
  const std::string data_path_;
  const ChunkFetch fetch_;
  ObjectTierCounters* const counters_;
  std::function<void(uint64_t)> grew_;  // set at Open
  uint64_t readahead_chunks_ = 0;       // set at Open
  const uint64_t chunk_count_;
  UniqueFd data_fd_;     // read-write; written only by a chunk's claimant
  UniqueFd sidecar_fd_;  // O_APPEND

  mutable Mutex mu_;
  CondVar changed_{&mu_};  // a chunk left kBusy
  std::vector<ChunkState> state_ GUARDED_BY(mu_);
  std::vector<uint64_t> recorded_hash_ GUARDED_BY(mu_);
  Status broken_ GUARDED_BY(mu_);  // the object changed: every read fails
};

}  // namespace uffdpager
