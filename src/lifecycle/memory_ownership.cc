#include "lifecycle/memory_ownership.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <spdlog/spdlog.h>

namespace uffdpager::lifecycle {

namespace {

// The local blobs of `chain`: an object layer is no blob of this data
// directory (never collected, never written).
void AddBlobs(const LayerChain& chain, std::set<std::string>* out) {
  for (const auto& layer : chain) {
    if (!IsObjectLayer(layer)) out->insert(layer);
  }
}

void AddBlobsOf(const InstanceMetadata& m, std::set<std::string>* out) {
  if (m.snapshot) AddBlobs(m.snapshot->memory_layers, out);
  if (m.vmm) AddBlobs(m.vmm->backing_layers, out);
}

}  // namespace

Result<std::set<std::string>> MemoryOwnership::ReferencedBlobs() const {
  auto names = store_.Names();
  if (!names.ok()) return names.status();
  std::set<std::string> out;
  for (const auto& name : *names) {
    auto m = store_.Load(name);
    // An unreadable metadata file might name any blob: keep them all.
    if (!m.ok()) return m.status().WithContext("cannot tell which blobs are in use");
    AddBlobsOf(*m, &out);
  }
  auto pending = compactions_.Pending();
  if (!pending.ok()) return pending.status();
  if (!pending->unreadable.empty()) {
    return pending->unreadable.begin()->second.WithContext("cannot tell which blobs are in use");
  }
  for (const auto& r : pending->records) {
    AddBlobs(r.chain, &out);
    out.insert(r.blob);
  }
  return out;
}

Result<std::set<std::string>> MemoryOwnership::Readers(const std::string& blob, const std::string& except) const {
  auto names = store_.Names();
  if (!names.ok()) return names.status();
  std::set<std::string> out;
  for (const auto& name : *names) {
    if (name == except) continue;
    auto m = store_.Load(name);
    if (!m.ok()) {
      // Unreadable metadata might name this blob: count it as a reader.
      out.insert(name);
      continue;
    }
    std::set<std::string> blobs;
    AddBlobsOf(*m, &blobs);
    if (blobs.count(blob)) out.insert(name);
  }
  return out;
}

Result<bool> MemoryOwnership::MayWriteInPlace(const InstanceMetadata& m) const {
  if (!m.snapshot || !m.snapshot->owns_memory || m.snapshot->memory_layers.size() != 1) return false;
  if (IsObjectLayer(m.snapshot->top())) return false;
  if (!m.vmm || m.vmm->memory_source != MemorySource::kFile || m.vmm->backing_layers != m.snapshot->memory_layers) {
    return false;
  }
  auto readers = Readers(m.snapshot->top(), m.name);
  if (!readers.ok()) return readers.status();
  if (!readers->empty()) return false;
  // A compaction merges only chains of two or more layers, and a blob
  // written in place is a chain of one: they meet only where the blob is
  // also a layer of a deeper chain, whose instances then read it and were
  // refused above. Checked here too, so that no change to either rule can
  // let a merge read bytes that change under it.
  auto pending = compactions_.Pending();
  if (!pending.ok()) return pending.status();
  if (!pending->unreadable.empty()) return false;
  for (const auto& r : pending->records) {
    if (r.blob == m.snapshot->top() || std::find(r.chain.begin(), r.chain.end(), m.snapshot->top()) != r.chain.end()) {
      return false;
    }
  }
  return true;
}

Status MemoryOwnership::CollectGarbage(const std::set<std::string>& also_live) const {
  auto live = ReferencedBlobs();
  if (!live.ok()) return live.status();
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(store_.data_dir() + "/blobs", ec)) {
    std::string id = e.path().filename().string();
    if (live->count(id) || also_live.count(id)) continue;
    spdlog::debug("removing unreferenced memory blob {}", id);
    ::unlink(e.path().c_str());
  }
  return Status::Ok();
}

}  // namespace uffdpager::lifecycle
