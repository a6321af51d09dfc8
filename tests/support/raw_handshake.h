// Hand-made UFFD handshakes: a registered userfaultfd with memory behind it
// (SpareUffd) to send with any payload, and SendRawHandshake, which sends one
// to a session socket and waits for the pager's verdict.
#pragma once

#include <fcntl.h>
#include <linux/userfaultfd.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/guest_memory.h"
#include "common/uffd_handshake.h"
#include "common/unix_socket.h"
#include "common/userfaultfd.h"
#include "support/pager_process.h"

namespace uffdpager::testing {

// A userfaultfd, negotiated as a VMM does, and memory of `regions` sizes
// (not registered with it: for handshakes the pager must refuse).
struct SpareUffd {
  GuestMemory memory;
  Userfaultfd uffd;
  static SpareUffd Make(const std::vector<uint64_t>& regions = {8ULL << 20, 4ULL << 20}) {
    auto mem = GuestMemory::Allocate(regions, 4096);
    auto u = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
    EXPECT_TRUE(mem.ok() && u.ok());
    EXPECT_TRUE(u->NegotiateApi(UFFD_FEATURE_EVENT_REMOVE).ok());
    return SpareUffd{std::move(*mem), std::move(*u)};
  }
};

// Sends `payload` with `fds` over a new connection to the socket of session
// `id`, waits until the pager has judged it (the session no longer
// waiting) and returns the session's description.
inline nlohmann::json SendRawHandshake(const TestPager& pager, const std::string& id, const std::string& socket_path,
                                       const std::string& payload, const std::vector<int>& fds) {
  auto conn = ConnectUnixSocket(socket_path);
  EXPECT_TRUE(conn.ok()) << conn.status().ToString();
  if (!conn.ok()) return {};
  EXPECT_TRUE(SendWithFds(conn->get(), payload, fds).ok());
  auto state = [&] {
    auto s = pager.client().GetSession(id);
    return s.ok() ? s->value("state", "?") : "?";
  };
  EXPECT_TRUE(WaitFor([&] { return state() != "waiting"; })) << "handshake was never judged";
  auto s = pager.client().GetSession(id);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? *s : nlohmann::json::object();
}

}  // namespace uffdpager::testing
