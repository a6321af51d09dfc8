// PagerClient: the C++ client of uffd-pager's control API. pagerctl, the
// lifecycle and users' orchestrators all talk to the pager through it.
//
// Every call is one HTTP request on the control socket. A non-2xx answer
// comes back as a Status whose message is the pager's {"error"} text and
// whose code follows the HTTP status (400 and 413 kInvalidArgument, 403
// kPermissionDenied, 404 kNotFound, 409 kConflict, 503 kUnavailable, any
// other kInternal). No answer at all (no socket, nobody listening) is
// kUnavailable.
//
// A session id goes into the URL percent-encoded (every byte but
// [A-Za-z0-9._~-]), so the pager receives it as one path segment whatever
// it holds; "", "." and ".." cannot be one segment and are refused here
// (kInvalidArgument) without a request.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "uffdpager/status.h"

namespace uffdpager {

struct CreateSessionRequest {
  std::string session_id;  // optional: defaults to instance_id
  std::string instance_id;
  // Exactly one of backing_memory_path (a local memory file, absolute path),
  // backing_memory_url and backing_layers (below).
  std::string backing_memory_path;
  std::string cache_key;  // optional: defaults to the backing path or URL
  // Kill the VMM (SIGKILL) if the pager meets a fault it cannot serve, rather
  // than leave it hung on that page.
  bool kill_client_on_failure = false;
  // Security (all optional). The session socket is given to this user and/or
  // group (a jailed VMM's), instead of the pager-wide --socket-owner/-group.
  std::optional<uint32_t> socket_uid;
  std::optional<uint32_t> socket_gid;
  // Only a peer with this uid (and this pid) may hand over its memory; any
  // other process that connects is turned away (SO_PEERCRED).
  std::optional<uint32_t> expected_uid;
  std::optional<int32_t> expected_pid;
  // An object in S3-compatible storage, "s3://BUCKET/KEY", instead of a
  // file: the pager's store comes from its AWS_* environment. (Last, so
  // that positional initializers of the fields above keep their meaning.)
  std::string backing_memory_url;
  // A chain of layers, base first (absolute paths, one size): each page
  // comes from the topmost layer whose data holds it (a Diff snapshot's
  // dirty pages), else from below; see docs/control-api.md.
  std::vector<std::string> backing_layers;
};

struct CreatedSession {
  std::string session_id;
  std::string uffd_socket_path;
  std::string pager_version;
  nlohmann::json answer;  // the pager's whole answer, as it sent it
};

struct PagerHealth {
  std::string version;        // the pager's version key
  std::string pager_version;  // the pager's build
  bool draining = false;
  uint64_t active_sessions = 0;
  std::string metrics_addr;  // empty unless --metrics-addr
  nlohmann::json answer;     // the pager's whole answer, as it sent it
};

class PagerClient {
 public:
  explicit PagerClient(std::string control_socket_path);

  // DATA/uffd/VERSION/control.sock
  static std::string ControlSocketPath(const std::string& data_dir, const std::string& version_key);

  // `timeout` bounds the whole exchange: callers polling a pager that may be
  // wedged (PagerService) keep their own deadline.
  Result<PagerHealth> Health(std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  Result<nlohmann::json> Stats() const;
  Result<nlohmann::json> ListSessions() const;  // the "sessions" array
  Result<nlohmann::json> GetSession(const std::string& session_id) const;
  Result<CreatedSession> CreateSession(const CreateSessionRequest& request) const;
  Status CloseSession(const std::string& session_id) const;
  // Blocks until every page is in and the memory unregistered.
  Status CompleteSession(const std::string& session_id,
                         std::chrono::milliseconds timeout = std::chrono::minutes(10)) const;
  Status Drain() const;

  const std::string& control_socket_path() const { return socket_path_; }

 private:
  Result<nlohmann::json> Call(const char* method, const std::string& path, const std::string& body,
                              std::chrono::milliseconds timeout) const;
  std::string socket_path_;
};

}  // namespace uffdpager
