#include "lifecycle/instance_store.h"

#include <fcntl.h>
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

}  // namespace

Status InstanceStore::Prepare() const {
  for (const char* sub : {"instances", "blobs", "journal", "trash"}) {
    std::error_code ec;
    fs::create_directories(data_dir_ + "/" + sub, ec);
    if (ec) return Status::FromErrno(ec.value(), "create " + data_dir_ + "/" + sub);
  }
  return Status::Ok();
}

std::string InstanceStore::NewBlobId() const { return "mem-" + UniqueSuffix(); }

std::string InstanceStore::NewStateFileName() { return "vmstate-" + UniqueSuffix(); }

bool InstanceStore::Exists(const std::string& name) const {
  return ::access((InstanceDir(name) + "/instance.json").c_str(), F_OK) == 0;
}

Result<InstanceMetadata> InstanceStore::Load(const std::string& name) const {
  UFFD_RETURN_IF_ERROR(ValidateInstanceName(name));
  std::string path = InstanceDir(name) + "/instance.json";
  auto text = ReadWholeFile(path);
  if (!text.ok()) {
    if (text.status().error_number() == ENOENT) return Status::NotFound("no instance \"" + name + "\"");
    return text.status();
  }
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded()) return Status::InvalidArgument(path + " is not JSON");
  auto m = InstanceMetadata::FromJson(j);
  if (!m.ok()) return m.status().WithContext(path);
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

void InstanceStore::SweepLeftovers() const {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(data_dir_ + "/trash", ec)) fs::remove_all(e.path(), ec);
  for (const auto& e : fs::directory_iterator(data_dir_ + "/instances", ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind(".staging-", 0) == 0) fs::remove_all(e.path(), ec);
  }
}

}  // namespace uffdpager::lifecycle
