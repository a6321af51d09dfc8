#include "pager/storage/compact_working_set.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <xxhash.h>

#include "pager/storage/positional_io.h"

namespace uffdpager {

namespace {

constexpr char kCompactMagic[8] = {'U', 'F', 'W', 'S', 'P', 'G', '0', '1'};
// Version 2 binds the file to the identity of the bytes alone (version 1
// also bound the cache key's name, which is a host's own word for them).
constexpr uint64_t kVersion = 2;
constexpr uint64_t kAlign = 4096;
// A header names at most this many pages: 64 GiB of 4 KiB pages.
constexpr uint64_t kMaxPages = 16ULL << 20;

// The fixed part of the header; the identity, the offsets, the block
// hashes and the header hash follow it.
struct Fixed {
  uint64_t version, page_size, count, block_pages, data_offset, record_hash, identity_bytes;
};

uint64_t AlignUp(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// A set of offsets for lists of tens of thousands of pages, checked before a
// replay starts: open addressing in a table of at least twice the entries,
// where a node-based set spends milliseconds allocating. Slot value 0 means
// empty; offset 0 is kept aside.
class OffsetSet {
 public:
  explicit OffsetSet(size_t entries) {
    size_t slots = 16;
    while (slots < entries * 2) slots *= 2;
    table_.assign(slots, 0);
  }
  // False if `offset` was in already.
  bool Insert(uint64_t offset) {
    if (offset == 0) return !std::exchange(zero_, true);
    const size_t mask = table_.size() - 1;
    size_t i = static_cast<size_t>((offset * 0x9E3779B97F4A7C15ULL) >> 32) & mask;
    while (table_[i] != 0) {
      if (table_[i] == offset) return false;
      i = (i + 1) & mask;
    }
    table_[i] = offset;
    return true;
  }

 private:
  std::vector<uint64_t> table_;
  bool zero_ = false;
};

// Whether `offsets` is what ReplayOrder makes of some record: distinct, and
// ascending within each window. Checked without sorting.
bool IsReplayOrder(const std::vector<uint64_t>& offsets, size_t window) {
  OffsetSet seen(offsets.size());
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (i % window != 0 && offsets[i] <= offsets[i - 1]) return false;
    if (!seen.Insert(offsets[i])) return false;
  }
  return true;
}

// The record hash of a list already in replay order.
uint64_t HashOfReplayOrder(uint64_t page_size, const std::vector<uint64_t>& offsets) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  XXH3_64bits_update(state, &page_size, sizeof(page_size));
  XXH3_64bits_update(state, offsets.data(), offsets.size() * sizeof(uint64_t));
  uint64_t hash = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return hash;
}

}  // namespace

uint64_t CompactWorkingSet::RecordHash(uint64_t page_size, const std::vector<uint64_t>& first_touch) {
  return HashOfReplayOrder(page_size, ReplayOrder(first_touch, kReplayWindowPages));
}

uint64_t CompactWorkingSet::BlockPages(size_t b) const {
  return std::min<uint64_t>(kBlockPages, offsets_.size() - b * kBlockPages);
}

bool CompactWorkingSet::BlockIntact(size_t b, const uint8_t* bytes) const {
  return b < block_hashes_.size() && XXH3_64bits(bytes, BlockPages(b) * page_size_) == block_hashes_[b];
}

std::optional<size_t> CompactWorkingSet::BlockOf(uint64_t offset) const {
  for (size_t start = 0; start < offsets_.size(); start += kReplayWindowPages) {
    const auto first = offsets_.begin() + static_cast<ptrdiff_t>(start);
    const auto last = offsets_.begin() + static_cast<ptrdiff_t>(std::min(offsets_.size(), start + kReplayWindowPages));
    auto it = std::lower_bound(first, last, offset);
    if (it != last && *it == offset) return static_cast<size_t>(it - offsets_.begin()) / kBlockPages;
  }
  return std::nullopt;
}

