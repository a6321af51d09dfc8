// Pause and resume: a live instance's vCPUs stopped or started again
// through the VMM's API (PATCH /vm), and the state recorded. Asking for the
// state the VM is already in changes nothing.
#include <spdlog/spdlog.h>

#include "common/json_fields.h"
#include "lifecycle/operations.h"

namespace uffdpager::lifecycle {

Status SetPaused(Context& c, InstanceMetadata m, bool paused) {
  const InstanceState wanted = paused ? InstanceState::kPaused : InstanceState::kRunning;
  if ((m.state != InstanceState::kRunning && m.state != InstanceState::kPaused) || !m.vmm) {
    return Status::Conflict("instance " + m.name + " is " + InstanceStateName(m.state) + "; only a live instance is " +
                            (paused ? "paused" : "resumed") + (paused ? "" : " (restore restores one at rest)"));
  }
  if (!m.vmm->process.IsAlive()) {
    return Status::Unavailable("the VMM of " + m.name + " (pid " + std::to_string(m.vmm->process.pid) +
                               ") is gone (stop or delete it)");
  }
  FirecrackerDriver driver(m.vmm->api_socket);
  // The VMM's own word on its state, not only the metadata's.
  std::string vmm_state;
  if (auto info = driver.Describe(); info.ok()) (void)JsonFields(*info).ReadOptional("state", &vmm_state);
  if (m.state == wanted && vmm_state == InstanceStateName(wanted)) return Status::Ok();
  c.Step(std::string(paused ? "pausing " : "resuming ") + m.name);
  UFFD_RETURN_IF_ERROR(paused ? driver.Pause() : driver.Resume());
  m.state = wanted;
  UFFD_RETURN_IF_ERROR(c.store.Save(m));
  spdlog::info("{} {}", paused ? "paused" : "resumed", m.name);
  return Status::Ok();
}

}  // namespace uffdpager::lifecycle
