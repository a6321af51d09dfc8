#include "pager/access/loopback_listener.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <charconv>
#include <cstring>

namespace uffdpager {

namespace {

// HOST and PORT of "HOST:PORT" / "[HOST]:PORT".
Result<std::pair<std::string, uint16_t>> SplitHostPort(const std::string& address) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return Status::InvalidArgument("--metrics-addr \"" + address + "\" must be HOST:PORT");
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::string port_text = address.substr(colon + 1);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535) {
    return Status::InvalidArgument("--metrics-addr \"" + address + "\": port must be 0 to 65535");
  }
  return std::make_pair(host == "localhost" ? "127.0.0.1" : host, static_cast<uint16_t>(port));
}

}  // namespace

Result<LoopbackListener> ListenOnLoopback(const std::string& address) {
  auto split = SplitHostPort(address);
  if (!split.ok()) return split.status();
  const auto& [host, port] = *split;
  sockaddr_storage storage{};
  socklen_t length = 0;
  int family = AF_INET;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127) {
      return Status::InvalidArgument("--metrics-addr " + address + " is not a loopback address (127.0.0.0/8, ::1)");
    }
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    length = sizeof(sockaddr_in);
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) {
      return Status::InvalidArgument("--metrics-addr " + address + " is not a loopback address (127.0.0.0/8, ::1)");
    }
    family = AF_INET6;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    length = sizeof(sockaddr_in6);
  } else {
    return Status::InvalidArgument("--metrics-addr " + address +
                                   ": host must be a loopback IP address or localhost (names are not resolved)");
  }
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Status::FromErrno(errno, "socket for --metrics-addr");
  int one = 1;
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), length) != 0) {
    return Status::FromErrno(errno, "bind --metrics-addr " + address);
  }
  if (::listen(fd.get(), 16) != 0) return Status::FromErrno(errno, "listen on --metrics-addr " + address);
  socklen_t bound_length = length;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&storage), &bound_length) != 0) {
    return Status::FromErrno(errno, "getsockname --metrics-addr");
  }
  uint16_t bound_port = ntohs(family == AF_INET ? v4->sin_port : v6->sin6_port);
  std::string bound =
      family == AF_INET ? fmt::format("{}:{}", host, bound_port) : fmt::format("[{}]:{}", host, bound_port);
  return LoopbackListener{std::move(fd), std::move(bound)};
}

}  // namespace uffdpager
