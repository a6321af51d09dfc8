#include "pager/continuity/session_handover.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/json_fields.h"
#include "common/uffd_handshake.h"
#include "common/unix_socket.h"
#include "pager/continuity/session_record.h"

namespace uffdpager {

namespace {

// A record is small, but a VM whose balloon discarded memory in many pieces
// has one entry per piece.
constexpr size_t kMaxMessageBytes = 4 << 20;
constexpr size_t kMaxMessageFds = 8;
// How long either side waits for the other's next message. Detaching and
// adopting a session takes milliseconds; this only bounds a stuck peer.
constexpr auto kReplyTimeout = std::chrono::seconds(30);

// Lets one packet hold kMaxMessageBytes (as root past net.core.wmem_max).
void AllowLargePackets(int sock) {
  int size = static_cast<int>(kMaxMessageBytes + (64 << 10));
  if (::setsockopt(sock, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) != 0) {
    (void)::setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  }
  if (::setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) != 0) {
    (void)::setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  }
}

std::vector<SessionFdRole> RolesPresent(DetachedSession& session) {
  std::vector<SessionFdRole> roles;
  for (SessionFdRole role : kAllSessionFdRoles) {
    if (FdForRole(session.fds, role)) roles.push_back(role);
  }
  return roles;
}

Status SendSession(int conn, DetachedSession& session) {
  nlohmann::json names = nlohmann::json::array();
  std::vector<int> fds;
  for (SessionFdRole role : RolesPresent(session)) {
    names.push_back(SessionFdRoleName(role));
    fds.push_back(FdForRole(session.fds, role).get());
  }
  return SendHandoverMessage(conn, {{"session", SessionRecordJson(session.checkpoint)}, {"fds", std::move(names)}},
                             fds);
}

// A message without the fields it must have: the other pager broke the protocol.
Status Malformed(const Status& st) { return Status::Protocol("malformed hand-over message: " + st.message()); }

Result<DetachedSession> ParseSession(HandoverMessage message) {
  JsonFields fields(message.body);
  nlohmann::json session;
  if (Status st = fields.Read("session", &session); !st.ok()) return Malformed(st);
  auto record = ParseSessionRecord(session);
  if (!record.ok()) return record.status();
  DetachedSession out{std::move(*record), {}};
  std::vector<std::string> names;
  if (Status st = fields.ReadOptional("fds", &names); !st.ok()) return Malformed(st);
  if (names.size() != message.fds.size()) {
    return Status::Protocol(
        fmt::format("hand-over message names {} fds but carries {}", names.size(), message.fds.size()));
  }
  for (size_t i = 0; i < names.size(); ++i) {
    bool known = false;
    for (SessionFdRole role : kAllSessionFdRoles) {
      if (names[i] == SessionFdRoleName(role)) {
        FdForRole(out.fds, role) = std::move(message.fds[i]);
        known = true;
      }
    }
    if (!known) return Status::Protocol("hand-over message carries an fd of unknown role \"" + names[i] + "\"");
  }
  return out;
}

// Whether the taker's answer says it adopted the session; if not, why not.
bool Adopted(const nlohmann::json& answer, std::string* why_not) {
  JsonFields fields(answer);
  bool adopted = false;
  std::string error = "?";
  Status read = fields.ReadOptional("adopted", &adopted);
  if (read.ok() && !adopted) read = fields.ReadOptional("error", &error);
  if (!read.ok()) {
    *why_not = Malformed(read).message();
    return false;
  }
  *why_not = std::move(error);
  return adopted;
}

}  // namespace

Status SendHandoverMessage(int sock, const nlohmann::json& body, std::span<const int> fds) {
  std::string text = body.dump();
  if (text.size() > kMaxMessageBytes) {
    return Status::InvalidArgument(
        fmt::format("hand-over message of {} bytes is over the {} byte limit", text.size(), kMaxMessageBytes));
  }
  return SendWithFds(sock, text, fds).WithContext("send hand-over message");
}

