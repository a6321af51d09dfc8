#include "pager/storage/published_working_set.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/unique_fd.h"
#include "pager/storage/compact_working_set.h"

namespace uffdpager {

std::optional<ObjectUrl> PublishedWorkingSetUrl(const BackingChain& chain) {
  for (size_t i = 0; i < chain.depth(); ++i) {
    if (!IsObjectUrl(chain.layer(i).path())) return std::nullopt;
  }
  auto top = ParseObjectUrl(chain.layer(chain.depth() - 1).path());
  if (!top.ok()) return std::nullopt;
  top->key += ".workingset";
  return *top;
}

PublishedWorkingSetFetcher::~PublishedWorkingSetFetcher() {
  std::map<std::string, Fetching> left;
  {
    MutexLock lock(&mu_);
    left.swap(fetching_);
  }
  for (auto& [key, fetching] : left) fetching.thread.join();
}

std::shared_future<Status> PublishedWorkingSetFetcher::Fetch(const CacheKey& key, const ObjectUrl& url) {
  MutexLock lock(&mu_);
  ReapFinished();
  if (auto it = fetching_.find(key.ToString()); it != fetching_.end()) return it->second.done;
  auto task = std::make_shared<std::packaged_task<Status()>>([this, key, url] { return FetchNow(key, url); });
  Fetching& fetching = fetching_[key.ToString()];
  fetching.done = task->get_future().share();
  fetching.thread = std::thread([task] {
    (void)::pthread_setname_np(::pthread_self(), "wset-fetch");
    (*task)();
  });
  return fetching.done;
}

void PublishedWorkingSetFetcher::ReapFinished() {
  for (auto it = fetching_.begin(); it != fetching_.end();) {
    if (it->second.done.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      ++it;
      continue;
    }
    it->second.thread.join();  // its task is over: returns at once
    it = fetching_.erase(it);
  }
}

Status PublishedWorkingSetFetcher::FetchNow(const CacheKey& key, const ObjectUrl& url) {
  const std::string path = store_->CompactPathFor(key);
  const std::string tmp = path + ".fetch";
  // A local failure is never kNotFound, which says nothing is published.
  auto local = [](const std::string& what, int err) {
    return Status::Error(ErrorCode::kIoError, what + ": " + std::strerror(err));
  };
  std::error_code ec;
  std::filesystem::create_directories(store_->dir(), ec);
  if (ec) return local("create " + store_->dir(), ec.value());
  UniqueFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return local("create " + tmp, errno);
  const auto began = std::chrono::steady_clock::now();
  auto info = tier_->Download(url, writer_->max_bytes(), fd.get());
  fd.reset();
  if (!info.ok()) {
    std::filesystem::remove(tmp, ec);
    return info.status();
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status st = local("rename " + tmp, errno);
    std::filesystem::remove(tmp, ec);
    return st;
  }
  // Checked as a file of this host's own would be; its blocks are checked
  // as they are replayed. Just written, so its pages are in the page cache.
  auto compact = CompactWorkingSet::Open(path, key, std::nullopt, CompactWorkingSet::Reads::kBuffered);
  if (!compact.ok()) {
    std::filesystem::remove(path, ec);
    return Status::InvalidArgument(url.ToString() +
                                   " is not a working set this pager can replay: " + compact.status().message());
  }
  WorkingSet record;
  record.page_size = compact->page_size();
  record.offsets = compact->offsets();
  Status saved = store_->Save(key, record);
  if (!saved.ok()) {
    std::filesystem::remove(path, ec);
    return saved;
  }
  writer_->Adopt(path);
  spdlog::info("working set of cache key {}: {} pages ({} bytes) fetched from {} in {} ms", key.name(),
               record.offsets.size(), info->size, url.ToString(),
               std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began).count());
  return Status::Ok();
}

}  // namespace uffdpager
