#include "pager/storage/object_tier.h"

#include <filesystem>
#include <system_error>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <xxhash.h>

namespace uffdpager {

namespace {

// The chunk files' name: a hash of URL and ETag, so a name never mixes
// versions and needs no escaping.
std::string FilePrefix(const std::string& dir, const ObjectVersion& object) {
  const std::string key = object.url.ToString() + '\n' + object.etag;
  const XXH128_hash_t h = XXH3_128bits(key.data(), key.size());
  return fmt::format("{}/{:016x}{:016x}", dir, h.high64, h.low64);
}

}  // namespace

Result<std::unique_ptr<ObjectTier>> ObjectTier::Start(std::string cache_dir, ObjectStoreConfig config) {
  std::error_code ec;
  std::filesystem::create_directories(cache_dir, ec);
  if (ec) return Status::Error(ErrorCode::kIoError, "create " + cache_dir + ": " + ec.message());
  auto fetcher = ObjectRangeFetcher::Start(config, {.max_in_flight = kMaxInFlight});
  if (!fetcher.ok()) return fetcher.status().WithContext("the object store's fetcher");
  return std::unique_ptr<ObjectTier>(new ObjectTier(std::move(cache_dir), std::move(config), std::move(*fetcher)));
}

ObjectTier::ObjectTier(std::string cache_dir, ObjectStoreConfig config, std::unique_ptr<ObjectRangeFetcher> fetcher)
    : cache_dir_(std::move(cache_dir)), client_(std::move(config)), fetcher_(std::move(fetcher)) {}

ObjectTier::~ObjectTier() = default;

Result<ObjectTier::Opened> ObjectTier::Open(const ObjectUrl& url, const std::string& pinned_etag) {
  auto info = client_.Head(url);
  if (!info.ok()) {
    head_errors_.fetch_add(1, std::memory_order_relaxed);
    return info.status();
  }
  if (!pinned_etag.empty() && info->etag != pinned_etag) {
    return Status::Conflict(fmt::format("{} changed in the store: it has ETag {} now, the session is bound to {}",
                                        url.ToString(), info->etag, pinned_etag));
  }
  if (info->size == 0) return Status::InvalidArgument(url.ToString() + " is empty: no memory to serve");
  ObjectVersion object{url, info->etag, info->size};
  auto store = StoreFor(object);
  if (!store.ok()) return store.status();
  auto file = BackingFile::OpenFilled((*store)->data_path(), url.ToString(), object.ToString(), *store);
  if (!file.ok()) return file.status();
  return Opened{std::move(*file), info->etag};
}

Result<std::shared_ptr<ObjectChunkStore>> ObjectTier::StoreFor(const ObjectVersion& object) {
  const std::string key = object.ToString();
  MutexLock lock(&mu_);
  if (auto it = stores_.find(key); it != stores_.end()) return it->second;
  ObjectRangeFetcher* fetcher = fetcher_.get();
  auto store = ObjectChunkStore::Open(
      object, FilePrefix(cache_dir_, object),
      [fetcher](std::span<const RangeRequest> requests) { return fetcher->FetchAll(requests); }, &counters_);
  if (!store.ok()) return store.status();
  stores_.emplace(key, *store);
  return store;
}

ObjectTierStats ObjectTier::Stats() const {
  const auto fetched = fetcher_->counters();
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  ObjectTierStats s;
  s.requests = fetched.attempts + client_.attempts();
  s.bytes = fetched.bytes;
  s.retries = fetched.retries + client_.retries();
  s.errors = get(head_errors_) + get(counters_.fetch_errors);
  s.chunk_hits = get(counters_.chunk_hits);
  s.chunk_misses = get(counters_.chunk_misses);
  s.chunks_reused = get(counters_.chunks_reused);
  s.chunks_damaged = get(counters_.chunks_damaged);
  return s;
}

}  // namespace uffdpager
