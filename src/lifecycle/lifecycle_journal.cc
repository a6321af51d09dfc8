#include "lifecycle/lifecycle_journal.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "common/durable_file.h"
#include "common/json_fields.h"

namespace uffdpager::lifecycle {

namespace {

// What each operation keeps under "data" is read by its recovery.
Status ReadEntry(const nlohmann::json& j, JournalEntry* entry) {
  JsonFields fields(j);
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("op", &entry->op));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("instance", &entry->instance));
  return fields.ReadOptional("data", &entry->data);
}

Result<JournalEntry> ReadRecord(const std::string& path, const std::string& instance) {
  auto text = ReadRegularFile(path);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::InvalidArgument("journal record " + path + " is not JSON");
  JournalEntry entry;
  if (Status st = ReadEntry(j, &entry); !st.ok()) return st.WithContext("journal record " + path);
  if (entry.instance != instance) {
    return Status::InvalidArgument("journal record " + path + " is about instance \"" + entry.instance + "\", not \"" +
                                   instance + "\"");
  }
  return entry;
}

}  // namespace

Status LifecycleJournal::Record(const JournalEntry& entry) const {
  nlohmann::json j = {{"op", entry.op}, {"instance", entry.instance}, {"data", entry.data}};
  return WriteFileAtomically(PathOf(entry.instance), j.dump(2) + "\n");
}

Status LifecycleJournal::Finish(const std::string& instance) const {
  if (::unlink(PathOf(instance).c_str()) < 0 && errno != ENOENT) {
    return Status::FromErrno(errno, "remove " + PathOf(instance));
  }
  return SyncDirectory(dir_);
}

Result<PendingRecords> LifecycleJournal::Pending() const {
  PendingRecords out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::string path = e.path().string();
    if (e.path().extension() != ".json") {
      ::unlink(path.c_str());  // a temporary of a record write that never finished
      continue;
    }
    const std::string instance = e.path().stem().string();
    auto entry = ReadRecord(path, instance);
    if (entry.ok()) {
      out.entries.push_back(std::move(*entry));
    } else {
      out.unreadable.emplace(instance, entry.status());
    }
  }
  if (ec) return Status::FromErrno(ec.value(), "list " + dir_);
  std::sort(out.entries.begin(), out.entries.end(),
            [](const auto& a, const auto& b) { return a.instance < b.instance; });
  return out;
}

}  // namespace uffdpager::lifecycle