Status CompactWorkingSet::Write(const std::string& path, const CacheKey& key, uint64_t page_size,
                                const std::vector<uint64_t>& offsets, const BackingChain& backing, uint64_t* bytes) {
  const uint64_t count = offsets.size();
  const uint64_t blocks = (count + kBlockPages - 1) / kBlockPages;
  const uint64_t header_bytes =
      sizeof(kCompactMagic) + sizeof(Fixed) + key.identity().size() + count * 8 + blocks * 8 + 8;
  Fixed fixed{kVersion,
              page_size,
              count,
              kBlockPages,
              AlignUp(header_bytes),
              HashOfReplayOrder(page_size, offsets),
              key.identity().size()};
  const std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return Status::FromErrno(errno, "create " + tmp);
  auto fail = [&](Status st) {
    ::unlink(tmp.c_str());
    return st;
  };
  // The pages first, block by block, each hashed as it is written.
  std::vector<uint64_t> block_hashes(blocks);
  std::vector<uint8_t> block(kBlockPages * page_size);
  for (uint64_t b = 0; b < blocks; ++b) {
    const uint64_t first = b * kBlockPages;
    const uint64_t n = std::min<uint64_t>(kBlockPages, count - first);
    // Consecutive offsets (most of them, in replay order) are one read.
    for (uint64_t i = 0; i < n;) {
      uint64_t j = i + 1;
      while (j < n && offsets[first + j] == offsets[first + i] + (j - i) * page_size) ++j;
      uint64_t read = 0;
      Status st = backing.ReadRange(offsets[first + i], block.data() + i * page_size, (j - i) * page_size, &read);
      if (!st.ok()) return fail(st.WithContext("copy the working set's pages"));
      i = j;
    }
    block_hashes[b] = XXH3_64bits(block.data(), n * page_size);
    Status st = PwriteAll(fd.get(), block.data(), n * page_size, fixed.data_offset + first * page_size, tmp);
    if (!st.ok()) return fail(st);
  }
  std::string header;
  header.append(reinterpret_cast<const char*>(kCompactMagic), sizeof(kCompactMagic));
  header.append(reinterpret_cast<const char*>(&fixed), sizeof(fixed));
  header.append(reinterpret_cast<const char*>(key.identity().data()), key.identity().size());
  header.append(reinterpret_cast<const char*>(offsets.data()), count * 8);
  header.append(reinterpret_cast<const char*>(block_hashes.data()), blocks * 8);
  uint64_t header_hash = XXH3_64bits(header.data(), header.size());
  header.append(reinterpret_cast<const char*>(&header_hash), 8);
  Status st = PwriteAll(fd.get(), reinterpret_cast<const uint8_t*>(header.data()), header.size(), 0, tmp);
  if (!st.ok()) return fail(st);
  // Outlives the pager, not the host (like every working-set file): no fsync.
  if (::close(fd.release()) != 0) return fail(Status::FromErrno(errno, "close " + tmp));
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail(Status::FromErrno(errno, "rename " + tmp));
  *bytes = fixed.data_offset + count * page_size;
  return Status::Ok();
}

