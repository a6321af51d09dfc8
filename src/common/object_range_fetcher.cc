#include "common/object_range_fetcher.h"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <unordered_map>

#include "common/object_exchange.h"

namespace uffdpager {

namespace {

using Clock = std::chrono::steady_clock;

// The longest the loop sleeps without news: a bound, not a tick (curl's own
// timers and curl_multi_wakeup end a sleep at once).
constexpr auto kMaxPoll = std::chrono::milliseconds(1000);

}  // namespace

struct ObjectRangeFetcher::Job {
  ObjectRequest request;
  RangeCallback done;
  int attempt = 0;  // attempts started
  Clock::time_point not_before{};
  Clock::time_point on_wire_since{};         // the current attempt's start
  std::unique_ptr<ObjectExchange> exchange;  // while on the wire
};

// What only the fetcher's thread touches: the multi handle's transfers and
// the jobs waiting for a retry.
class ObjectRangeFetcher::Loop {
 public:
  struct MultiDeleter {
    void operator()(CURLM* m) const { curl_multi_cleanup(m); }
  };
  std::unique_ptr<CURLM, MultiDeleter> multi;
  std::unordered_map<CURL*, std::unique_ptr<Job>> active;
  std::deque<std::unique_ptr<Job>> ready;     // to start, in order
  std::vector<std::unique_ptr<Job>> waiting;  // retries waiting for their not_before
  std::vector<std::unique_ptr<ObjectExchange>> idle;
};

ObjectRangeFetcher::ObjectRangeFetcher(ObjectStoreConfig config, Options options)
    : config_(std::move(config)), options_(options), loop_(std::make_unique<Loop>()) {}

Result<std::unique_ptr<ObjectRangeFetcher>> ObjectRangeFetcher::Start(ObjectStoreConfig config, Options options) {
  if (options.max_in_flight < 1) return Status::InvalidArgument("max_in_flight must be at least 1");
  // The first easy handle initializes libcurl globally before the multi handle.
  ObjectExchange warm_up(&config);
  std::unique_ptr<ObjectRangeFetcher> fetcher(new ObjectRangeFetcher(std::move(config), options));
  fetcher->loop_->multi.reset(curl_multi_init());
  if (!fetcher->loop_->multi) return Status::Internal("curl_multi_init failed");
  CURLM* m = fetcher->loop_->multi.get();
  // Keep one connection per request in flight between requests.
  curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, static_cast<long>(options.max_in_flight));
  fetcher->thread_ = std::thread([f = fetcher.get()] { f->Run(); });
  return fetcher;
}

ObjectRangeFetcher::~ObjectRangeFetcher() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  curl_multi_wakeup(loop_->multi.get());
  if (thread_.joinable()) thread_.join();
}

void ObjectRangeFetcher::Submit(RangeRequest request, RangeCallback done) {
  auto job = std::make_unique<Job>();
  job->request = ObjectRequest{.kind = ObjectRequest::Kind::kGetRange,
                               .object = std::move(request.object),
                               .offset = request.offset,
                               .length = request.length,
                               .if_match = std::move(request.if_match),
                               .buffer = request.buffer};
  job->done = std::move(done);
  {
    MutexLock lock(&mu_);
    if (!stopping_) {
      submitted_.push_back(std::move(job));
      job = nullptr;
    }
  }
  if (job) {
    job->done(Status::Unavailable(job->request.Describe() + ": fetcher stopped"));
    return;
  }
  curl_multi_wakeup(loop_->multi.get());
}

std::vector<Status> ObjectRangeFetcher::FetchAll(std::span<const RangeRequest> requests) {
  Mutex mu;
  CondVar cv(&mu);
  size_t left = requests.size();
  std::vector<Status> out(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    Submit(requests[i], [&, i](const Status& s) {
      MutexLock lock(&mu);
      out[i] = s;
      if (--left == 0) cv.SignalAll();
    });
  }
  MutexLock lock(&mu);
  while (left > 0) cv.Wait();
  return out;
}

ObjectRangeFetcher::Counters ObjectRangeFetcher::counters() const {
  return {attempts_.load(std::memory_order_relaxed), retries_.load(std::memory_order_relaxed),
          bytes_.load(std::memory_order_relaxed)};
}

