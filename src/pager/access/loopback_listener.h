// ListenOnLoopback: a TCP listening socket for --metrics-addr, refused
// unless the address is a loopback one. Metrics name cache keys (snapshot
// paths, tenant names): they stay on the host, where a local Prometheus
// agent or node exporter scrapes them.
#pragma once

#include <string>

#include "common/unique_fd.h"
#include "uffdpager/status.h"

namespace uffdpager {

struct LoopbackListener {
  UniqueFd fd;
  std::string address;  // as bound, with the real port: "127.0.0.1:9464", "[::1]:9464"
};

// `address` is HOST:PORT with HOST one of 127.x.y.z, localhost, ::1 (in
// brackets: "[::1]:9464"); port 0 picks a free port.
Result<LoopbackListener> ListenOnLoopback(const std::string& address);

}  // namespace uffdpager
