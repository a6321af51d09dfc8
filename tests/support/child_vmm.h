// ChildVmm: the Firecracker stand-in in a process of its own, for tests in
// which the VMM must really block on a fault, be killed, or exit. It restores
// through a session socket exactly as VmmStandIn does, then does what the
// test asks, one command at a time: check a page against the snapshot,
// discard a range, exit.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "common/vmm_handshake.h"
#include "uffdpager/status.h"

namespace uffdpager::testing {

struct ChildVmmOptions {
  std::vector<uint64_t> regions;
  uint64_t page_size = 4096;
  VmmHandshakeOptions handshake;
  // The memory file the session serves, which Verify compares pages with.
  std::string snapshot_path;
  // Connect from a helper process that has exited (and been reaped) before
  // the handshake is sent: SO_PEERCRED then names a pid that is gone, so the
  // pager cannot open a pidfd on its VMM.
  bool connect_from_exited_helper = false;
};

class ChildVmm {
 public:
  // Forks the VMM and waits until its handshake is sent.
  static Result<std::unique_ptr<ChildVmm>> Start(const std::string& socket_path, ChildVmmOptions options);
  ~ChildVmm();  // kills and reaps the child if it is still there

  ChildVmm(const ChildVmm&) = delete;
  ChildVmm& operator=(const ChildVmm&) = delete;

  pid_t pid() const { return pid_; }
  // Where the first region's memory is in the child's address space.
  uint64_t region_base() const { return region_base_; }

  // Reads the 4 KiB page at memory-file offset `offset` (faulting it in) and
  // compares it with the snapshot: OK if every byte matches. kTimeout if the
  // child does not answer within `timeout`: it is blocked on the fault, and
  // every later command waits behind it.
  Status Verify(uint64_t offset, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Sends a Verify without waiting for its answer (for a touch that blocks).
  Status StartVerify(uint64_t offset);
  // The answer to the StartVerify(offset) before it, as Verify reports it.
  Status AwaitVerify(uint64_t offset, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // madvise(MADV_DONTNEED) of [offset, offset + length) of the memory file's layout.
  Status Discard(uint64_t offset, uint64_t length, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Asks the child to exit with status 0.
  Status Exit();
  // True once the child has exited (it is reaped then), with its wait status.
  bool WaitForExit(std::chrono::milliseconds timeout, int* wait_status = nullptr);
  // True while the child exists and has not exited.
  bool Running();

 private:
  ChildVmm(pid_t pid, UniqueFd commands, UniqueFd answers)
      : pid_(pid), commands_(std::move(commands)), answers_(std::move(answers)) {}
  Status Send(char op, uint64_t a, uint64_t b);
  Status Answer(std::chrono::milliseconds timeout, const std::string& what);

  // Reaps the child if it has exited; true if it has (then wait_status_ is set).
  bool Reap();

  pid_t pid_;
  bool reaped_ = false;
  int wait_status_ = 0;
  uint64_t region_base_ = 0;
  UniqueFd commands_;
  UniqueFd answers_;
};

}  // namespace uffdpager::testing
