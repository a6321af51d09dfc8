// ObjectStoreClient: synchronous requests to an S3-compatible store, each
// retried within the configuration's RetryPolicy. Errors are Status values
// classified as object_exchange.h describes (not found, access denied,
// unreachable, object changed, store error), with the store's own <Code>
// and <Message>; no message ever holds a credential.
//
// For many ranged GETs at once, use ObjectRangeFetcher
// (object_range_fetcher.h); this class is for the single requests around
// them (HEAD before a session, PUT when publishing).
//
// Thread-safety: safe to use from many threads at once. Idle curl handles
// (and with them their kept-alive connections) are pooled between calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "common/object_exchange.h"
#include "common/object_store_config.h"
#include "common/object_url.h"
#include "common/thread_annotations.h"
#include "uffdpager/status.h"

namespace uffdpager {

// The largest object Put sends: S3's limit for a single PUT (5 GiB);
// larger objects would need a multipart upload, which this client lacks.
inline constexpr uint64_t kMaxSinglePutBytes = 5ull << 30;

class ObjectStoreClient {
 public:
  explicit ObjectStoreClient(ObjectStoreConfig config);
  ~ObjectStoreClient();
  ObjectStoreClient(const ObjectStoreClient&) = delete;
  ObjectStoreClient& operator=(const ObjectStoreClient&) = delete;

  const ObjectStoreConfig& config() const { return config_; }

  // The object's size, ETag and version id. A 404 names the bucket when it
  // is the bucket that is missing (HEAD answers carry no body, so the
  // bucket is asked about separately).
  Result<ObjectInfo> Head(const ObjectUrl& object);

  // Reads exactly `length` (> 0) bytes at `offset` into `buffer`; with a
  // non-empty `if_match_etag` only while the object still has that ETag
  // (kConflict once it changed). kProtocol if the object ends before
  // offset + length. REQUIRES: buffer holds `length` bytes.
  Status GetRange(const ObjectUrl& object, uint64_t offset, size_t length, std::string_view if_match_etag,
                  std::byte* buffer);

  // Stores `bytes` (or the first `size` bytes of `fd`, read with pread from
  // offset 0, so the fd's position is untouched) as the object, replacing
  // any object of that name. At most kMaxSinglePutBytes.
  Result<ObjectInfo> Put(const ObjectUrl& object, std::string_view bytes);
  Result<ObjectInfo> Put(const ObjectUrl& object, int fd, uint64_t size);

  Status Delete(const ObjectUrl& object);
  // Creates the bucket; OK if this user owns it already.
  Status CreateBucket(std::string_view bucket);

  // Attempts made and retries among them, over the client's life.
  uint64_t attempts() const { return attempts_.load(std::memory_order_relaxed); }
  uint64_t retries() const { return retries_.load(std::memory_order_relaxed); }

 private:
  // Runs `request` with retries; the store's info on success.
  Result<ObjectInfo> Execute(const ObjectRequest& request);
  std::unique_ptr<ObjectExchange> TakeExchange();
  void ReturnExchange(std::unique_ptr<ObjectExchange> exchange);

  const ObjectStoreConfig config_;
  std::atomic<uint64_t> attempts_{0};
  std::atomic<uint64_t> retries_{0};
  Mutex mu_;
  std::vector<std::unique_ptr<ObjectExchange>> idle_ GUARDED_BY(mu_);
};

}  // namespace uffdpager
