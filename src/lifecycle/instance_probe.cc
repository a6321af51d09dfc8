// Probe: the state an instance is really in. Metadata says what the last
// command did; a live instance is only reported Running or Paused when its
// VMM process (same pid and start time) is alive, its API answers with that
// state and reports no stall, and — for a UFFD-restored VM — the pager
// session that serves its memory is healthy. Anything else is Unknown, with
// the reason.
#include "common/json_fields.h"
#include "lifecycle/operations.h"

namespace uffdpager::lifecycle {

nlohmann::json StatusDetails(const InstanceMetadata& m) {
  nlohmann::json j = m.ToJson();
  j["chain_depth"] = m.ChainDepth();
  j["depends_on_pager"] = m.ServedByPager() || m.RestoreNeedsPager();
  return j;
}

InstanceStatus ProbeInstance(Context& c, const InstanceMetadata& m) {
  InstanceStatus s;
  s.name = m.name;
  s.state = m.state;
  s.details = StatusDetails(m);
  // A compaction in flight over the snapshot's chain: it moves the instance
  // onto `blob` when it commits, if the chain is still the same then.
  if (auto pending = c.compactions.Pending(); pending.ok() && m.snapshot) {
    for (const auto& r : pending->records) {
      if (r.chain != m.snapshot->memory_layers) continue;
      s.details["compaction"] = {{"blob", r.blob}, {"merged", r.merged}, {"compactor_pid", r.compactor.pid}};
    }
  }
  auto unknown = [&](std::string reason) {
    s.state = InstanceState::kUnknown;
    s.reason = std::move(reason);
    return s;
  };
  if (m.state != InstanceState::kRunning && m.state != InstanceState::kPaused) return s;
  if (!m.vmm) return unknown("recorded as " + std::string(InstanceStateName(m.state)) + " without a VMM");
  if (!m.vmm->process.IsAlive()) {
    return unknown("VMM process " + std::to_string(m.vmm->process.pid) + " is gone");
  }
  auto info = FirecrackerDriver(m.vmm->api_socket).Describe();
  if (!info.ok()) return unknown("VMM API not answering: " + info.status().ToString());
  s.details["vmm_info"] = *info;
  JsonFields fields(*info);
  bool stalled = false;
  std::string stall_reason;
  std::string vmm_state;
  Status read = fields.ReadOptional("stalled", &stalled);
  if (read.ok()) read = fields.ReadOptional("stall_reason", &stall_reason);
  if (read.ok()) read = fields.ReadOptional("state", &vmm_state);
  if (!read.ok()) return unknown("VMM API answered GET / oddly: " + read.message());
  if (stalled) return unknown("VMM reports a stall: " + stall_reason);
  if (vmm_state == "Running") {
    s.state = InstanceState::kRunning;
  } else if (vmm_state == "Paused") {
    s.state = InstanceState::kPaused;
  } else {
    return unknown("VMM reports state \"" + vmm_state + "\"");
  }
  if (m.vmm->memory_source == MemorySource::kUffd) {
    std::string problem = c.pager.SessionProblem(m.vmm->pager_session);
    if (!problem.empty()) return unknown(problem);
  }
  return s;
}

}  // namespace uffdpager::lifecycle
