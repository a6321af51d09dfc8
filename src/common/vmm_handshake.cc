#include "common/vmm_handshake.h"

#include <fcntl.h>

#include "common/unix_socket.h"

namespace uffdpager {

Result<VmmHandshake> PerformVmmHandshake(const GuestMemory& memory, const std::string& socket_path,
                                         const VmmHandshakeOptions& options) {
  auto uffd = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
  if (!uffd.ok()) return uffd.status();
  auto api = uffd->NegotiateApi(UFFD_FEATURE_EVENT_REMOVE);
  if (!api.ok()) return api.status();
  auto mappings = memory.Mappings();
  for (const auto& m : mappings) {
    auto reg = uffd->RegisterMissing(m.base_host_virt_addr, m.size);
    if (!reg.ok()) return reg.status();
  }
  auto conn = ConnectUnixSocket(socket_path);
  if (!conn.ok()) return conn.status();
  int fds[] = {uffd->fd()};
  UFFD_RETURN_IF_ERROR(SendWithFds(conn->get(), SerializeHandshake(mappings, options.dialect), fds));
  VmmHandshake out{std::move(*uffd), {}};
  if (options.keep_socket_open) out.connection = std::move(*conn);
  return out;
}

}  // namespace uffdpager
