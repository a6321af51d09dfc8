// TcpRelay: a TCP relay on 127.0.0.1 between clients and one target port,
// for tests and benchmarks of the object store client. It forwards bytes
// both ways, holding each segment it reads for `delay` before passing it on
// (added latency without netem, which this kernel lacks), and can be cut:
// every connection closed and new ones refused, as when a store goes away.
//
// Thread-safety: Cut, counters and the destructor are safe from any thread;
// the relay runs on a thread of its own.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>

#include "common/unique_fd.h"
#include "uffdpager/status.h"

namespace uffdpager::testing {

class TcpRelay {
 public:
  // Listens on 127.0.0.1 (a port the kernel picks) and relays to
  // 127.0.0.1:target_port.
  static Result<std::unique_ptr<TcpRelay>> Start(uint16_t target_port,
                                                 std::chrono::microseconds delay = std::chrono::microseconds(0));
  ~TcpRelay();
  TcpRelay(const TcpRelay&) = delete;
  TcpRelay& operator=(const TcpRelay&) = delete;

  uint16_t port() const { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // Closes every relayed connection (with a reset) and the listening socket:
  // from now on connecting to port() is refused. Idempotent.
  void Cut();
  // After a Cut, listens on port() again, as a store that comes back.
  // REQUIRES: Cut returned.
  Status Mend();

  uint64_t connections_accepted() const { return accepted_.load(); }

 private:
  TcpRelay(UniqueFd listener, uint16_t port, uint16_t target_port, std::chrono::microseconds delay);
  // A listening socket on 127.0.0.1:port (0: the kernel picks).
  static Result<UniqueFd> Listen(uint16_t port);
  void Run();

  UniqueFd listener_;  // the relay thread's once started
  const uint16_t port_;
  const uint16_t target_port_;
  const std::chrono::microseconds delay_;
  UniqueFd wake_;  // eventfd: Cut and the destructor wake the loop
  std::atomic<bool> cut_{false};
  std::atomic<bool> cut_done_{false};
  std::atomic<bool> stop_{false};
  std::atomic<bool> mend_{false};       // Mend asks the loop to listen again
  std::atomic<bool> mend_done_{false};  // ... and it has; mend_status_ says how
  Status mend_status_;                  // written by the loop before mend_done_
  std::atomic<uint64_t> accepted_{0};
  std::thread thread_;
};

}  // namespace uffdpager::testing
