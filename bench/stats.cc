#include "stats.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "common/memory_mapping.h"
#include "common/unique_fd.h"

namespace uffdpager::bench {

double Ms(std::chrono::nanoseconds d) { return std::chrono::duration<double, std::milli>(d).count(); }

void Progress(const std::string& line) {
  std::fprintf(stderr, "  %s\n", line.c_str());
  std::fflush(stderr);
}

double Median(std::vector<double> samples) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  size_t n = samples.size();
  return n % 2 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
}

double Percentile(std::vector<double> samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  size_t rank = size_t(std::ceil(p / 100.0 * samples.size()));
  return samples[std::clamp<size_t>(rank, 1, samples.size()) - 1];
}

Status EvictFilesFromPageCache(const std::vector<std::string>& paths) {
  for (const std::string& path : paths) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return Status::FromErrno(errno, "open " + path);
    // DONTNEED drops clean pages only: write dirty ones back first.
    ::fdatasync(fd.get());
    int rc = ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
    if (rc != 0) return Status::FromErrno(rc, "fadvise DONTNEED " + path);
  }
  return Status::Ok();
}

Status EvictFromPageCache(const std::string& path) {
  UFFD_RETURN_IF_ERROR(EvictFilesFromPageCache({path}));
  ::sync();
  std::ofstream drop("/proc/sys/vm/drop_caches");
  if (drop) drop << "1" << std::flush;
  return Status::Ok();
}

Result<uint64_t> ResidentBytes(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "fstat " + path);
  const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t pages = (uint64_t(st.st_size) + page - 1) / page;
  if (pages == 0) return uint64_t{0};
  // Mapped and never touched: mincore reports the page cache, and the
  // mapping itself brings nothing in.
  auto mapping = MemoryMapping::Map(nullptr, pages * page, PROT_READ, MAP_SHARED, fd.get(), 0, "residency probe");
  if (!mapping.ok()) return mapping.status();
  std::vector<unsigned char> resident(pages);
  if (::mincore(mapping->data(), pages * page, resident.data()) != 0)
    return Status::FromErrno(errno, "mincore " + path);
  uint64_t count = 0;
  for (unsigned char r : resident) count += r & 1;
  return count * page;
}

Status WarmExecutableMappings(pid_t pid) {
  std::string maps_path = pid == 0 ? "/proc/self/maps" : "/proc/" + std::to_string(pid) + "/maps";
  std::ifstream maps(maps_path);
  if (!maps) return Status::NotFound("cannot read " + maps_path);
  std::set<std::string> files;
  for (std::string line; std::getline(maps, line);) {
    // address perms offset dev inode path
    std::istringstream fields(line);
    std::string address, perms, offset, dev, inode, path;
    fields >> address >> perms >> offset >> dev >> inode;
    std::getline(fields >> std::ws, path);
    if (perms.size() >= 3 && perms[2] == 'x' && path.starts_with("/") && !path.ends_with(" (deleted)")) {
      files.insert(path);
    }
  }
  for (const std::string& file : files) UFFD_RETURN_IF_ERROR(WarmPageCache(file));
  return Status::Ok();
}

Result<uint64_t> StorageReadBytes(pid_t pid) {
  std::string io_path = pid == 0 ? "/proc/self/io" : "/proc/" + std::to_string(pid) + "/io";
  std::ifstream io(io_path);
  if (!io) return Status::NotFound("cannot read " + io_path + " (task I/O accounting)");
  for (std::string line; std::getline(io, line);) {
    if (line.starts_with("read_bytes:")) return uint64_t(std::stoull(line.substr(11)));
  }
  return Status::NotFound("no read_bytes in " + io_path);
}

Status WarmPageCache(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open " + path);
  std::vector<char> buffer(4 << 20);
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0) return Status::FromErrno(errno, "read " + path);
    if (n == 0) return Status::Ok();
  }
}

Result<ProcessMemory> ReadProcessMemory(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  if (!status) return Status::NotFound("no /proc/" + std::to_string(pid) + "/status");
  ProcessMemory memory;
  std::string line;
  while (std::getline(status, line)) {
    std::istringstream fields(line);
    std::string key;
    uint64_t kib = 0;
    fields >> key >> kib;
    if (key == "VmRSS:") memory.rss_bytes = kib * 1024;
    if (key == "VmHWM:") memory.hwm_bytes = kib * 1024;
    if (key == "RssAnon:") memory.anon_bytes = kib * 1024;
    if (key == "RssFile:") memory.file_bytes = kib * 1024;
  }
  return memory;
}

std::optional<uint64_t> ReadSince(pid_t pid, const Result<uint64_t>& before) {
  auto after = StorageReadBytes(pid);
  if (!before.ok() || !after.ok()) return std::nullopt;
  return *after - *before;
}

}  // namespace uffdpager::bench