void ObjectRangeFetcher::Run() {
  Loop& loop = *loop_;
  CURLM* multi = loop.multi.get();
  auto finish = [](std::unique_ptr<Job> job, const Status& s) { job->done(s); };
  for (;;) {
    bool stop = false;
    {
      MutexLock lock(&mu_);
      stop = stopping_;
      while (!submitted_.empty()) {
        loop.ready.push_back(std::move(submitted_.front()));
        submitted_.pop_front();
      }
    }
    if (stop) break;

    // Retries whose pause is over go back in line, ahead of new work.
    Clock::time_point now = Clock::now();
    for (auto it = loop.waiting.begin(); it != loop.waiting.end();) {
      if ((*it)->not_before <= now) {
        loop.ready.push_front(std::move(*it));
        it = loop.waiting.erase(it);
      } else {
        ++it;
      }
    }
    while (!loop.ready.empty() && loop.active.size() < static_cast<size_t>(options_.max_in_flight)) {
      std::unique_ptr<Job> job = std::move(loop.ready.front());
      loop.ready.pop_front();
      if (loop.idle.empty()) {
        job->exchange = std::make_unique<ObjectExchange>(&config_);
      } else {
        job->exchange = std::move(loop.idle.back());
        loop.idle.pop_back();
      }
      Status prepared = job->exchange->Prepare(&job->request);
      if (!prepared.ok()) {
        loop.idle.push_back(std::move(job->exchange));
        finish(std::move(job), prepared);
        continue;
      }
      ++job->attempt;
      job->on_wire_since = Clock::now();
      attempts_.fetch_add(1, std::memory_order_relaxed);
      CURL* easy = job->exchange->handle();
      curl_multi_add_handle(multi, easy);
      loop.active.emplace(easy, std::move(job));
    }

    int running = 0;
    curl_multi_perform(multi, &running);
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      CURL* easy = msg->easy_handle;
      CURLcode code = msg->data.result;
      curl_multi_remove_handle(multi, easy);
      auto it = loop.active.find(easy);
      if (it == loop.active.end()) continue;
      std::unique_ptr<Job> job = std::move(it->second);
      loop.active.erase(it);
      ExchangeOutcome outcome = job->exchange->Finish(code);
      loop.idle.push_back(std::move(job->exchange));
      if (outcome.status.ok()) {
        bytes_.fetch_add(job->request.length, std::memory_order_relaxed);
        if (options_.on_success_latency) options_.on_success_latency(Clock::now() - job->on_wire_since);
        finish(std::move(job), outcome.status);
      } else if (outcome.retriable && job->attempt < config_.retry.max_attempts) {
        retries_.fetch_add(1, std::memory_order_relaxed);
        job->not_before = Clock::now() + config_.retry.JitteredBackoffAfter(job->attempt);
        loop.waiting.push_back(std::move(job));
      } else {
        Status failed = FinalStatus(outcome, job->attempt);
        finish(std::move(job), failed);
      }
    }

    // Sleep until curl has work, a Submit wakes us, or a retry is due.
    auto wait = kMaxPoll;
    for (const auto& job : loop.waiting) {
      wait = std::min(wait, std::chrono::duration_cast<std::chrono::milliseconds>(job->not_before - Clock::now()));
    }
    if (!loop.ready.empty() && loop.active.size() < static_cast<size_t>(options_.max_in_flight)) {
      wait = std::chrono::milliseconds(0);
    }
    wait = std::max(wait, std::chrono::milliseconds(0));
    curl_multi_poll(multi, nullptr, 0, static_cast<int>(wait.count()), nullptr);
  }

  // Stopped: every unfinished request still gets its one callback.
  std::vector<std::unique_ptr<Job>> left;
  for (auto& [easy, job] : loop.active) {
    curl_multi_remove_handle(multi, easy);
    left.push_back(std::move(job));
  }
  loop.active.clear();
  for (auto& job : loop.ready) left.push_back(std::move(job));
  for (auto& job : loop.waiting) left.push_back(std::move(job));
  {
    MutexLock lock(&mu_);
    for (auto& job : submitted_) left.push_back(std::move(job));
    submitted_.clear();
  }
  for (auto& job : left) {
    Status stopped = Status::Unavailable(job->request.Describe() + ": fetcher stopped");
    finish(std::move(job), stopped);
  }
}

}  // namespace uffdpager
