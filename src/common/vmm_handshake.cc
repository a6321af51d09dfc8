#include "common/vmm_handshake.h"

#include <fcntl.h>

#include "common/unix_socket.h"

namespace uffdpager {

namespace {

// The userfaultfd with every region registered, as Firecracker makes it
// before it connects.
Result<Userfaultfd> RegisterMemory(const GuestMemory& memory, const VmmHandshakeOptions& options) {
  auto uffd = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
  if (!uffd.ok()) return uffd.status();
  auto api = uffd->NegotiateApi(options.uffd_features);
  if (!api.ok()) return api.status();
  for (const auto& m : memory.Mappings()) {
    auto reg = uffd->RegisterMissing(m.base_host_virt_addr, m.size);
    if (!reg.ok()) return reg.status();
  }
  return uffd;
}

Result<VmmHandshake> SendHandshake(const GuestMemory& memory, Userfaultfd uffd, UniqueFd conn,
                                   const VmmHandshakeOptions& options) {
  auto mappings = memory.Mappings();
  if (options.claimed_page_size != 0) {
    for (auto& m : mappings) m.page_size = options.claimed_page_size;
  }
  int fds[] = {uffd.fd()};
  UFFD_RETURN_IF_ERROR(SendWithFds(conn.get(), SerializeHandshake(mappings, options.dialect), fds));
  VmmHandshake out{std::move(uffd), {}};
  if (options.keep_socket_open) out.connection = std::move(conn);
  return out;
}

}  // namespace

Result<VmmHandshake> PerformVmmHandshake(const GuestMemory& memory, const std::string& socket_path,
                                         const VmmHandshakeOptions& options) {
  auto uffd = RegisterMemory(memory, options);
  if (!uffd.ok()) return uffd.status();
  auto conn = ConnectUnixSocket(socket_path);
  if (!conn.ok()) return conn.status();
  return SendHandshake(memory, std::move(*uffd), std::move(*conn), options);
}

Result<VmmHandshake> PerformVmmHandshakeOn(const GuestMemory& memory, UniqueFd connection,
                                           const VmmHandshakeOptions& options) {
  auto uffd = RegisterMemory(memory, options);
  if (!uffd.ok()) return uffd.status();
  return SendHandshake(memory, std::move(*uffd), std::move(connection), options);
}

}  // namespace uffdpager
