// PagerService: the pager of this client's version, as a service to start
// and older versions to retire.
//
// uffd-pager runs as the systemd template unit uffd-pager@VERSION.service,
// one instance per version key, each with its files under
// DATA/uffd/VERSION/. A client built for version V calls EnsureRunning()
// before it needs the pager: if V's pager does not answer, it starts the unit
// (as the Go pager's supervisor does) and waits until it answers. During an
// upgrade, DrainOtherVersions() asks every other running version to drain:
// each keeps serving the VMs it holds, refuses new sessions (503), and exits
// once its last session closes, so no VM ever loses its pager.
//
//   PagerService service({.data_dir = "/var/lib/uffd-pager", .version_key = "v2"});
//   auto pager = service.EnsureRunning();          // a PagerClient on v2
//   if (pager.ok()) auto drained = service.DrainOtherVersions();  // {"v1"}
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "uffdpager/pager_client.h"
#include "uffdpager/status.h"

namespace uffdpager {

// A pager of some version that answered.
struct RunningPager {
  std::string version_key;  // its directory under DATA/uffd/
  PagerClient client;
  bool own = false;  // this service's version
};

struct PagerServiceOptions {
  std::string data_dir = "/var/lib/uffd-pager";
  // This client's version: 1-128 characters of [A-Za-z0-9._-], not starting
  // with '.', as the pager's --version-key.
  std::string version_key;
  // Run when the pager does not answer; "{version}" and "{data_dir}" in any
  // argument are replaced (verbatim: in a `sh -c` string, a data dir with
  // quotes or spaces is the caller's to quote). argv[0] is looked up in PATH.
  // The default starts the systemd unit, which serves /var/lib/uffd-pager;
  // with another data dir, give a command that starts a pager on it.
  std::vector<std::string> start_command = {"systemctl", "start", "uffd-pager@{version}.service"};
  // Bounds EnsureRunning: the first look at the pager, the start command and
  // the wait for the pager to answer share this one deadline. At most
  // kMaxReadyTimeout.
  std::chrono::milliseconds ready_timeout = std::chrono::seconds(30);
};

class PagerService {
 public:
  static constexpr std::chrono::milliseconds kMaxReadyTimeout = std::chrono::minutes(10);

  // Checks the options (version key, a non-empty start command, a ready
  // timeout in (0, kMaxReadyTimeout]); kInvalidArgument says which is wrong.
  static Result<PagerService> Create(PagerServiceOptions options);

  // A client of this version's pager, started if it was not running. A pager
  // of this version that is draining is kUnavailable: it takes no new
  // sessions and exits once its last closes (start it again after that). A
  // failed start command (non-zero exit, or still running at the deadline)
  // is an error naming the command and quoting its output; a pager that does
  // not answer by the deadline is kTimeout naming its control socket.
  Result<PagerClient> EnsureRunning() const;

  // POST /drain to the pager of every other version under DATA/uffd/ that
  // answers, never to our own. Returns the version keys now draining (sorted;
  // a pager already draining is drained again, harmlessly, and listed). A
  // version directory without a listener (a stale control.sock, no socket)
  // is skipped. A pager that accepts but does not answer /health, or does not
  // take /drain, is an error (kUnavailable naming each, and those drained
  // nonetheless), reported after every other version has been drained.
  Result<std::vector<std::string>> DrainOtherVersions() const;

  // Every pager under DATA/uffd/ that answers GET /health, this version's
  // included (`own`), sorted by version key. A version directory without a
  // listener is skipped; one whose pager accepts but does not answer is
  // appended to *failures ("KEY: why"; "; " between them) and skipped.
  Result<std::vector<RunningPager>> RunningPagers(std::string* failures) const;

  const PagerServiceOptions& options() const { return options_; }
  const std::string& control_socket_path() const { return client_.control_socket_path(); }
  // The start command with "{version}" and "{data_dir}" replaced.
  std::vector<std::string> ResolvedStartCommand() const;

 private:
  explicit PagerService(PagerServiceOptions options);
  // OK if our pager answers /health, is not draining, and is our version;
  // *answered tells a pager that answered (draining, another version) from
  // one that did not.
  Status CheckHealthy(std::chrono::milliseconds timeout, bool* answered) const;

  PagerServiceOptions options_;
  PagerClient client_;
};

}  // namespace uffdpager
