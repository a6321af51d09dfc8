#include "pager/storage/working_set_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/durable_file.h"

namespace uffdpager {

namespace {

constexpr char kMagic[8] = {'U', 'F', 'W', 'S', 'E', 'T', '0', '1'};

uint64_t Fnv1a(const void* data, size_t len, uint64_t h = 0xcbf29ce484222325ULL) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < len; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

// On-disk layout: magic, then these words, then `count` offsets, then the
// FNV-1a of everything before it.
struct Header {
  uint64_t device, inode, size;
  int64_t mtime_ns;
  uint64_t page_size, count, key_hash;
};

void Append(std::string* out, const void* data, size_t len) { out->append(static_cast<const char*>(data), len); }

}  // namespace

std::string WorkingSetStore::PathFor(const std::string& cache_key) const {
  return fmt::format("{}/{:016x}.wset", dir_, Fnv1a(cache_key.data(), cache_key.size()));
}

std::optional<WorkingSet> WorkingSetStore::Load(const std::string& cache_key, const FileIdentity& identity) {
  std::string path = PathFor(cache_key);
  auto read = ReadWholeFile(path);
  if (!read.ok()) return std::nullopt;  // no record (or none readable): record anew
  const std::string& bytes = *read;
  auto reject = [&](const char* why) -> std::optional<WorkingSet> {
    spdlog::info("working-set record {} for cache key {} discarded: {}", path, cache_key, why);
    std::error_code ec;
    std::filesystem::remove(path, ec);
    return std::nullopt;
  };
  if (bytes.size() < sizeof(kMagic) + sizeof(Header) + 8 || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return reject("not a record");
  }
  uint64_t stored_sum;
  std::memcpy(&stored_sum, bytes.data() + bytes.size() - 8, 8);
  if (Fnv1a(bytes.data(), bytes.size() - 8) != stored_sum) return reject("checksum mismatch");
  Header h;
  std::memcpy(&h, bytes.data() + sizeof(kMagic), sizeof(h));
  if (bytes.size() != sizeof(kMagic) + sizeof(Header) + h.count * 8 + 8) return reject("wrong length");
  if (h.key_hash != Fnv1a(cache_key.data(), cache_key.size())) return std::nullopt;  // another key's hash collision
  if (h.device != identity.device || h.inode != identity.inode || h.size != identity.size ||
      h.mtime_ns != identity.mtime_ns) {
    return reject("the backing file changed since it was recorded");
  }
  WorkingSet set;
  set.page_size = h.page_size;
  set.offsets.resize(h.count);
  std::memcpy(set.offsets.data(), bytes.data() + sizeof(kMagic) + sizeof(Header), h.count * 8);
  return set;
}

Status WorkingSetStore::Save(const std::string& cache_key, const FileIdentity& identity, const WorkingSet& set) {
  std::lock_guard lock(mu_);
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return Status::FromErrno(ec.value(), "create " + dir_);
  Header h{static_cast<uint64_t>(identity.device), static_cast<uint64_t>(identity.inode), identity.size,
           identity.mtime_ns, set.page_size, set.offsets.size(), Fnv1a(cache_key.data(), cache_key.size())};
  std::string bytes;
  Append(&bytes, kMagic, sizeof(kMagic));
  Append(&bytes, &h, sizeof(h));
  Append(&bytes, set.offsets.data(), set.offsets.size() * 8);
  uint64_t sum = Fnv1a(bytes.data(), bytes.size());
  Append(&bytes, &sum, sizeof(sum));
  return WriteFileAtomically(PathFor(cache_key), bytes);
}

}  // namespace uffdpager
