#include "pager/storage/object_tier.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <system_error>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <xxhash.h>

#include "common/memory_mapping.h"

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

Result<std::unique_ptr<ObjectTier>> ObjectTier::Start(std::string cache_dir, ObjectStoreConfig config,
                                                      uint64_t max_bytes, uint64_t readahead_chunks) {
  std::error_code ec;
  std::filesystem::create_directories(cache_dir, ec);
  if (ec) return Status::Error(ErrorCode::kIoError, "create " + cache_dir + ": " + ec.message());
  std::unique_ptr<ObjectTier> tier(
      new ObjectTier(std::move(cache_dir), std::move(config), max_bytes, readahead_chunks));
  UFFD_RETURN_IF_ERROR(tier->StartFetchers());
  tier->Trim();  // what earlier processes left, to the bound of this one
  return tier;
}

ObjectTier::ObjectTier(std::string cache_dir, ObjectStoreConfig config, uint64_t max_bytes, uint64_t readahead_chunks)
    : cache_dir_(std::move(cache_dir)),
      max_bytes_(max_bytes),
      readahead_chunks_(readahead_chunks),
      client_(std::move(config)) {}

Status ObjectTier::StartFetchers() {
  auto observe = [this](std::chrono::nanoseconds took) { fetch_latency_.Observe(static_cast<uint64_t>(took.count())); };
  auto fetcher = ObjectRangeFetcher::Start(client_.config(), {kMaxInFlight, observe});
  if (!fetcher.ok()) return fetcher.status().WithContext("the object store's fetcher");
  auto download_fetcher = ObjectRangeFetcher::Start(client_.config(), {kMaxDownloadsInFlight, observe});
  if (!download_fetcher.ok()) return download_fetcher.status().WithContext("the object store's download fetcher");
  fetcher_ = std::move(*fetcher);
  download_fetcher_ = std::move(*download_fetcher);
  return Status::Ok();
}

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
  auto page_map = ReadPageMap(url, *info);
  if (!page_map.ok()) return page_map.status();
  ObjectVersion object{url, info->etag, info->size};
  auto store = StoreFor(object);
  if (!store.ok()) return store.status();
  // The map decides which bytes are served (its holes are zeros), so two
  // maps of one version are two different memories to the cache.
  std::string identity = object.ToString();
  std::optional<DataExtents> extents;
  if (*page_map) {
    identity += " page map " + (*page_map)->etag;
    extents = std::move((*page_map)->map.extents);
  }
  auto file =
      BackingFile::OpenFilled((*store)->data_path(), url.ToString(), std::move(identity), *store, std::move(extents));
  if (!file.ok()) return file.status();
  return Opened{std::move(*file), info->etag};
}

Result<std::optional<ObjectTier::PageMapVersion>> ObjectTier::ReadPageMap(const ObjectUrl& layer,
                                                                          const ObjectInfo& layer_info) {
  const ObjectUrl location = LayerPageMap::LocationOf(layer);
  auto info = client_.Head(location);
  if (!info.ok()) {
    if (info.status().code() == ErrorCode::kNotFound) return std::optional<PageMapVersion>();  // none: all data
    head_errors_.fetch_add(1, std::memory_order_relaxed);
    return info.status();
  }
  auto refused = [&](const std::string& why) {
    return Status::InvalidArgument(fmt::format("page map {} of {}: {}", location.ToString(), layer.ToString(), why));
  };
  if (info->size == 0 || info->size > LayerPageMap::kMaxEncodedBytes) {
    return refused(
        fmt::format("it is {} bytes; a page map is 1 to {} bytes", info->size, LayerPageMap::kMaxEncodedBytes));
  }
  std::string text(info->size, '\0');
  UFFD_RETURN_IF_ERROR(
      client_.GetRange(location, 0, text.size(), info->etag, reinterpret_cast<std::byte*>(text.data())));
  auto map = LayerPageMap::Parse(text);
  if (!map.ok()) return refused(map.status().message());
  if (map->layer_etag != layer_info.etag || map->layer_size != layer_info.size) {
    return refused(fmt::format(
        "it describes the version with ETag {} and {} bytes; the object has ETag {} and {} bytes (write the page map "
        "again after uploading the layer)",
        map->layer_etag, map->layer_size, layer_info.etag, layer_info.size));
  }
  return std::optional<PageMapVersion>(PageMapVersion{std::move(*map), info->etag});
}

Result<std::shared_ptr<ObjectChunkStore>> ObjectTier::StoreFor(const ObjectVersion& object) {
  const std::string key = object.ToString();
  MutexLock lock(&mu_);
  if (auto it = stores_.find(key); it != stores_.end()) return it->second;
  ObjectRangeFetcher* fetcher = fetcher_.get();
  auto store = ObjectChunkStore::Open(
      object, FilePrefix(cache_dir_, object),
      [fetcher](std::span<const RangeRequest> requests) { return fetcher->FetchAll(requests); }, &counters_,
      [this](uint64_t bytes) { Grew(bytes); }, readahead_chunks_);
  if (!store.ok()) return store.status();
  stores_.emplace(key, *store);
  return store;
}

