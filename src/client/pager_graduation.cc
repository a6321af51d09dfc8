#include "uffdpager/pager_graduation.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "uffdpager/pager_client.h"

namespace uffdpager {

namespace {

std::string NameOf(const GraduationCandidate& c) { return c.version_key + "/" + c.session_id; }

}  // namespace

std::vector<GraduationCandidate> GraduationOrder(std::vector<GraduationCandidate> candidates, int64_t now_unix,
                                                 std::chrono::seconds soak_age) {
  std::erase_if(candidates,
                [&](const GraduationCandidate& c) { return now_unix - c.created_at_unix < soak_age.count(); });
  std::sort(candidates.begin(), candidates.end(), [](const GraduationCandidate& a, const GraduationCandidate& b) {
    if (a.outdated != b.outdated) return a.outdated;
    if (a.created_at_unix != b.created_at_unix) return a.created_at_unix < b.created_at_unix;
    if (a.version_key != b.version_key) return a.version_key < b.version_key;
    return a.session_id < b.session_id;
  });
  return candidates;
}

Result<PagerGraduation> PagerGraduation::Create(GraduationOptions options) {
  if (options.max_concurrent == 0) return Status::InvalidArgument("max_concurrent must be at least 1");
  // The service checks the version key as every client of the pager does.
  auto service = PagerService::Create({.data_dir = options.data_dir, .version_key = options.version_key});
  if (!service.ok()) return service.status();
  return PagerGraduation(std::move(options), std::move(*service));
}

Result<GraduationReport> PagerGraduation::RunPass() {
  GraduationReport report;
  std::string failures;
  auto running = service_.RunningPagers(&failures);
  if (!running.ok()) return running.status().WithContext("find the pagers to graduate sessions from");
  if (!failures.empty()) report.failed.push_back(failures);

  std::vector<GraduationCandidate> serving;
  for (const RunningPager& pager : *running) {
    auto sessions = pager.client.ListSessions();
    if (!sessions.ok()) {
      report.failed.push_back(pager.version_key + ": list its sessions: " + sessions.status().ToString());
      continue;
    }
    for (const auto& s : *sessions) {
      if (!s.is_object() || s.value("state", "") != "serving") continue;
      serving.push_back(
          {pager.version_key, s.value("session_id", ""), s.value("created_at_unix", int64_t{0}), !pager.own});
      ++report.still_served[pager.version_key];
    }
  }
  const int64_t now_unix =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  const auto now = std::chrono::steady_clock::now();
  std::vector<GraduationCandidate> ready = GraduationOrder(serving, now_unix, options_.soak_age);
  report.soaking = serving.size() - ready.size();
  std::vector<GraduationCandidate> starting;
  for (const GraduationCandidate& c : ready) {
    auto failed = failed_at_.find(NameOf(c));
    if (failed != failed_at_.end() && now - failed->second < options_.retry_backoff) {
      ++report.backing_off;
    } else if (options_.max_per_pass != 0 && starting.size() == options_.max_per_pass) {
      ++report.deferred;
    } else {
      starting.push_back(c);
    }
  }

  // Workers take the next candidate in order until none is left: at most
  // max_concurrent completions at once, started in priority order.
  std::vector<Status> outcome(starting.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < starting.size(); i = next++) {
      PagerClient client(PagerClient::ControlSocketPath(options_.data_dir, starting[i].version_key));
      outcome[i] = client.CompleteSession(starting[i].session_id, options_.complete_timeout);
    }
  };
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < std::min<size_t>(options_.max_concurrent, starting.size()); ++w) workers.emplace_back(work);
  for (auto& worker : workers) worker.join();

  for (size_t i = 0; i < starting.size(); ++i) {
    const std::string name = NameOf(starting[i]);
    if (outcome[i].ok()) {
      report.graduated.push_back(name);
      failed_at_.erase(name);
      if (--report.still_served[starting[i].version_key] == 0) report.still_served.erase(starting[i].version_key);
    } else {
      // The VM stays on its pager; try again after the backoff.
      report.failed.push_back(name + ": " + outcome[i].ToString());
      failed_at_[name] = std::chrono::steady_clock::now();
    }
  }
  return report;
}

}  // namespace uffdpager
