// restore_bench's layers section: what serving a chain costs against one
// file of the same bytes. The chain is the snapshot (its base) with
// kChainDepth - 1 Diff layers on top, each a sparse file holding
// kLayerPercent of the pages; the one file is those bytes merged. Both are
// restored through the default pager the same way, runs interleaved:
//   cached        the files in the page cache, the pager's cache empty
//   pager_warm    a second restore through the same pager
//   storage_cold  nothing cached anywhere (a fresh pager, the files evicted)
// and the chain's median is given as a ratio of the one file's.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include <fmt/format.h>

#include "common/unique_fd.h"
#include "report.h"
#include "restore_steps.h"
#include "restore_variants.h"
#include "stats.h"

namespace uffdpager::bench {

namespace {

using nlohmann::json;

constexpr unsigned kChainDepth = 4;
constexpr unsigned kLayerPercent = 5;

// The files of the comparison: the chain (base first) and its bytes as one.
struct ChainFiles {
  std::vector<std::string> layers;
  std::string merged;
};

Status WritePage(int fd, uint64_t page, const std::vector<uint8_t>& bytes, const std::string& path) {
  const off_t offset = static_cast<off_t>(page * kPageSize);
  if (::pwrite(fd, bytes.data(), kPageSize, offset) != static_cast<ssize_t>(kPageSize)) {
    return Status::FromErrno(errno, "write a page of " + path);
  }
  return Status::Ok();
}

// Writes the Diff layers beside the snapshot and the merged file, each page
// a layer holds written to the merged copy as well.
Result<ChainFiles> WriteChain(const BenchConfig& config) {
  ChainFiles files;
  files.layers.push_back(config.snapshot_path);
  files.merged = config.snapshot_path + ".merged";
  std::error_code ec;
  std::filesystem::copy_file(config.snapshot_path, files.merged, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) return Status::Error(ErrorCode::kIoError, "copy the snapshot to " + files.merged + ": " + ec.message());
  UniqueFd merged(::open(files.merged.c_str(), O_WRONLY | O_CLOEXEC));
  if (!merged) return Status::FromErrno(errno, "open " + files.merged);
  const uint64_t pages = config.memory_bytes / kPageSize;
  std::mt19937_64 rng(4242);
  std::vector<uint8_t> bytes(kPageSize);
  for (unsigned depth = 1; depth < kChainDepth; ++depth) {
    std::string path = config.snapshot_path + fmt::format(".layer{}", depth);
    UniqueFd layer(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!layer || ::ftruncate(layer.get(), static_cast<off_t>(config.memory_bytes)) != 0) {
      return Status::FromErrno(errno, "create " + path);
    }
    // Dirtied pages come in runs, as a guest writes them.
    uint64_t written = 0;
    while (written < pages * kLayerPercent / 100) {
      const uint64_t first = rng() % pages;
      for (uint64_t p = first; p < std::min(pages, first + 1 + rng() % 32); ++p, ++written) {
        for (size_t i = 0; i < kPageSize; i += 8) {
          const uint64_t word = rng();
          std::memcpy(&bytes[i], &word, 8);
        }
        UFFD_RETURN_IF_ERROR(WritePage(layer.get(), p, bytes, path));
        UFFD_RETURN_IF_ERROR(WritePage(merged.get(), p, bytes, files.merged));
      }
    }
    if (::fsync(layer.get()) != 0) return Status::FromErrno(errno, "fsync " + path);
    files.layers.push_back(std::move(path));
  }
  if (::fsync(merged.get()) != 0) return Status::FromErrno(errno, "fsync " + files.merged);
  return files;
}

Status ForEachFile(const ChainFiles& files, Status (*step)(const std::string&)) {
  for (const std::string& path : files.layers) UFFD_RETURN_IF_ERROR(step(path));
  return step(files.merged);
}

}  // namespace

Result<json> RunLayeredRestore(const BenchConfig& config, const WorkingSet& set) {
  auto flavor = DefaultFlavor();
  if (!flavor.ok()) return flavor.status();
  auto files = WriteChain(config);
  if (!files.ok()) return files.status();
  // Both restores are verified against the merged bytes; only the chain's
  // sessions name the layers.
  BenchConfig one_file = config;
  one_file.snapshot_path = files->merged;
  BenchConfig chain = one_file;
  chain.snapshot_layers = files->layers;
  const std::string chain_name = fmt::format("chain{}", kChainDepth);
  const std::vector<std::pair<std::string, const BenchConfig*>> subjects = {{"one_file", &one_file},
                                                                            {chain_name, &chain}};
  const std::vector<std::string> conditions = {"cached", "pager_warm", "storage_cold"};
  std::vector<Series> series;
  for (const auto& condition : conditions) {
    for (const auto& [name, unused] : subjects) series.push_back({name + "_" + condition});
  }

  for (unsigned run = 0; run < config.runs; ++run) {
    // Which goes first alternates, so whatever the first restore after the
    // page cache was filled pays is paid by both alike.
    auto ordered = subjects;
    if (run % 2 == 1) std::reverse(ordered.begin(), ordered.end());
    for (const auto& [name, subject] : ordered) {
      UFFD_RETURN_IF_ERROR(ForEachFile(*files, WarmPageCache));
      auto pager = BenchPager::Launch(config.pager, *flavor, name);
      if (!pager.ok()) return pager.status().WithContext("launch a pager for " + name);
      for (const std::string& condition : {conditions[0], conditions[1]}) {
        auto sample = TimePagerRestore(*subject, **pager, fmt::format("{}-{}-{}", name, condition, run), set);
        if (!sample.ok()) return sample.status().WithContext(name + " " + condition);
        FindSeries(series, name + "_" + condition).Add(*sample);
      }
      pager->reset();
      UFFD_RETURN_IF_ERROR(ForEachFile(*files, EvictFromPageCache));
      auto cold_pager = BenchPager::Launch(config.pager, *flavor, name);
      if (!cold_pager.ok()) return cold_pager.status().WithContext("launch a pager for " + name);
      auto sample = TimePagerRestore(*subject, **cold_pager, fmt::format("{}-storage-{}", name, run), set);
      if (!sample.ok()) return sample.status().WithContext(name + " storage_cold");
      FindSeries(series, name + "_" + conditions[2]).Add(*sample);
    }
    Progress(fmt::format("layers {} run {}/{} done", set.name, run + 1, config.runs));
  }

  json variants = json::array();
  for (const Series& s : series) {
    json j = s.ToJson(set.distinct_bytes());
    for (const auto& condition : conditions) {
      if (s.name == chain_name + "_" + condition) {
        j["ratio_vs_one_file"] = Median(s.ms) / Median(FindSeries(series, "one_file_" + condition).ms);
      }
    }
    variants.push_back(std::move(j));
  }
  json out = WorkingSetResults(set, std::move(variants));
  out["chain_depth"] = kChainDepth;
  out["layer_percent"] = kLayerPercent;
  return out;
}

}  // namespace uffdpager::bench
