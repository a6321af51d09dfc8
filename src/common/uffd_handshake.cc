#include "common/uffd_handshake.h"

#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "common/json_fields.h"

namespace uffdpager {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string SerializeHandshake(const std::vector<GuestRegionMapping>& regions, HandshakeDialect dialect) {
  std::string out = "[";
  for (size_t i = 0; i < regions.size(); ++i) {
    const auto& r = regions[i];
    if (i > 0) out += ',';
    out += fmt::format(R"({{"base_host_virt_addr":{},"size":{},"offset":{})", r.base_host_virt_addr, r.size, r.offset);
    if (dialect == HandshakeDialect::kV1_12) out += fmt::format(R"(,"page_size":{})", r.page_size);
    if (dialect != HandshakeDialect::kV1_1) out += fmt::format(R"(,"page_size_kib":{})", r.page_size);
    out += '}';
  }
  out += ']';
  return out;
}

namespace {

// One region's fields: exact non-negative integers, all required but the
// page size.
Status ReadRegion(const Json& obj, GuestRegionMapping* r) {
  JsonFields fields(obj);
  UFFD_RETURN_IF_ERROR(fields.Read("base_host_virt_addr", &r->base_host_virt_addr));
  UFFD_RETURN_IF_ERROR(fields.Read("size", &r->size));
  UFFD_RETURN_IF_ERROR(fields.Read("offset", &r->offset));
  // 1.12+ sends page_size; 1.7-1.11 only page_size_kib (in bytes despite the
  // name); before 1.7 neither, and the page size was always 4 KiB. A field
  // that is there as null counts as sent, and Read refuses it.
  const char* ps_field = obj.contains("page_size")       ? "page_size"
                         : obj.contains("page_size_kib") ? "page_size_kib"
                                                         : nullptr;
  if (ps_field != nullptr) UFFD_RETURN_IF_ERROR(fields.Read(ps_field, &r->page_size));
  return Status::Ok();
}

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Returns an error if any two [start, start+len) ranges overlap.
Status CheckNoOverlap(std::vector<std::pair<uint64_t, uint64_t>> ranges, const char* what) {
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i - 1].first + ranges[i - 1].second > ranges[i].first) {
      return Status::InvalidArgument(fmt::format("regions overlap in {} at {:#x}", what, ranges[i].first));
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<GuestRegionMapping>> ParseHandshake(std::string_view payload, const HandshakeLimits& limits) {
  if (payload.size() > limits.max_message_bytes) {
    return Status::InvalidArgument(
        fmt::format("handshake message of {} bytes exceeds {} bytes", payload.size(), limits.max_message_bytes));
  }
  Json doc = Json::parse(payload.begin(), payload.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Status::InvalidArgument("handshake is not valid JSON");
  const Json* list = &doc;
  Json mappings;
  if (doc.is_object()) {
    JsonFields fields(doc);
    if (!fields.Has("mappings")) return Status::InvalidArgument("handshake object has no \"mappings\" array");
    UFFD_RETURN_IF_ERROR(fields.Read("mappings", &mappings));
    list = &mappings;
  }
  if (!list->is_array()) return Status::InvalidArgument("handshake must be a JSON array of regions");
  if (list->empty()) return Status::InvalidArgument("handshake has no regions");
  if (list->size() > limits.max_regions) {
    return Status::InvalidArgument(
        fmt::format("handshake has {} regions, more than {}", list->size(), limits.max_regions));
  }

  std::vector<GuestRegionMapping> regions;
  std::vector<std::pair<uint64_t, uint64_t>> addr_ranges, file_ranges;
  for (size_t i = 0; i < list->size(); ++i) {
    const Json& obj = (*list)[i];
    if (!obj.is_object()) return Status::InvalidArgument(fmt::format("region {} is not an object", i));
    GuestRegionMapping r;
    if (Status st = ReadRegion(obj, &r); !st.ok()) return st.WithContext(fmt::format("region {}", i));
    if (!IsPowerOfTwo(r.page_size) || r.page_size < 4096 || r.page_size > (1ULL << 30)) {
      return Status::InvalidArgument(
          fmt::format("region {}: page size {} is not a power of two between 4 KiB and 1 GiB", i, r.page_size));
    }
    if (r.size == 0) return Status::InvalidArgument(fmt::format("region {}: size is zero", i));
    if (r.base_host_virt_addr % r.page_size != 0 || r.size % r.page_size != 0 || r.offset % r.page_size != 0) {
      return Status::InvalidArgument(
          fmt::format("region {}: address, size and offset must be multiples of the page size {}", i, r.page_size));
    }
    if (r.base_host_virt_addr + r.size < r.base_host_virt_addr || r.offset + r.size < r.offset) {
      return Status::InvalidArgument(fmt::format("region {}: address or offset range overflows", i));
    }
    addr_ranges.emplace_back(r.base_host_virt_addr, r.size);
    file_ranges.emplace_back(r.offset, r.size);
    regions.push_back(r);
  }
  UFFD_RETURN_IF_ERROR(CheckNoOverlap(std::move(addr_ranges), "guest addresses"));
  UFFD_RETURN_IF_ERROR(CheckNoOverlap(std::move(file_ranges), "memory file offsets"));
  return regions;
}

void TakeReceivedFds(msghdr* msg, std::vector<UniqueFd>* out) {
  for (cmsghdr* c = CMSG_FIRSTHDR(msg); c != nullptr; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      out->emplace_back(fd);
    }
  }
}

Status SendWithFds(int sock, std::string_view payload, std::span<const int> fds) {
  iovec iov{const_cast<char*>(payload.data()), payload.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * std::max<size_t>(fds.size(), 1)));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  if (n < 0) return Status::FromErrno(errno, "sendmsg handshake");
  if (static_cast<size_t>(n) != payload.size()) {
    return Status::Protocol(fmt::format("sendmsg handshake sent {} of {} bytes", n, payload.size()));
  }
  return Status::Ok();
}

Result<bool> WaitReadable(int sock, std::chrono::steady_clock::time_point deadline, int cancel_fd) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left < 0) left = 0;
    pollfd pfds[2] = {{sock, POLLIN, 0}, {cancel_fd, POLLIN, 0}};
    int rc = ::poll(pfds, cancel_fd >= 0 ? 2 : 1, static_cast<int>(left));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return Status::FromErrno(errno, "poll socket");
    if (cancel_fd >= 0 && (pfds[1].revents & POLLIN)) return Status::Unavailable("wait cancelled");
    return rc > 0;
  }
}

