#include "pager/storage/object_chunk_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <xxhash.h>

#include "pager/storage/positional_io.h"

namespace uffdpager {

namespace {

constexpr char kSidecarMagic[8] = {'U', 'F', 'P', 'C', 'H', 'N', 'K', '1'};

struct ChunkRecord {
  uint64_t chunk;
  uint64_t hash;
};

// The sidecar's header: magic, the object's size, then its identity text
// with its length first.
std::string SidecarHeader(const ObjectVersion& object) {
  const std::string identity = object.ToString();
  std::string header(kSidecarMagic, sizeof(kSidecarMagic));
  const uint64_t fixed[2] = {object.size, identity.size()};
  header.append(reinterpret_cast<const char*>(fixed), sizeof(fixed));
  header += identity;
  return header;
}

}  // namespace

std::string ObjectVersion::ToString() const { return fmt::format("{} etag {} size {}", url.ToString(), etag, size); }

ObjectChunkStore::ObjectChunkStore(ObjectVersion object, std::string data_path, ChunkFetch fetch,
                                   ObjectTierCounters* counters)
    : object_(std::move(object)),
      data_path_(std::move(data_path)),
      fetch_(std::move(fetch)),
      counters_(counters),
      chunk_count_((object_.size + kChunkBytes - 1) / kChunkBytes) {
  MutexLock lock(&mu_);
  state_.assign(chunk_count_, ChunkState::kAbsent);
  recorded_hash_.assign(chunk_count_, 0);
}

Result<std::shared_ptr<ObjectChunkStore>> ObjectChunkStore::Open(ObjectVersion object, const std::string& prefix,
                                                                 ChunkFetch fetch, ObjectTierCounters* counters,
                                                                 std::function<void(uint64_t bytes)> grew,
                                                                 uint64_t readahead_chunks) {
  std::shared_ptr<ObjectChunkStore> store(
      new ObjectChunkStore(std::move(object), prefix + ".mem", std::move(fetch), counters));
  store->grew_ = std::move(grew);
  store->readahead_chunks_ = std::min(readahead_chunks, kMaxReadaheadChunks);
  store->data_fd_.reset(::open(store->data_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!store->data_fd_) return Status::FromErrno(errno, "open the object's local copy " + store->data_path_);
  UFFD_RETURN_IF_ERROR(store->LoadSidecar(prefix + ".chunks"));
  // Sparse: the object's size, nothing allocated until chunks are written.
  if (::ftruncate(store->data_fd_.get(), static_cast<off_t>(store->object_.size)) != 0) {
    return Status::FromErrno(errno, "size the object's local copy " + store->data_path_);
  }
  return store;
}

Status ObjectChunkStore::LoadSidecar(const std::string& path) {
  sidecar_fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!sidecar_fd_) return Status::FromErrno(errno, "open the chunk sidecar " + path);
  const std::string header = SidecarHeader(object_);
  struct stat st {};
  if (::fstat(sidecar_fd_.get(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  std::string found(std::min<uint64_t>(static_cast<uint64_t>(st.st_size), header.size()), '\0');
  if (!found.empty()) UFFD_RETURN_IF_ERROR(PreadAll(sidecar_fd_.get(), found.data(), found.size(), 0, path));
  if (found != header) {
    // New, or of something else: nothing on disk is known good.
    if (st.st_size != 0) spdlog::warn("chunk sidecar {} is not {}'s: starting it afresh", path, object_.ToString());
    if (::ftruncate(sidecar_fd_.get(), 0) != 0 || ::ftruncate(data_fd_.get(), 0) != 0) {
      return Status::FromErrno(errno, "reset the object's local copy " + data_path_);
    }
    return PwriteAll(sidecar_fd_.get(), header.data(), header.size(), 0, path);
  }
  const uint64_t records = (static_cast<uint64_t>(st.st_size) - header.size()) / sizeof(ChunkRecord);
  std::vector<ChunkRecord> read(records);
  if (records > 0) {
    UFFD_RETURN_IF_ERROR(PreadAll(sidecar_fd_.get(), read.data(), records * sizeof(ChunkRecord), header.size(), path));
  }
  MutexLock lock(&mu_);
  for (const ChunkRecord& r : read) {  // a torn last record is not read at all
    if (r.chunk >= chunk_count_) continue;
    state_[r.chunk] = ChunkState::kRecorded;
    recorded_hash_[r.chunk] = r.hash;
  }
  return Status::Ok();
}

uint64_t ObjectChunkStore::ChunkLength(uint64_t chunk) const {
  return std::min(kChunkBytes, object_.size - chunk * kChunkBytes);
}

Status ObjectChunkStore::EnsureRange(uint64_t offset, uint64_t length, uint64_t readahead_end) {
  if (length == 0 || offset >= object_.size) return Status::Ok();  // the read itself reports a range past the end
  const uint64_t first = offset / kChunkBytes;
  const uint64_t last = std::min(offset + length - 1, object_.size - 1) / kChunkBytes;
  const uint64_t readahead_last =
      std::min({last + readahead_chunks_, (std::min(readahead_end, object_.size) - 1) / kChunkBytes, chunk_count_ - 1});
  bool counted = false;
  while (true) {
    std::vector<Claim> claims;
    size_t demanded = 0;  // claims[0, demanded) are of [first, last]; the rest read ahead
    bool others_busy = false;
    {
      MutexLock lock(&mu_);
      if (!broken_.ok()) return broken_;
      bool fetching = false;
      for (uint64_t c = first; c <= last; ++c) {
        switch (state_[c]) {
          case ChunkState::kPresent:
            if (!counted) counters_->chunk_hits.fetch_add(1, std::memory_order_relaxed);
            break;
          case ChunkState::kBusy: others_busy = true; break;
          case ChunkState::kAbsent:
          case ChunkState::kRecorded:
            fetching = fetching || state_[c] == ChunkState::kAbsent;
            claims.push_back({c, state_[c] == ChunkState::kRecorded});
            state_[c] = ChunkState::kBusy;
            break;
        }
      }
      demanded = claims.size();
      // Only a trip to the store is worth company.
      for (uint64_t c = last + 1; fetching && c <= readahead_last; ++c) {
        if (state_[c] != ChunkState::kAbsent) continue;
        claims.push_back({c, false});
        state_[c] = ChunkState::kBusy;
      }
    }
    counted = true;
    if (claims.empty() && !others_busy) return Status::Ok();
    Status filled;
    uint64_t written = 0;
    if (!claims.empty()) {
      std::vector<Status> outcomes = Fill(claims);
      MutexLock lock(&mu_);
      for (size_t i = 0; i < claims.size(); ++i) {
        state_[claims[i].chunk] = outcomes[i].ok() ? ChunkState::kPresent : ChunkState::kAbsent;
        if (outcomes[i].ok()) written += kChunkBytes;
        // A conflict is final wherever it shows; any other failure counts
        // only for a chunk the caller needs.
        const bool counts = i < demanded || outcomes[i].code() == ErrorCode::kConflict;
        if (counts && (filled.ok() || outcomes[i].code() == ErrorCode::kConflict)) filled = outcomes[i];
      }
      if (filled.code() == ErrorCode::kConflict && broken_.ok()) broken_ = filled;
      changed_.SignalAll();
    }
    if (written > 0 && grew_) grew_(written);
    if (!filled.ok()) return filled;
    if (others_busy) {
      // Another caller's fetch of a chunk we need: wait for it to end, then
      // look again (a failed fetch left it absent: we try it ourselves).
      MutexLock lock(&mu_);
      while (AnyBusy(first, last) && broken_.ok()) changed_.Wait();
    }
  }
}

bool ObjectChunkStore::AnyBusy(uint64_t first, uint64_t last) const {
  for (uint64_t c = first; c <= last; ++c) {
    if (state_[c] == ChunkState::kBusy) return true;
  }
  return false;
}

bool ObjectChunkStore::ChunkIntact(uint64_t chunk, uint64_t hash) const {
  std::vector<std::byte> bytes(ChunkLength(chunk));
  if (!PreadAll(data_fd_.get(), bytes.data(), bytes.size(), chunk * kChunkBytes, data_path_).ok()) return false;
  return XXH3_64bits(bytes.data(), bytes.size()) == hash;
}

std::vector<Status> ObjectChunkStore::Fill(const std::vector<Claim>& claims) {
  std::vector<Status> outcomes(claims.size());
  std::vector<size_t> to_fetch;  // indexes into claims
  for (size_t i = 0; i < claims.size(); ++i) {
    if (claims[i].recorded) {
      uint64_t hash = 0;
      {
        MutexLock lock(&mu_);
        hash = recorded_hash_[claims[i].chunk];
      }
      if (ChunkIntact(claims[i].chunk, hash)) {
        counters_->chunks_reused.fetch_add(1, std::memory_order_relaxed);
        counters_->chunk_hits.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      counters_->chunks_damaged.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("{}: chunk {} on disk does not match its XXH3; fetching it again", object_.url.ToString(),
                   claims[i].chunk);
    }
    to_fetch.push_back(i);
  }
  if (to_fetch.empty()) return outcomes;
  std::vector<std::vector<std::byte>> buffers(to_fetch.size());
  std::vector<RangeRequest> requests(to_fetch.size());
  for (size_t j = 0; j < to_fetch.size(); ++j) {
    const uint64_t chunk = claims[to_fetch[j]].chunk;
    buffers[j].resize(ChunkLength(chunk));
    requests[j] = RangeRequest{object_.url, chunk * kChunkBytes, buffers[j].size(), object_.etag, buffers[j].data()};
  }
  counters_->chunk_misses.fetch_add(to_fetch.size(), std::memory_order_relaxed);
  std::vector<Status> fetched = fetch_(requests);
  for (size_t j = 0; j < to_fetch.size(); ++j) {
    const uint64_t chunk = claims[to_fetch[j]].chunk;
    Status st = j < fetched.size() ? fetched[j] : Status::Internal("the fetcher gave no outcome");
    if (st.ok()) st = WriteChunk(chunk, buffers[j].data());
    if (st.ok()) continue;
    counters_->fetch_errors.fetch_add(1, std::memory_order_relaxed);
    if (st.code() == ErrorCode::kConflict) {
      st = st.WithContext(fmt::format(
          "{} changed in the store: it no longer has ETag {}, the version this session is bound to; no byte of "
          "another version is served",
          object_.url.ToString(), object_.etag));
    } else {
      st = st.WithContext(fmt::format("fetch chunk {} of {}", chunk, object_.url.ToString()));
    }
    outcomes[to_fetch[j]] = st;
  }
  return outcomes;
}

Status ObjectChunkStore::WriteChunk(uint64_t chunk, const std::byte* bytes) {
  const uint64_t length = ChunkLength(chunk);
  UFFD_RETURN_IF_ERROR(PwriteAll(data_fd_.get(), bytes, length, chunk * kChunkBytes, data_path_));
  const ChunkRecord record{chunk, XXH3_64bits(bytes, length)};
  // O_APPEND: one 16-byte record per write, after the chunk's bytes.
  if (::write(sidecar_fd_.get(), &record, sizeof(record)) != static_cast<ssize_t>(sizeof(record))) {
    spdlog::warn("{}: could not record chunk {} in its sidecar ({}); it will be fetched again after a restart",
                 object_.url.ToString(), chunk, std::strerror(errno));
  }
  MutexLock lock(&mu_);
  recorded_hash_[chunk] = record.hash;
  return Status::Ok();
}

}  // namespace uffdpager