Result<CompactWorkingSet> CompactWorkingSet::Open(const std::string& path, const CacheKey& key,
                                                  std::optional<uint64_t> record_hash, Reads reads) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) {
    if (errno == ENOENT) return Status::NotFound("no compact working set " + path);
    return Status::FromErrno(errno, "open " + path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path + " is not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  auto bad = [&](const std::string& why) { return Status::InvalidArgument(path + ": " + why); };
  if (size < sizeof(kCompactMagic) + sizeof(Fixed)) return bad("too short for a header");
  uint8_t head[sizeof(kCompactMagic) + sizeof(Fixed)];
  UFFD_RETURN_IF_ERROR(PreadAll(fd.get(), head, sizeof(head), 0, path));
  if (std::memcmp(head, kCompactMagic, sizeof(kCompactMagic)) != 0) return bad("not a compact working set");
  Fixed fixed;
  std::memcpy(&fixed, head + sizeof(kCompactMagic), sizeof(fixed));
  if (fixed.version != kVersion || fixed.block_pages != kBlockPages || fixed.count > kMaxPages ||
      fixed.page_size == 0 || (fixed.page_size & (fixed.page_size - 1)) != 0 || fixed.identity_bytes > 64 * 1024) {
    return bad("a header this pager cannot read");
  }
  const uint64_t blocks = (fixed.count + kBlockPages - 1) / kBlockPages;
  const uint64_t header_bytes = sizeof(head) + fixed.identity_bytes + fixed.count * 8 + blocks * 8 + 8;
  if (fixed.data_offset != AlignUp(header_bytes) || size != fixed.data_offset + fixed.count * fixed.page_size) {
    return bad("its length is not what its header says (cut short?)");
  }
  std::vector<uint8_t> header(header_bytes);
  UFFD_RETURN_IF_ERROR(PreadAll(fd.get(), header.data(), header_bytes, 0, path));
  uint64_t stored;
  std::memcpy(&stored, header.data() + header_bytes - 8, 8);
  if (XXH3_64bits(header.data(), header_bytes - 8) != stored) return bad("its header is damaged");
  const char* p = reinterpret_cast<const char*>(header.data()) + sizeof(head);
  std::string_view identity(p, fixed.identity_bytes);
  if (identity != key.identity()) return bad("it copies other bytes than the backing memory holds now");
  if (record_hash && fixed.record_hash != *record_hash)
    return bad("it was made from another record of the working set");
  CompactWorkingSet out;
  out.fd_ = std::move(fd);
  out.page_size_ = fixed.page_size;
  out.data_offset_ = fixed.data_offset;
  out.offsets_.resize(fixed.count);
  if (fixed.count > 0) std::memcpy(out.offsets_.data(), p + fixed.identity_bytes, fixed.count * 8);
  out.block_hashes_.resize(blocks);
  if (blocks > 0) std::memcpy(out.block_hashes_.data(), p + fixed.identity_bytes + fixed.count * 8, blocks * 8);
  // Replay reads the offsets' pages in order: they must be distinct pages in
  // replay order (a file made elsewhere is checked like any input; a page
  // the memory's layout does not have is skipped when installed).
  if (!IsReplayOrder(out.offsets_, kReplayWindowPages) ||
      HashOfReplayOrder(fixed.page_size, out.offsets_) != fixed.record_hash) {
    return bad("its page list is not a replay order");
  }
  // Reads are large and sequential: the default readahead helps them. And
  // the file is in use: the disk bound removes the least recently used.
  (void)::posix_fadvise(out.fd_.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  (void)::futimens(out.fd_.get(), nullptr);
  // O_NONBLOCK guarded the open against a FIFO; reads of a regular file
  // ignore it, and io_uring must not see it.
  (void)::fcntl(out.fd_.get(), F_SETFL, 0);
  // Blocks are read once per restore, page-aligned into page-aligned
  // buffers: straight from the disk (O_DIRECT) they skip the page cache's
  // copy and its readahead. That very file, through its /proc link; where
  // the file system refuses O_DIRECT, the buffered fd serves. A file just
  // written is in the page cache: O_DIRECT would first write it back.
  if (reads == Reads::kBuffered) return out;
  const std::string link = "/proc/self/fd/" + std::to_string(out.fd_.get());
  if (UniqueFd direct(::open(link.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT)); direct) {
    struct stat again {};
    if (::fstat(direct.get(), &again) == 0 && again.st_ino == st.st_ino && again.st_dev == st.st_dev &&
        fixed.data_offset % 4096 == 0) {
      out.fd_ = std::move(direct);
    }
  }
  return out;
}

std::vector<uint64_t> ReplayOrder(const std::vector<uint64_t>& first_touch, size_t window) {
  std::vector<uint64_t> order;
  order.reserve(first_touch.size());
  OffsetSet seen(first_touch.size());
  for (uint64_t offset : first_touch) {
    if (seen.Insert(offset)) order.push_back(offset);
  }
  for (size_t start = 0; start < order.size(); start += window) {
    auto end = order.begin() + static_cast<ptrdiff_t>(std::min(order.size(), start + window));
    std::sort(order.begin() + static_cast<ptrdiff_t>(start), end);
  }
  return order;
}

}  // namespace uffdpager