Result<bool> HandshakeReceiver::ReadAvailable(int sock) {
  std::vector<char> buf(std::min<size_t>(max_bytes_ + 1, 1 << 20));
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  for (;;) {
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return false;
    if (n < 0) return Status::FromErrno(errno, "recvmsg handshake");
    started_ = true;
    TakeReceivedFds(&msg, &received_.fds);
    if (msg.msg_flags & MSG_CTRUNC) received_.control_truncated = true;
    if (n == 0) {
      received_.peer_closed = true;
      return true;
    }
    received_.payload.append(buf.data(), static_cast<size_t>(n));
    if (too_large() || nlohmann::json::accept(received_.payload)) return true;
  }
}

Status CheckHandshakeFds(const ReceivedHandshake& received) {
  if (received.control_truncated && received.fds.empty()) {
    // The kernel drops the fds it cannot install and says only MSG_CTRUNC:
    // with room for eight, receiving none means no fd number was left.
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    return Status::Error(ErrorCode::kIoError,
                         fmt::format("the fd sent with the handshake could not be received: this process is at its "
                                     "limit of open files (EMFILE; RLIMIT_NOFILE {})",
                                     limit.rlim_cur));
  }
  if (received.control_truncated || received.fds.size() != 1) {
    return Status::Protocol(fmt::format("handshake must carry exactly one fd (the userfaultfd), got {}{}",
                                        received.fds.size(), received.control_truncated ? " and more" : ""));
  }
  return Status::Ok();
}

}  // namespace uffdpager
