// Compaction: a snapshot chain merged into a new base in the background.
//
// Standby and fork add layers; restores of a deep chain go through the
// pager and read each page from whichever layer holds it, and every layer
// stays on disk while a chain names it. A compaction writes the chain's
// bytes into one new blob (MergeLayers: a reflink or sparse copy of the
// base, each layer's data extents over it) and moves every instance whose
// snapshot is still exactly that chain onto it. It takes the data
// directory's lock only to plan and to commit:
//   1. plan (locked): pick the chains, write a CompactionRecord for each
//      (new blob id, chain, instances, this process). From now on the
//      chain and the new blob are referenced: no collection removes them.
//   2. merge (unlocked): MergeLayers into the new blob, fsynced; the record
//      is rewritten as merged. Restores, standbys and forks run meanwhile.
//   3. commit (locked): each instance still on the chain (same blobs; it
//      may have been restored, put to standby, forked or deleted meanwhile)
//      gets the new blob as its chain, one metadata write each; then the
//      record goes. The collection after the command drops the layers no
//      chain or live VMM names any more, and the new blob if no instance
//      took it.
// No byte anyone reads changes: an instance is moved only onto a blob that
// holds exactly its chain's bytes, and nothing writes a layer in place
// while a record names it (MemoryOwnership::MayWriteInPlace).
// A compactor that died leaves its record: the recovery of the next
// command finishes the commit if the merge was complete, else drops the
// blob (no instance can name an unmerged one).
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <map>

#include "common/durable_file.h"
#include "lifecycle/crash_point.h"
#include "lifecycle/operations.h"
#include "lifecycle/snapshot_copy.h"

