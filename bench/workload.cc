#include "workload.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <thread>

#include "common/unique_fd.h"

namespace uffdpager::bench {

namespace {

// Marks a generated file so a stale file of the same size from another
// generator is not silently reused.
constexpr char kGenerationXattr[] = "user.uffdpager_bench";
constexpr char kGenerationTag[] = "v1-random-every8th-zero";

bool IsCurrentGeneration(const std::string& path, uint64_t bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || uint64_t(st.st_size) != bytes) return false;
  char tag[64] = {};
  ssize_t n = ::getxattr(path.c_str(), kGenerationXattr, tag, sizeof(tag) - 1);
  return n > 0 && std::strcmp(tag, kGenerationTag) == 0;
}

void ShuffleFrom(std::vector<uint64_t>& pages, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::shuffle(pages.begin(), pages.end(), rng);
}

}  // namespace

Status GenerateSnapshotFile(const std::string& path, uint64_t bytes) {
  if (IsCurrentGeneration(path, bytes)) return Status::Ok();
  std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return Status::FromErrno(errno, "create " + tmp);
  // Written in 1 MiB chunks: generation of a 1 GiB file is ~1 s, not minutes.
  std::mt19937_64 rng(2026);
  std::vector<uint64_t> chunk(kMiB / 8);
  const uint64_t words_per_page = kPageSize / 8;
  for (uint64_t off = 0; off < bytes; off += kMiB) {
    uint64_t len = std::min<uint64_t>(kMiB, bytes - off);
    for (uint64_t w = 0; w < len / 8; ++w) {
      uint64_t page = (off / kPageSize) + w / words_per_page;
      chunk[w] = (page % 8 == 7) ? 0 : rng();
    }
    if (::write(fd.get(), chunk.data(), len) != ssize_t(len)) return Status::FromErrno(errno, "write " + tmp);
  }
  if (::fsync(fd.get()) != 0) return Status::FromErrno(errno, "fsync " + tmp);
  (void)::fsetxattr(fd.get(), kGenerationXattr, kGenerationTag, std::strlen(kGenerationTag), 0);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Status::FromErrno(errno, "rename to " + path);
  return Status::Ok();
}

uint64_t WorkingSet::total_touches() const {
  uint64_t n = 0;
  for (const auto& t : per_thread) n += t.size();
  return n;
}

std::vector<uint64_t> WorkingSet::SortedDistinctPages() const {
  std::vector<uint64_t> pages;
  for (const auto& thread : per_thread) pages.insert(pages.end(), thread.begin(), thread.end());
  std::sort(pages.begin(), pages.end());
  pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
  return pages;
}

WorkingSet RealisticWorkingSet(uint64_t pages, unsigned threads, unsigned hot_percent, unsigned tail_percent,
                               uint64_t seed) {
  WorkingSet set;
  set.name = "realistic";
  set.per_thread.resize(threads);
  const uint64_t hot = std::max<uint64_t>(1, pages * hot_percent / 100);
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> tail;
  for (uint64_t p = hot; p < pages; ++p) {
    if (rng() % 100 < tail_percent) tail.push_back(p);
  }
  ShuffleFrom(tail, seed + 1);
  for (unsigned t = 0; t < threads; ++t) {
    auto& mine = set.per_thread[t];
    // Every thread walks the whole hot core from its own starting point.
    const uint64_t start = hot * t / threads;
    for (uint64_t i = 0; i < hot; ++i) mine.push_back((start + i) % hot);
    for (size_t i = t; i < tail.size(); i += threads) mine.push_back(tail[i]);
  }
  set.distinct_pages = hot + tail.size();
  return set;
}

WorkingSet RandomWorkingSet(uint64_t pages, unsigned threads, unsigned percent, uint64_t seed) {
  WorkingSet set;
  set.name = "all_random";
  set.per_thread.resize(threads);
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> chosen;
  for (uint64_t p = 0; p < pages; ++p) {
    if (rng() % 100 < percent) chosen.push_back(p);
  }
  ShuffleFrom(chosen, seed + 1);
  for (size_t i = 0; i < chosen.size(); ++i) set.per_thread[i % threads].push_back(chosen[i]);
  set.distinct_pages = chosen.size();
  return set;
}

std::chrono::nanoseconds TouchWorkingSet(const WorkingSet& set,
                                         const std::function<const uint8_t*(uint64_t)>& page_address) {
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> vcpus;
  for (const auto& pages : set.per_thread) {
    vcpus.emplace_back([&pages, &page_address] {
      uint64_t sink = 0;
      for (uint64_t p : pages) sink += *reinterpret_cast<const volatile uint8_t*>(page_address(p));
      asm volatile("" : : "r"(sink));
    });
  }
  for (auto& v : vcpus) v.join();
  return std::chrono::steady_clock::now() - start;
}

Status VerifySample(const WorkingSet& set, const std::function<const uint8_t*(uint64_t)>& page_address,
                    const std::string& snapshot_path, uint64_t stride) {
  UniqueFd fd(::open(snapshot_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open " + snapshot_path);
  std::vector<uint8_t> expected(kPageSize);
  for (const auto& pages : set.per_thread) {
    for (size_t i = 0; i < pages.size(); i += stride) {
      uint64_t p = pages[i];
      if (::pread(fd.get(), expected.data(), kPageSize, off_t(p * kPageSize)) != ssize_t(kPageSize)) {
        return Status::FromErrno(errno, "pread " + snapshot_path);
      }
      if (std::memcmp(expected.data(), page_address(p), kPageSize) != 0) {
        return Status::Internal("page " + std::to_string(p) + " differs from the snapshot file");
      }
    }
  }
  return Status::Ok();
}

}  // namespace uffdpager::bench
