#include "pager/storage/working_set_store.h"

#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/durable_file.h"

namespace uffdpager {

namespace {

constexpr char kMagic[8] = {'U', 'F', 'W', 'S', 'E', 'T', '0', '2'};
// 8 bytes per page: 256 MiB holds the working set of a 128 GiB guest.
constexpr size_t kMaxFileBytes = 256 << 20;

uint64_t Fnv1a(const void* data, size_t len, uint64_t h = 0xcbf29ce484222325ULL) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < len; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

// On-disk layout: magic, this header, the key's identity and name, `count`
// offsets, then the FNV-1a of everything before it.
struct Header {
  uint64_t page_size, count, identity_bytes, name_bytes;
};

void Append(std::string* out, const void* data, size_t len) { out->append(static_cast<const char*>(data), len); }

}  // namespace

std::string WorkingSetStore::PathFor(const CacheKey& key) const {
  return fmt::format("{}/{:016x}.wset", dir_, Fnv1a(key.name().data(), key.name().size()));
}

std::string WorkingSetStore::CompactPathFor(const CacheKey& key) const {
  return fmt::format("{}/{:016x}.pages", dir_, Fnv1a(key.name().data(), key.name().size()));
}

std::optional<WorkingSet> WorkingSetStore::Load(const CacheKey& key) {
  std::string path = PathFor(key);
  auto read = ReadRegularFile(path, kMaxFileBytes);
  if (!read.ok()) return std::nullopt;  // none (or none readable): record anew
  const std::string& bytes = *read;
  auto reject = [&](const char* why) -> std::optional<WorkingSet> {
    spdlog::info("working set {} of cache key {} discarded: {}", path, key.name(), why);
    std::error_code ec;
    std::filesystem::remove(path, ec);
    return std::nullopt;
  };
  constexpr size_t kFixed = sizeof(kMagic) + sizeof(Header) + 8;
  if (bytes.size() < kFixed || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
    return reject("not a working-set file");
  uint64_t stored_sum;
  std::memcpy(&stored_sum, bytes.data() + bytes.size() - 8, 8);
  if (Fnv1a(bytes.data(), bytes.size() - 8) != stored_sum) return reject("checksum mismatch");
  Header h;
  std::memcpy(&h, bytes.data() + sizeof(kMagic), sizeof(h));
  if (h.count > bytes.size() / 8 || h.identity_bytes > bytes.size() || h.name_bytes > bytes.size() ||
      bytes.size() != kFixed + h.identity_bytes + h.name_bytes + h.count * 8) {
    return reject("wrong length");
  }
  const char* p = bytes.data() + sizeof(kMagic) + sizeof(Header);
  std::string_view identity(p, h.identity_bytes);
  std::string_view name(p + h.identity_bytes, h.name_bytes);
  if (name != key.name()) return std::nullopt;  // another name's hash collision: not ours to delete
  if (identity != key.identity()) return reject("the backing memory changed since it was recorded");
  WorkingSet set;
  set.page_size = h.page_size;
  std::error_code ec;
  const auto written = std::filesystem::last_write_time(path, ec);
  if (!ec) set.saved_at = std::chrono::file_clock::to_sys(written);
  set.offsets.resize(h.count);
  if (h.count > 0) std::memcpy(set.offsets.data(), p + h.identity_bytes + h.name_bytes, h.count * 8);
  return set;
}

Status WorkingSetStore::Save(const CacheKey& key, const WorkingSet& set) {
  MutexLock lock(&mu_);
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return Status::FromErrno(ec.value(), "create " + dir_);
  Header h{set.page_size, set.offsets.size(), key.identity().size(), key.name().size()};
  std::string bytes;
  Append(&bytes, kMagic, sizeof(kMagic));
  Append(&bytes, &h, sizeof(h));
  Append(&bytes, key.identity().data(), key.identity().size());
  Append(&bytes, key.name().data(), key.name().size());
  Append(&bytes, set.offsets.data(), set.offsets.size() * 8);
  uint64_t sum = Fnv1a(bytes.data(), bytes.size());
  Append(&bytes, &sum, sizeof(sum));
  return WriteFileAtomically(PathFor(key), bytes);
}

}  // namespace uffdpager