namespace uffdpager::lifecycle {

namespace {

// Whether `m`'s chain is one a compaction of `names` takes: named, or
// (none named) deeper than the configured depth. A chain of one has nothing
// to merge, and a chain with a layer in object storage cannot be merged
// here (its bytes are read only through the pager).
bool WantsCompaction(const Context& c, const InstanceMetadata& m, bool named) {
  if (m.ChainDepth() < 2) return false;
  if (HasObjectLayer(m.snapshot->memory_layers)) {
    if (named) spdlog::info("the chain of {} has a layer in object storage: not compacted", m.name);
    return false;
  }
  return named || (c.config.compact_depth > 0 && m.ChainDepth() > c.config.compact_depth);
}

std::string CompactionSubject(const CompactionRecord& r) {
  std::string names;
  for (const auto& n : r.instances) names += (names.empty() ? "" : ", ") + n;
  return "the " + std::to_string(r.chain.size()) + " layers of " + (names.empty() ? "no instance" : names);
}

}  // namespace

Result<std::vector<CompactionRecord>> PlanCompactions(Context& c, const std::vector<std::string>& names) {
  auto all = c.store.Names();
  if (!all.ok()) return all.status();
  auto pending = c.compactions.Pending();
  if (!pending.ok()) return pending.status();
  std::set<LayerChain> busy;
  for (const auto& r : pending->records) busy.insert(r.chain);

  std::set<LayerChain> chains;
  for (const auto& name : names.empty() ? *all : names) {
    auto m = names.empty() ? c.store.Load(name) : c.Load(name);
    if (!m.ok()) {
      if (!names.empty()) return m.status();
      continue;  // unusable: left as it is, like every command does
    }
    if (!WantsCompaction(c, *m, !names.empty())) continue;
    if (busy.count(m->snapshot->memory_layers)) {
      spdlog::info("the chain of {} is being compacted already", name);
      continue;
    }
    chains.insert(m->snapshot->memory_layers);
  }
  if (chains.empty()) return std::vector<CompactionRecord>();

  auto self = IdentifyProcess(::getpid());
  if (!self.ok()) return self.status().WithContext("compact");
  std::map<LayerChain, CompactionRecord> by_chain;
  for (const auto& chain : chains) by_chain[chain] = CompactionRecord{c.store.NewBlobId(), chain, {}, *self, false};
  // Every instance on a chain is moved together, named or not.
  for (const auto& name : *all) {
    if (!c.Usable(name).ok()) continue;
    auto m = c.store.Load(name);
    if (!m.ok() || !m->snapshot) continue;
    auto it = by_chain.find(m->snapshot->memory_layers);
    if (it != by_chain.end()) it->second.instances.push_back(name);
  }
  std::vector<CompactionRecord> out;
  for (auto& [chain, record] : by_chain) {
    UFFD_RETURN_IF_ERROR(c.compactions.Record(record));
    spdlog::info("compacting {} into {}", CompactionSubject(record), record.blob);
    out.push_back(std::move(record));
  }
  return out;
}

Status MergeCompaction(Context& c, CompactionRecord& record) {
  c.Step("merging " + CompactionSubject(record) + " into a new base");
  auto merged = MergeLayers(c.store.BlobPaths(record.chain), c.store.BlobPath(record.blob));
  if (!merged.ok()) return merged.status().WithContext("compact " + CompactionSubject(record));
  // MergeLayers made the file durable; its name too before any metadata
  // may name it.
  UFFD_RETURN_IF_ERROR(SyncDirectory(c.data_dir + "/blobs"));
  spdlog::info("merged {} into {} ({}, {} bytes copied)", CompactionSubject(record), record.blob,
               merged->reflinked ? "base reflinked" : "sparse copy", merged->bytes_copied);
  record.merged = true;
  return c.compactions.Record(record);
}

Result<std::vector<std::string>> CommitCompaction(Context& c, const CompactionRecord& record) {
  std::vector<std::string> moved;
  if (!record.merged) return moved;
  auto names = c.store.Names();
  if (!names.ok()) return names.status();
  for (const auto& name : *names) {
    if (!c.Usable(name).ok()) continue;
    auto m = c.store.Load(name);
    if (!m.ok() || !m->snapshot || m->snapshot->memory_layers != record.chain) continue;
    // The same bytes in one blob. owns_memory stays: the instance that
    // wrote the top layer owns the base that holds it now, sharers share.
    m->snapshot->memory_layers = {record.blob};
    UFFD_RETURN_IF_ERROR(c.store.Save(*m));
    moved.push_back(name);
  }
  if (moved.empty()) {
    spdlog::info("compaction into {}: no instance is on that chain any more; the blob goes", record.blob);
  } else {
    spdlog::info("compaction into {}: {} instance(s) moved onto it, first {}", record.blob, moved.size(),
                 moved.front());
  }
  return moved;
}

void RecoverCompactions(Context& c) {
  auto pending = c.compactions.Pending();
  if (!pending.ok()) {
    spdlog::warn("compaction records cannot be listed: {}", pending.status().ToString());
    return;
  }
  for (const auto& [file, why] : pending->unreadable) {
    spdlog::warn("compaction record {} cannot be read (no blob is collected until it is repaired or removed): {}", file,
                 why.ToString());
  }
  for (const auto& record : pending->records) {
    if (record.compactor.IsAlive()) continue;  // in flight: its blobs stay referenced
    if (record.merged) {
      spdlog::warn("finishing the compaction into {} of a compactor that is gone", record.blob);
      if (auto moved = CommitCompaction(c, record); !moved.ok()) {
        spdlog::warn("the compaction into {} cannot be finished: {}", record.blob, moved.status().ToString());
        continue;  // the record stays: its blobs too
      }
    } else {
      spdlog::warn("dropping the unfinished compaction into {} of a compactor that is gone", record.blob);
      ::unlink(c.store.BlobPath(record.blob).c_str());
    }
    if (Status st = c.compactions.Finish(record.blob); !st.ok()) spdlog::warn("{}", st.ToString());
  }
}

void StartBackgroundCompaction(const Context& c, const std::string& name) {
  if (c.background_compactor.empty()) return;
  auto m = c.store.Load(name);
  if (!m.ok() || !WantsCompaction(c, *m, /*named=*/false)) return;
  auto started = SpawnDetached(c.background_compactor, c.store.CompactionLogPath());
  if (!started.ok()) {
    spdlog::warn("the chain of {} ({} layers) is not compacted in the background: {}", name, m->ChainDepth(),
                 started.status().ToString());
    return;
  }
  spdlog::info("compacting the chain of {} ({} layers) in the background: pid {}, output in {}", name, m->ChainDepth(),
               started->pid, c.store.CompactionLogPath());
}

}  // namespace uffdpager::lifecycle
