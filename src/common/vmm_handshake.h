// The VMM's half of the UFFD handshake, done exactly as Firecracker does it:
// create the userfaultfd through /dev/userfaultfd with O_CLOEXEC|O_NONBLOCK,
// ask UFFDIO_API for UFFD_FEATURE_EVENT_REMOVE only, register every region in
// MISSING mode, connect (blocking) to the page server's socket and send one
// message. Used by tinyvmm and by the tests' Firecracker stand-in.
#pragma once

#include <cstdint>
#include <string>

#include "common/guest_memory.h"
#include "common/unique_fd.h"
#include "common/userfaultfd.h"

namespace uffdpager {

struct VmmHandshakeOptions {
  HandshakeDialect dialect = HandshakeDialect::kV1_12;
  // Firecracker before 1.12 closed its end right after sending; 1.12+ keeps it.
  bool keep_socket_open = true;
  // Only for tests that play a VMM breaking the handshake's promises (the
  // page server must notice, not spin): the features asked of UFFDIO_API,
  // and a page size the payload claims instead of the memory's own (0: the
  // truth).
  uint64_t uffd_features = UFFD_FEATURE_EVENT_REMOVE;
  uint64_t claimed_page_size = 0;
};

// What the VMM keeps after the handshake: its own copy of the uffd (it always
// holds one) and, for 1.12+, the connection.
struct VmmHandshake {
  Userfaultfd uffd;
  UniqueFd connection;
};

Result<VmmHandshake> PerformVmmHandshake(const GuestMemory& memory, const std::string& socket_path,
                                         const VmmHandshakeOptions& options);
// The same on a connection made already (by this process or another).
Result<VmmHandshake> PerformVmmHandshakeOn(const GuestMemory& memory, UniqueFd connection,
                                           const VmmHandshakeOptions& options);

}  // namespace uffdpager
