#include "support/child_vmm.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>

#include "common/guest_memory.h"
#include "common/unix_socket.h"
#include "common/wait_for.h"

namespace uffdpager::testing {

namespace {

struct Command {
  char op;  // 'v' verify, 'd' discard, 'x' exit
  uint64_t a;
  uint64_t b;
};

// What the child answers: 0, or an errno (EBADMSG: a page differs).
using Reply = int32_t;

bool WriteAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool ReadAll(int fd, void* data, size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    ssize_t n = ::read(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Connects to `path` from a child that exits at once; the connection stays
// with the caller. SO_PEERCRED of it names the helper's pid, gone by return.
Result<UniqueFd> ConnectFromExitedHelper(const std::string& path) {
  UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock) return Status::FromErrno(errno, "socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), std::min(path.size() + 1, sizeof(addr.sun_path) - 1));
  pid_t helper = ::fork();
  if (helper < 0) return Status::FromErrno(errno, "fork");
  if (helper == 0) {
    ::_exit(::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 ? 0 : errno);
  }
  int status = 0;
  if (::waitpid(helper, &status, 0) != helper) return Status::FromErrno(errno, "waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::FromErrno(WIFEXITED(status) ? WEXITSTATUS(status) : EIO, "connect " + path);
  }
  return sock;
}

// The child keeps only stdio and its two pipes. A fork inherits every fd of
// the test process, CLOEXEC or not: a relay's listening socket or a
// connection the test closes would otherwise stay open in the child.
void CloseAllFdsBut(int a, int b) {
  const unsigned lo = static_cast<unsigned>(std::min(a, b));
  const unsigned hi = static_cast<unsigned>(std::max(a, b));
  if (lo > 3) ::close_range(3, lo - 1, 0);
  if (hi > lo + 1) ::close_range(lo + 1, hi - 1, 0);
  ::close_range(hi + 1, ~0U, 0);
}

// The child: restores, reports, then serves commands until told to exit.
[[noreturn]] void RunChild(const std::string& socket_path, const ChildVmmOptions& options, int commands, int answers) {
  auto reply = [&](Reply r) {
    if (!WriteAll(answers, &r, sizeof(r))) ::_exit(20);
  };
  auto memory = GuestMemory::Allocate(options.regions, options.page_size);
  if (!memory.ok()) {
    reply(memory.status().error_number() ? memory.status().error_number() : EIO);
    ::_exit(21);
  }
  Result<VmmHandshake> handshake = Status::Internal("not performed");
  if (options.connect_from_exited_helper) {
    auto conn = ConnectFromExitedHelper(socket_path);
    handshake = conn.ok() ? PerformVmmHandshakeOn(*memory, std::move(*conn), options.handshake)
                          : Result<VmmHandshake>(conn.status());
  } else {
    handshake = PerformVmmHandshake(*memory, socket_path, options.handshake);
  }
  if (!handshake.ok()) {
    reply(handshake.status().error_number() ? handshake.status().error_number() : EIO);
    ::_exit(22);
  }
  UniqueFd snapshot(::open(options.snapshot_path.c_str(), O_RDONLY | O_CLOEXEC));
  reply(0);
  const uint64_t base = memory->Mappings().front().base_host_virt_addr;
  if (!WriteAll(answers, &base, sizeof(base))) ::_exit(24);
  std::vector<uint8_t> expected(4096);
  for (;;) {
    Command c{};
    if (!ReadAll(commands, &c, sizeof(c))) ::_exit(23);
    switch (c.op) {
      case 'v': {
        const uint8_t* page = memory->AtFileOffset(c.a);
        if (page == nullptr || !snapshot || ::pread(snapshot.get(), expected.data(), 4096, c.a) != 4096) {
          reply(EINVAL);
          break;
        }
        // Read through volatile: every byte is a load the fault must serve.
        bool same = true;
        for (size_t i = 0; i < 4096; ++i) same &= reinterpret_cast<volatile const uint8_t*>(page)[i] == expected[i];
        reply(same ? 0 : EBADMSG);
        break;
      }
      case 'd': {
        uint8_t* at = memory->AtFileOffset(c.a);
        reply(at != nullptr && ::madvise(at, c.b, MADV_DONTNEED) == 0 ? 0 : EINVAL);
        break;
      }
      case 'x': ::_exit(0);
      default: reply(EINVAL);
    }
  }
}

}  // namespace

Result<std::unique_ptr<ChildVmm>> ChildVmm::Start(const std::string& socket_path, ChildVmmOptions options) {
  int to_child[2], from_child[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  if (::pipe2(from_child, O_CLOEXEC) != 0) {
    ::close(to_child[0]);
    ::close(to_child[1]);
    return Status::FromErrno(errno, "pipe");
  }
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    CloseAllFdsBut(to_child[0], from_child[1]);
    RunChild(socket_path, options, to_child[0], from_child[1]);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  std::unique_ptr<ChildVmm> vmm(new ChildVmm(pid, UniqueFd(to_child[1]), UniqueFd(from_child[0])));
  UFFD_RETURN_IF_ERROR(vmm->Answer(std::chrono::seconds(20), "restore through " + socket_path));
  if (!ReadAll(vmm->answers_.get(), &vmm->region_base_, sizeof(vmm->region_base_))) {
    return Status::Unavailable("the VMM did not say where its memory is");
  }
  return vmm;
}

ChildVmm::~ChildVmm() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

Status ChildVmm::Send(char op, uint64_t a, uint64_t b) {
  Command c{op, a, b};
  if (!WriteAll(commands_.get(), &c, sizeof(c))) return Status::FromErrno(errno ? errno : EPIPE, "command the VMM");
  return Status::Ok();
}

Status ChildVmm::Answer(std::chrono::milliseconds timeout, const std::string& what) {
  pollfd p{answers_.get(), POLLIN, 0};
  int rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
  if (rc == 0)
    return Status::Timeout("the VMM did not answer within " + std::to_string(timeout.count()) + " ms: " + what);
  Reply r = 0;
  if (rc < 0 || !ReadAll(answers_.get(), &r, sizeof(r))) return Status::Unavailable("the VMM is gone: " + what);
  if (r == EBADMSG) return Status::Protocol("the VMM read other bytes than the snapshot's: " + what);
  if (r != 0) return Status::FromErrno(r, what);
  return Status::Ok();
}

Status ChildVmm::Verify(uint64_t offset, std::chrono::milliseconds timeout) {
  UFFD_RETURN_IF_ERROR(StartVerify(offset));
  return AwaitVerify(offset, timeout);
}

Status ChildVmm::StartVerify(uint64_t offset) { return Send('v', offset, 0); }

Status ChildVmm::AwaitVerify(uint64_t offset, std::chrono::milliseconds timeout) {
  return Answer(timeout, "verify the page at offset " + std::to_string(offset));
}

Status ChildVmm::Discard(uint64_t offset, uint64_t length, std::chrono::milliseconds timeout) {
  UFFD_RETURN_IF_ERROR(Send('d', offset, length));
  return Answer(timeout, "discard " + std::to_string(length) + " bytes at offset " + std::to_string(offset));
}

Status ChildVmm::Exit() { return Send('x', 0, 0); }

bool ChildVmm::Reap() {
  if (!reaped_ && ::waitpid(pid_, &wait_status_, WNOHANG) == pid_) reaped_ = true;
  return reaped_;
}

bool ChildVmm::WaitForExit(std::chrono::milliseconds timeout, int* wait_status) {
  if (!WaitFor([&] { return Reap(); }, timeout)) return false;
  if (wait_status != nullptr) *wait_status = wait_status_;
  return true;
}

bool ChildVmm::Running() { return !Reap(); }

}  // namespace uffdpager::testing