Result<HandoverMessage> ReceiveHandoverMessage(int sock, std::chrono::milliseconds timeout) {
  auto readable = WaitReadable(sock, std::chrono::steady_clock::now() + timeout);
  if (!readable.ok()) return readable.status().WithContext("hand-over socket");
  if (!*readable) return Status::Timeout(fmt::format("no hand-over message within {} ms", timeout.count()));
  std::string buffer(kMaxMessageBytes, '\0');
  iovec iov{buffer.data(), buffer.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxMessageFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Status::FromErrno(errno, "receive hand-over message");
  HandoverMessage out;
  TakeReceivedFds(&msg, &out.fds);
  if (n == 0) return Status::Unavailable("the other pager closed the hand-over connection");
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return Status::Protocol("hand-over message cut short");
  out.body = nlohmann::json::parse(buffer.data(), buffer.data() + n, nullptr, /*allow_exceptions=*/false);
  if (!out.body.is_object()) return Status::Protocol("hand-over message is not a JSON object");
  return out;
}

size_t GiveSessions(int conn, std::vector<DetachedSession> sessions,
                    const std::function<void(DetachedSession, bool adopted)>& settle) {
  AllowLargePackets(conn);
  size_t adopted = 0;
  bool broken = false;
  for (auto& session : sessions) {
    if (broken) {
      settle(std::move(session), false);
      continue;
    }
    const std::string id = session.checkpoint.spec.id;
    Status sent = SendSession(conn, session);
    if (!sent.ok()) {
      spdlog::error("hand-over of session {}: {}", id, sent.ToString());
      // Too large or otherwise unsendable: this one stays; a broken
      // connection means none of the rest can go either.
      broken = sent.code() != ErrorCode::kInvalidArgument;
      settle(std::move(session), false);
      continue;
    }
    auto answer = ReceiveHandoverMessage(conn, kReplyTimeout);
    if (!answer.ok()) {
      // We cannot know whether the taker serves it now; it is gone or stuck,
      // so serving it again here is what keeps the VM alive.
      spdlog::error("hand-over of session {}: no answer from the taker: {}", id, answer.status().ToString());
      broken = true;
      settle(std::move(session), false);
      continue;
    }
    std::string why_not;
    bool ok = Adopted(answer->body, &why_not);
    if (!ok) {
      spdlog::warn("hand-over of session {}: the taker refused it: {}", id, why_not);
    } else {
      ++adopted;
    }
    settle(std::move(session), ok);
  }
  if (!broken) {
    Status done = SendHandoverMessage(conn, {{"done", true}, {"sessions", adopted}});
    if (!done.ok()) spdlog::warn("hand-over: {}", done.ToString());
  }
  return adopted;
}

Result<size_t> TakeOverSessions(const std::string& giver_socket, const std::string& taker_version,
                                const std::function<Status(DetachedSession)>& adopt) {
  auto conn = ConnectUnixSocket(giver_socket, SOCK_SEQPACKET);
  if (!conn.ok()) {
    if (conn.status().error_number() == ENOENT || conn.status().error_number() == ECONNREFUSED) {
      return Status::NotFound("no pager listens on " + giver_socket);
    }
    return conn.status();
  }
  AllowLargePackets(conn->get());
  UFFD_RETURN_IF_ERROR(SendHandoverMessage(conn->get(), {{"take_over", taker_version}}));
  size_t adopted = 0;
  for (;;) {
    auto message = ReceiveHandoverMessage(conn->get(), kReplyTimeout);
    if (!message.ok()) return message.status().WithContext(fmt::format("after taking {} sessions", adopted));
    JsonFields fields(message->body);
    bool done = false;
    if (Status st = fields.ReadOptional("done", &done); !st.ok()) return Malformed(st);
    if (done) return adopted;
    if (fields.Has("error")) {
      std::string refusal;
      if (Status st = fields.Read("error", &refusal); !st.ok()) return Malformed(st);
      return Status::Unavailable("the pager at " + giver_socket + " refused: " + refusal);
    }
    auto session = ParseSession(std::move(*message));
    Status result = session.ok() ? adopt(std::move(*session)) : session.status();
    nlohmann::json answer = {{"adopted", result.ok()}};
    if (!result.ok()) answer["error"] = result.ToString();
    adopted += result.ok() ? 1 : 0;
    UFFD_RETURN_IF_ERROR(SendHandoverMessage(conn->get(), answer));
  }
}

HandoverServer::HandoverServer(std::string path, UniqueFd listener, Giver give)
    : path_(std::move(path)), listener_(std::move(listener)), give_(std::move(give)) {}

Result<std::unique_ptr<HandoverServer>> HandoverServer::Start(std::string path, Giver give) {
  auto listener = ListenUnixSocket(path, 0600, 4, SOCK_SEQPACKET);
  if (!listener.ok()) return listener.status();
  std::unique_ptr<HandoverServer> server(new HandoverServer(std::move(path), std::move(*listener), std::move(give)));
  server->stop_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!server->stop_fd_) return Status::FromErrno(errno, "eventfd");
  server->thread_ = std::thread([s = server.get()] {
    (void)::pthread_setname_np(::pthread_self(), "handover");
    s->Run();
  });
  return server;
}

HandoverServer::~HandoverServer() {
  uint64_t one = 1;
  if (stop_fd_) (void)!::write(stop_fd_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  (void)RemoveSocketFile(path_);
}

void HandoverServer::Run() {
  for (;;) {
    pollfd pfds[2] = {{listener_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (::poll(pfds, 2, -1) < 0 && errno != EINTR) {
      spdlog::error("hand-over socket {}: poll failed: errno {}", path_, errno);
      return;
    }
    if (pfds[1].revents & POLLIN) return;
    if (!(pfds[0].revents & POLLIN)) continue;
    UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) continue;
    auto peer = GetPeerCredentials(conn.get());
    if (!peer.ok() || (peer->uid != ::geteuid() && peer->uid != 0)) {
      spdlog::warn("hand-over socket: refused a peer (uid {})", peer.ok() ? static_cast<int64_t>(peer->uid) : -1);
      (void)SendHandoverMessage(conn.get(), {{"error", "only the pager's own user may take its sessions"}});
      continue;
    }
    auto request = ReceiveHandoverMessage(conn.get(), std::chrono::seconds(5));
    std::string taker;
    if (!request.ok() || !JsonFields(request->body).Read("take_over", &taker).ok()) {
      spdlog::warn("hand-over socket: ignored a malformed request from pid {}: {}", peer->pid,
                   request.ok() ? request->body.dump() : request.status().ToString());
      (void)SendHandoverMessage(conn.get(), {{"error", "expected {\"take_over\": \"<version key>\"}"}});
      continue;
    }
    spdlog::info("hand-over: pager version {} (pid {}) takes over our sessions", taker, peer->pid);
    give_(std::move(conn), taker);
  }
}

}  // namespace uffdpager
