// LifecycleJournal: intent records of multi-step operations. Before an
// operation changes anything it records what it is about to do (and, as it
// goes, what it created: a staging folder, a blob, a VMM process, a pager
// session) in DATA/journal/NAME.json; when its commit point (one atomic
// metadata write or rename) is durable, it removes the record. The next
// command finds any record left by a crash and, from the metadata, tells
// whether the commit happened: if so it finishes the tail (stop the old VMM,
// close the session), if not it undoes the work (kill what was started, drop
// what was created). At most one operation per instance is in flight.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "uffdpager/status.h"

namespace uffdpager::lifecycle {

struct JournalEntry {
  std::string op;        // "fork", "standby", "restore"
  std::string instance;  // the instance being made or changed
  nlohmann::json data = nlohmann::json::object();
};

// What the journal holds: the records that could be read, and the instances
// whose record could not (a symlink, a FIFO, not JSON, another instance's).
struct PendingRecords {
  std::vector<JournalEntry> entries;         // by instance
  std::map<std::string, Status> unreadable;  // instance (the file's name) -> why
};

class LifecycleJournal {
 public:
  explicit LifecycleJournal(std::string dir) : dir_(std::move(dir)) {}

  // Writes (or rewrites) the record of `entry.instance`, durably.
  Status Record(const JournalEntry& entry) const;
  Status Finish(const std::string& instance) const;
  // Fails only if the journal's folder cannot be listed: one bad record
  // never hides the others.
  Result<PendingRecords> Pending() const;

 private:
  std::string PathOf(const std::string& instance) const { return dir_ + "/" + instance + ".json"; }
  std::string dir_;
};

}  // namespace uffdpager::lifecycle
