#include "pager/storage/working_set_writer.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/logging.h"
#include "common/unique_fd.h"
#include "pager/storage/compact_working_set.h"

namespace uffdpager {

namespace fs = std::filesystem;

WorkingSetWriter::WorkingSetWriter(const WorkingSetStore* store, uint64_t max_bytes, ObjectTier* tier)
    : store_(store), max_bytes_(max_bytes), tier_(tier) {
  if (!enabled()) return;
  Trim("");  // counts what an earlier pager left, and holds the bound
  thread_ = std::thread([this] {
    (void)::pthread_setname_np(::pthread_self(), "wset-writer");
    Run();
  });
}

WorkingSetWriter::~WorkingSetWriter() {
  // What is queued is written first: a pager that stops right after a
  // restore (drain, an upgrade) still leaves its compact file. Each job is
  // bounded by one working set.
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  changed_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void WorkingSetWriter::Enqueue(const CacheKey& key, uint64_t page_size, std::vector<uint64_t> first_touch,
                               std::shared_ptr<const BackingChain> backing, std::optional<ObjectUrl> publish_to) {
  if (!enabled()) return;
  {
    MutexLock lock(&mu_);
    if (stop_) return;
    auto same = std::find_if(queue_.begin(), queue_.end(), [&](const Job& j) { return j.key == key; });
    Job job{key, page_size, std::move(first_touch), std::move(backing), std::move(publish_to)};
    if (same != queue_.end()) {
      *same = std::move(job);
    } else {
      queue_.push_back(std::move(job));
    }
  }
  changed_.SignalAll();
}

void WorkingSetWriter::WaitIdle() {
  MutexLock lock(&mu_);
  while (!queue_.empty() || busy_) changed_.Wait();
}

void WorkingSetWriter::Run() {
  for (;;) {
    Job job;
    {
      MutexLock lock(&mu_);
      while (queue_.empty() && !stop_) changed_.Wait();
      if (queue_.empty()) return;  // stopping, and nothing left to write
      job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    Write(job);
    {
      MutexLock lock(&mu_);
      busy_ = false;
    }
    changed_.SignalAll();
  }
}

void WorkingSetWriter::Write(const Job& job) {
  const std::string path = store_->CompactPathFor(job.key);
  std::vector<uint64_t> order = ReplayOrder(job.first_touch, kReplayWindowPages);
  const uint64_t bytes_needed = order.size() * job.page_size;
  if (bytes_needed > max_bytes_) {
    spdlog::info(
        "working set of cache key {} ({} bytes) is larger than the compact files' bound ({} bytes); not "
        "kept",
        job.key.name(), bytes_needed, max_bytes_);
    return;
  }
  uint64_t bytes = 0;
  Status st = CompactWorkingSet::Write(path, job.key, job.page_size, order, *job.backing, &bytes);
  if (!st.ok()) {
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("compact working set of cache key {} not written: {}", job.key.name(), st.ToString());
    Trim("");
    return;
  }
  written_.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("compact working set of cache key {}: {} pages, {} bytes", job.key.name(), order.size(), bytes);
  Trim(path);
  if (job.publish_to && tier_ != nullptr) Publish(*job.publish_to, path, bytes);
}

void WorkingSetWriter::Publish(const ObjectUrl& url, const std::string& path, uint64_t bytes) {
  // The file is only ever replaced whole (a rename), so the fd holds one
  // version of it whatever happens to the path meanwhile.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  auto uploaded =
      fd ? tier_->Upload(url, fd.get(), bytes) : Result<ObjectInfo>(Status::FromErrno(errno, "open " + path));
  if (!uploaded.ok()) {
    publish_errors_.fetch_add(1, std::memory_order_relaxed);
    UFFD_LOG_RATE_LIMITED(spdlog::level::warn, "working set not published as {}: {}", url.ToString(),
                          uploaded.status().ToString());
    return;
  }
  published_.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("working set published as {} ({} bytes)", url.ToString(), bytes);
}

void WorkingSetWriter::Adopt(const std::string& path) { Trim(path); }

void WorkingSetWriter::Trim(const std::string& keep) {
  MutexLock lock(&trim_mu_);
  struct File {
    std::string path;
    uint64_t bytes;
    fs::file_time_type used;
  };
  std::vector<File> files;
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(store_->dir(), ec)) {
    if (entry.path().extension() != ".pages" || !entry.is_regular_file(ec)) continue;
    uint64_t size = entry.file_size(ec);
    if (ec) continue;
    files.push_back({entry.path().string(), size, entry.last_write_time(ec)});
    total += size;
  }
  std::sort(files.begin(), files.end(), [](const File& a, const File& b) { return a.used < b.used; });
  size_t kept = files.size();
  for (const File& f : files) {
    if (total <= max_bytes_) break;
    if (f.path == keep) continue;
    if (fs::remove(f.path, ec)) {
      total -= f.bytes;
      --kept;
      spdlog::info("compact working set {} removed: the compact files' bound is {} bytes", f.path, max_bytes_);
    }
  }
  disk_bytes_.store(total, std::memory_order_relaxed);
  files_.store(kept, std::memory_order_relaxed);
}

}  // namespace uffdpager
