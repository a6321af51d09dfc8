// FirecrackerApi: the subset of Firecracker's HTTP API (v1.16.1 schema) that
// the snapshot lifecycle uses, with Firecracker's request and response
// shapes and its errors: 400 with {"fault_message": ...}, bodies parsed as
// strictly as Firecracker's serde structs (unknown fields refused, required
// fields required, enums spelled exactly).
//
//   GET  /                  InstanceInfo (+ "stalled", "stall_reason")
//   GET  /version           FirecrackerVersion
//   GET  /machine-config    MachineConfiguration
//   PUT  /machine-config    vcpu_count, mem_size_mib, smt, track_dirty_pages, huge_pages, cpu_template
//   PUT  /actions           InstanceStart (FlushMetrics accepted as a no-op)
//   PATCH /vm               Paused / Resumed
//   PUT  /snapshot/create   snapshot_type Full/Diff, snapshot_path, mem_file_path
//   PUT  /snapshot/load     snapshot_path, mem_backend{File,Uffd}|mem_file_path, track_dirty_pages,
//                           enable_diff_snapshots, resume_vm
//   GET  /tinyvmm/guest     tinyvmm's own: per-vCPU step, checksum, state
#pragma once

#include "common/http_message.h"
#include "vmm/vmm_controller.h"

namespace uffdpager::vmm {

class FirecrackerApi {
 public:
  explicit FirecrackerApi(VmmController& controller) : controller_(controller) {}

  HttpResponse Handle(const HttpRequest& request);

  // {"fault_message": message}
  static std::string FaultBody(const std::string& message);

 private:
  VmmController& controller_;
};

}  // namespace uffdpager::vmm
