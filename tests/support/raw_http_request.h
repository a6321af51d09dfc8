// RawHttpRequest: one HTTP request written by hand to a Unix socket, so that
// no client library normalizes or escapes its path; tests of the control
// socket use it to send exactly the bytes a hostile client would.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <cstdio>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "common/unix_socket.h"

namespace uffdpager::testing {

// The answer's status code (0 if none came within 10 s) and body.
inline std::pair<int, std::string> RawHttpRequest(const std::string& socket_path, const std::string& method,
                                                  const std::string& path) {
  auto conn = ConnectUnixSocket(socket_path);
  EXPECT_TRUE(conn.ok()) << conn.status().ToString();
  if (!conn.ok()) return {0, ""};
  const std::string request =
      method + " " + path + " HTTP/1.1\r\nHost: pager\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  EXPECT_EQ(::send(conn->get(), request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  std::string answer;
  char buf[4096];
  for (;;) {
    pollfd p{conn->get(), POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) break;
    ssize_t n = ::recv(conn->get(), buf, sizeof(buf), 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  (void)std::sscanf(answer.c_str(), "HTTP/1.1 %d", &status);
  const size_t body = answer.find("\r\n\r\n");
  return {status, body == std::string::npos ? "" : answer.substr(body + 4)};
}

}  // namespace uffdpager::testing
