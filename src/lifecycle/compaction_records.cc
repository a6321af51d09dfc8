#include "lifecycle/compaction_records.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "common/durable_file.h"
#include "common/json_fields.h"

namespace uffdpager::lifecycle {

namespace {

constexpr std::string_view kRecordSuffix = ".json";

Result<CompactionRecord> ReadCompactionRecord(const std::string& path, const std::string& blob) {
  auto text = ReadRegularFile(path);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::InvalidArgument("compaction record " + path + " is not JSON");
  CompactionRecord r;
  nlohmann::json compactor = nlohmann::json::object();
  JsonFields fields(j);
  Status st = fields.Read("blob", &r.blob);
  if (st.ok()) st = fields.Read("chain", &r.chain);
  if (st.ok()) st = fields.ReadOptional("instances", &r.instances);
  if (st.ok()) st = fields.ReadOptional("merged", &r.merged);
  if (st.ok()) st = fields.Read("compactor", &compactor);
  JsonFields process(compactor, "compactor");
  if (st.ok()) st = process.Read("pid", &r.compactor.pid);
  if (st.ok()) st = process.Read("start_time", &r.compactor.start_time);
  if (!st.ok()) return st.WithContext("compaction record " + path);
  if (r.blob != blob || r.chain.size() < 2) {
    return Status::InvalidArgument("compaction record " + path + " is not the record of a chain merged into " + blob);
  }
  return r;
}

}  // namespace

Status CompactionRecords::Record(const CompactionRecord& r) const {
  nlohmann::json j = {{"blob", r.blob},
                      {"chain", r.chain},
                      {"instances", r.instances},
                      {"merged", r.merged},
                      {"compactor", {{"pid", r.compactor.pid}, {"start_time", r.compactor.start_time}}}};
  return WriteFileAtomically(PathOf(r.blob), j.dump(2) + "\n");
}

Status CompactionRecords::Finish(const std::string& blob) const {
  if (::unlink(PathOf(blob).c_str()) < 0 && errno != ENOENT) return Status::FromErrno(errno, "remove " + PathOf(blob));
  return SyncDirectory(dir_);
}

Result<PendingCompactions> CompactionRecords::Pending() const {
  PendingCompactions out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string file = e.path().filename().string();
    if (file.find(".json.tmp.") != std::string::npos) {
      ::unlink(e.path().c_str());  // a temporary of a record write that never finished
      continue;
    }
    if (!file.ends_with(kRecordSuffix)) continue;
    const std::string blob = file.substr(0, file.size() - kRecordSuffix.size());
    auto record = ReadCompactionRecord(e.path().string(), blob);
    if (record.ok()) {
      out.records.push_back(std::move(*record));
    } else {
      out.unreadable.emplace(file, record.status());
    }
  }
  if (ec) return Status::FromErrno(ec.value(), "list " + dir_);
  std::sort(out.records.begin(), out.records.end(), [](const auto& a, const auto& b) { return a.blob < b.blob; });
  return out;
}

}  // namespace uffdpager::lifecycle
