#include "lifecycle/instance_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>

#include <fmt/format.h>

#include "common/durable_file.h"

namespace uffdpager::lifecycle {

namespace fs = std::filesystem;

namespace {

std::string UniqueSuffix() {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  auto now = std::chrono::system_clock::now().time_since_epoch().count();
  return fmt::format("{:x}-{:x}-{:08x}", static_cast<uint64_t>(now), counter.fetch_add(1), rd());
}

Result<InstanceMetadata> ParseMetadata(const std::string& path, const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return Status::InvalidArgument(path + " is not JSON");
  auto m = InstanceMetadata::FromJson(j);
  if (!m.ok()) return m.status().WithContext(path);
  return m;
}

}  // namespace

Status InstanceStore::Prepare() const {
  for (const char* sub : {"instances", "blobs", "journal", "compactions", "trash"}) {
    std::error_code ec;
    fs::create_directories(data_dir_ + "/" + sub, ec);
    if (ec) return Status::FromErrno(ec.value(), "create " + data_dir_ + "/" + sub);
  }
  return Status::Ok();
}

std::string InstanceStore::NewBlobId() const { return "mem-" + UniqueSuffix(); }

std::string InstanceStore::NewStateFileName() { return "vmstate-" + UniqueSuffix(); }

bool InstanceStore::Exists(const std::string& name) const {
  // Whatever is there, even a dangling symlink: an instance that cannot be
  // read is still an instance (Unknown), and its name is taken.
  struct stat st {};
  return ::lstat(MetadataPath(name).c_str(), &st) == 0;
}

Result<InstanceMetadata> InstanceStore::Load(const std::string& name) const {
  UFFD_RETURN_IF_ERROR(ValidateInstanceName(name));
  const std::string path = MetadataPath(name);
  auto text = ReadRegularFile(path);
  if (!text.ok() && text.status().error_number() == ENOENT) return Status::NotFound("no instance \"" + name + "\"");
  auto m = text.ok() ? ParseMetadata(path, *text) : Result<InstanceMetadata>(text.status());
  if (m.ok() && m->name != name) {
    m = Status::InvalidArgument(path + " is the metadata of instance \"" + m->name + "\", not of \"" + name +
                                "\" whose folder it is in");
  }
  if (!m.ok()) {
    return m.status().WithContext("instance " + name + " cannot be used (repair or remove " + InstanceDir(name) +
                                  " by hand)");
  }
  return m;
}

Status InstanceStore::SaveInto(const std::string& dir, const InstanceMetadata& metadata) const {
  return WriteFileAtomically(dir + "/instance.json", metadata.ToJson().dump(2) + "\n");
}

Status InstanceStore::Save(const InstanceMetadata& metadata) const {
  return SaveInto(InstanceDir(metadata.name), metadata);
}

Result<std::vector<std::string>> InstanceStore::Names() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(data_dir_ + "/instances", ec)) {
    std::string name = e.path().filename().string();
    if (name[0] == '.' || !Exists(name)) continue;
    out.push_back(name);
  }
  if (ec) return Status::FromErrno(ec.value(), "list " + data_dir_ + "/instances");
  std::sort(out.begin(), out.end());
  return out;
}

Status InstanceStore::Remove(const std::string& name) const {
  std::string trash = data_dir_ + "/trash/" + name + "-" + UniqueSuffix();
  UFFD_RETURN_IF_ERROR(RenameDurably(InstanceDir(name), trash));
  std::error_code ec;
  fs::remove_all(trash, ec);
  return Status::Ok();  // a leftover in the trash is swept by the next command
}

void InstanceStore::SweepLeftovers(const std::set<std::string>& left_alone) const {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(data_dir_ + "/trash", ec)) fs::remove_all(e.path(), ec);
  const std::string prefix = ".staging-";
  for (const auto& e : fs::directory_iterator(data_dir_ + "/instances", ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && left_alone.count(name.substr(prefix.size())) == 0) fs::remove_all(e.path(), ec);
  }
}

}  // namespace uffdpager::lifecycle