void ObjectTier::Grew(uint64_t bytes) {
  if (max_bytes_ == 0) return;
  // A scan of the directory only once the bytes written since the last one
  // could have taken it over the bound, not after every fetch.
  const uint64_t since = bytes_since_trim_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  if (trimmed_bytes_.load(std::memory_order_relaxed) + since <= max_bytes_) return;
  Trim();
}

void ObjectTier::Trim() {
  if (max_bytes_ == 0) return;
  namespace fs = std::filesystem;
  struct Version {
    std::string prefix;  // without ".mem"
    uint64_t bytes = 0;  // allocated on disk (the file is sparse)
    int64_t written_ns = 0;
    bool in_use = false;
  };
  MutexLock lock(&mu_);
  // Writes from here on are counted again (the scan may see some of them:
  // counted twice, they only bring the next scan forward).
  bytes_since_trim_.store(0, std::memory_order_relaxed);
  std::map<std::string, std::string> open_keys;  // data path -> stores_ key
  std::set<std::string> in_use;
  for (const auto& [key, store] : stores_) {
    open_keys[store->data_path()] = key;
    if (store.use_count() > 1) in_use.insert(store->data_path());  // a session (or its writer) holds it
  }
  std::vector<Version> versions;
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(cache_dir_, ec)) {
    const std::string path = entry.path().string();
    if (entry.path().extension() != ".mem") continue;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) continue;
    Version v{path.substr(0, path.size() - 4), static_cast<uint64_t>(st.st_blocks) * 512,
              static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec, in_use.count(path) != 0};
    total += v.bytes;
    versions.push_back(std::move(v));
  }
  trimmed_bytes_.store(total, std::memory_order_relaxed);
  if (total <= max_bytes_) return;
  std::sort(versions.begin(), versions.end(),
            [](const Version& a, const Version& b) { return a.written_ns < b.written_ns; });
  for (const Version& v : versions) {
    if (total <= max_bytes_) break;
    if (v.in_use) continue;
    // Under mu_: no session can take this version while it goes.
    if (auto it = open_keys.find(v.prefix + ".mem"); it != open_keys.end()) stores_.erase(it->second);
    fs::remove(v.prefix + ".mem", ec);
    fs::remove(v.prefix + ".chunks", ec);
    total -= v.bytes;
    evictions_.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("object cache: removed {} ({} bytes) to stay within {} bytes", v.prefix, v.bytes, max_bytes_);
  }
  trimmed_bytes_.store(total, std::memory_order_relaxed);
}

Result<ObjectInfo> ObjectTier::Download(const ObjectUrl& url, uint64_t max_bytes, int fd) {
  auto info = client_.Head(url);
  if (!info.ok()) {
    if (info.status().code() != ErrorCode::kNotFound) head_errors_.fetch_add(1, std::memory_order_relaxed);
    return info.status();
  }
  if (info->size > max_bytes) {
    return Status::InvalidArgument(
        fmt::format("{} is {} bytes, more than the {} bytes allowed", url.ToString(), info->size, max_bytes));
  }
  if (::ftruncate(fd, static_cast<off_t>(info->size)) != 0) {
    return Status::FromErrno(errno, "size the download of " + url.ToString());
  }
  if (info->size == 0) return info;
  // Straight into the file's pages: no buffer as large as the object.
  auto mapping = MemoryMapping::Map(nullptr, info->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0, "map a download");
  if (!mapping.ok()) return mapping.status();
  std::vector<RangeRequest> pieces;
  for (uint64_t at = 0; at < info->size; at += kDownloadPieceBytes) {
    pieces.push_back({url, at, static_cast<size_t>(std::min(kDownloadPieceBytes, info->size - at)), info->etag,
                      reinterpret_cast<std::byte*>(mapping->data() + at)});
  }
  for (const Status& st : download_fetcher_->FetchAll(pieces)) {
    if (!st.ok()) return st.WithContext("download " + url.ToString());
  }
  return info;
}

Result<ObjectInfo> ObjectTier::Upload(const ObjectUrl& url, int fd, uint64_t size) {
  return client_.Put(url, fd, size);
}

ObjectTierStats ObjectTier::Stats() const {
  const auto fetched = fetcher_->counters();
  const auto downloaded = download_fetcher_->counters();
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  ObjectTierStats s;
  s.requests = fetched.attempts + downloaded.attempts + client_.attempts();
  s.bytes = fetched.bytes + downloaded.bytes;
  s.retries = fetched.retries + downloaded.retries + client_.retries();
  s.errors = get(head_errors_) + get(counters_.fetch_errors);
  s.chunk_hits = get(counters_.chunk_hits);
  s.chunk_misses = get(counters_.chunk_misses);
  s.chunks_reused = get(counters_.chunks_reused);
  s.chunks_damaged = get(counters_.chunks_damaged);
  s.evictions = get(evictions_);
  s.fetch_latency = fetch_latency_.Read();
  return s;
}

}  // namespace uffdpager
