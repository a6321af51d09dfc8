// PidFile: DATA/uffd/VERSION/pager.pid, which says which process serves that
// directory. A second pager on the directory refuses to start while the one
// named there is alive; scripts read it to find the pager.
//
// Format, one line each:
//   PID
//   start_time=TICKS   (the kernel's start time of PID: /proc/PID/stat field 22)
// The pid stays alone on the first line, so `read pid < pager.pid`,
// `kill $(head -n1 pager.pid)` and readers of the older format keep working;
// the start time is a key=value word, never a number a script could mistake
// for a second pid. Together they are a ProcessIdentity: after a crash the
// pid can be reused by an unrelated process, which must not keep the next
// pager from starting.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "common/process_identity.h"
#include "uffdpager/status.h"

namespace uffdpager {

class PidFile {
 public:
  // Claims `path` for this process. Refused (kAlreadyExists, naming
  // `served_dir`) while the pager the file names is alive. A file naming a
  // process that is gone (or a zombie), an unrelated process that reused its
  // pid, or nothing readable, is stale: it is replaced, with an info log.
  //
  // The older pid-only format cannot tell pid reuse apart; its pid counts as
  // a live pager only if that process is alive and is a uffd-pager (its comm
  // or argv[0] says so).
  static Result<std::unique_ptr<PidFile>> Claim(const std::string& path, const std::string& served_dir);

  // Removes the file if it still names this process (and not a pager that
  // replaced a stale one meanwhile).
  ~PidFile();

  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  PidFile(std::string path, ProcessIdentity self) : path_(std::move(path)), self_(self) {}

  std::string path_;
  ProcessIdentity self_;
};

}  // namespace uffdpager
