// The UFFD handshake between a VMM and its page server, as Firecracker
// (1.1 to 1.16) performs it: ONE sendmsg on a SOCK_STREAM Unix socket whose
// payload is a compact bare JSON array of guest memory regions, with one
// SCM_RIGHTS control message carrying the userfaultfd. No length prefix, no
// newline, no reply.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "uffdpager/status.h"

namespace uffdpager {

// One guest memory region: where it is in the VMM's address space and where
// its bytes are in the memory file.
struct GuestRegionMapping {
  uint64_t base_host_virt_addr = 0;
  uint64_t size = 0;
  uint64_t offset = 0;        // position in the memory file
  uint64_t page_size = 4096;  // bytes

  uint64_t end_addr() const { return base_host_virt_addr + size; }
  bool operator==(const GuestRegionMapping&) const = default;
};

// Which Firecracker generation's field set to write.
enum class HandshakeDialect {
  kV1_1,   // before 1.7: no page-size field
  kV1_7,   // 1.7 to 1.11: only page_size_kib (which holds bytes)
  kV1_12,  // 1.12 and later: page_size and page_size_kib
};

struct HandshakeLimits {
  size_t max_regions = 64;
  size_t max_message_bytes = 64 * 1024;
};

// Writes the payload exactly as Firecracker does: fields in the order
// base_host_virt_addr, size, offset, page_size, page_size_kib; no spaces.
std::string SerializeHandshake(const std::vector<GuestRegionMapping>& regions, HandshakeDialect dialect);

// Parses and structurally validates a payload: a bare array or an object
// {"mappings": [...]}; unknown fields ignored; page size from page_size,
// else page_size_kib (bytes), else 4 KiB. Rejects: empty or too many regions,
// non-power-of-two page size, unaligned or zero-sized regions, arithmetic
// overflow, overlapping addresses, overlapping file ranges.
Result<std::vector<GuestRegionMapping>> ParseHandshake(std::string_view payload, const HandshakeLimits& limits);

// Sends `payload` with `fds` in one SCM_RIGHTS message, in one sendmsg.
Status SendWithFds(int sock, std::string_view payload, std::span<const int> fds);

// Waits until `sock` is readable or `deadline` passes (EINTR retried with
// the time left). Returns false on timeout; fails with kUnavailable if
// `cancel_fd` (optional, -1: none) became readable first.
Result<bool> WaitReadable(int sock, std::chrono::steady_clock::time_point deadline, int cancel_fd = -1);

// Takes ownership of every fd that the SCM_RIGHTS messages of a received
// `msg` carry (msghdr from recvmsg, which should use MSG_CMSG_CLOEXEC).
void TakeReceivedFds(msghdr* msg, std::vector<UniqueFd>* out);

// What one handshake read produced. Every received fd is owned here, so a
// refused handshake closes them all.
struct ReceivedHandshake {
  std::string payload;
  std::vector<UniqueFd> fds;
  bool control_truncated = false;  // the peer sent more fds than we accept
};

// Reads one handshake from a connected socket: waits up to `timeout` for the
// first bytes, then gathers the rest of a message the stream split, until the
// payload is complete JSON, the peer stops sending, or `max_bytes` is passed.
// If `cancel_fd` (optional) becomes readable, gives up with kUnavailable.
Result<ReceivedHandshake> ReceiveHandshake(int sock, size_t max_bytes, std::chrono::milliseconds timeout,
                                           int cancel_fd = -1);

}  // namespace uffdpager
