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

// What one connection handed over. Every received fd is owned here, so a
// refused handshake closes them all.
struct ReceivedHandshake {
  std::string payload;
  std::vector<UniqueFd> fds;
  // Fds were sent that never arrived (MSG_CTRUNC): more than a read takes,
  // or the receiving process had no fd number left for them (EMFILE).
  bool control_truncated = false;
  bool peer_closed = false;
};

// Gathers one handshake from a connected socket as its bytes arrive,
// without ever blocking, so one thread can read several connections at once.
// Firecracker sends the handshake in one sendmsg, but a stream may split it.
class HandshakeReceiver {
 public:
  // More fds than this in one read count as too many (MSG_CTRUNC).
  static constexpr size_t kMaxFds = 8;

  explicit HandshakeReceiver(size_t max_bytes) : max_bytes_(max_bytes) {}

  // Reads what `sock` holds now. True once the handshake is whole: the
  // payload is complete JSON, the peer closed, or more than `max_bytes`
  // arrived. Fails only if recvmsg does.
  Result<bool> ReadAvailable(int sock);

  // Bytes or fds arrived, or the peer closed.
  bool started() const { return started_; }
  bool too_large() const { return received_.payload.size() > max_bytes_; }
  const ReceivedHandshake& received() const { return received_; }
  ReceivedHandshake Take() { return std::move(received_); }

 private:
  size_t max_bytes_;
  bool started_ = false;
  ReceivedHandshake received_;
};

// OK if `received` carries exactly one fd; otherwise why not, in the words an
// operator needs: an fd the kernel could not give this process names EMFILE
// and the process's limit of open files.
Status CheckHandshakeFds(const ReceivedHandshake& received);

}  // namespace uffdpager
