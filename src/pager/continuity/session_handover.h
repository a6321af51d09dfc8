// Session hand-over: how a newer pager takes the live sessions of an older
// one, so an upgrade need not wait for every VM of the old version to end.
//
// Every pager listens on DATA/uffd/VERSION/handover.sock (SOCK_SEQPACKET,
// mode 0600; only a peer of our own uid, or root, is answered). The
// conversation, one JSON message per packet:
//
//   taker -> giver  {"take_over": "<taker's version key>"}
//   giver -> taker  {"session": <session record>, "fds": ["uffd", ...]}  + those fds (SCM_RIGHTS)
//   taker -> giver  {"adopted": true}  or  {"adopted": false, "error": "..."}
//      ... one exchange per session ...
//   giver -> taker  {"done": true, "sessions": N}
//
// The giver stops taking sessions first (it drains), stops each session's
// thread without closing anything, and sends it; a session the taker refuses,
// or every session left when the taker goes away, the giver serves again.
// The taker wakes every thread on the regions it adopts, so a fault the giver
// had read but not served is raised again, to the taker.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/unique_fd.h"
#include "pager/serving/session_checkpoint.h"
#include "uffdpager/status.h"

namespace uffdpager {

struct HandoverMessage {
  nlohmann::json body;
  std::vector<UniqueFd> fds;
};

// One packet: `body` as JSON with `fds` attached.
Status SendHandoverMessage(int sock, const nlohmann::json& body, std::span<const int> fds = {});
// One packet, waiting at most `timeout`. A packet that is not a JSON object,
// or that was cut short (too long, too many fds), is an error.
Result<HandoverMessage> ReceiveHandoverMessage(int sock, std::chrono::milliseconds timeout);

// The giver's side of one conversation, after the request was read:
// sends each of `sessions` and waits for the taker's answer. `settle` is
// called exactly once per session: with true once the taker has it, with
// false if it refused it or the conversation broke (the giver serves it on).
// Returns how many the taker adopted.
size_t GiveSessions(int conn, std::vector<DetachedSession> sessions,
                    const std::function<void(DetachedSession, bool adopted)>& settle);

// The taker's side: connects to the giver at `giver_socket`, asks for its
// sessions and passes each to `adopt`; what `adopt` returns is the answer
// to the giver. Returns how many were adopted. kNotFound when no pager
// listens there.
Result<size_t> TakeOverSessions(const std::string& giver_socket, const std::string& taker_version,
                                const std::function<Status(DetachedSession)>& adopt);

// Listens on a pager's handover.sock and runs `give` for each taker, one at
// a time, on its own thread.
class HandoverServer {
 public:
  using Giver = std::function<void(UniqueFd conn, const std::string& taker_version)>;
  static Result<std::unique_ptr<HandoverServer>> Start(std::string path, Giver give);
  ~HandoverServer();  // stops the thread, removes the socket

  HandoverServer(const HandoverServer&) = delete;
  HandoverServer& operator=(const HandoverServer&) = delete;

  const std::string& path() const { return path_; }

 private:
  HandoverServer(std::string path, UniqueFd listener, Giver give);
  void Run();

  const std::string path_;
  UniqueFd listener_;
  UniqueFd stop_fd_;  // eventfd
  Giver give_;
  std::thread thread_;
};

}  // namespace uffdpager
