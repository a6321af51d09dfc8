// SnapshotManifest: a snapshot published to object storage (snapctl
// publish), as the object PREFIX/NAME.json that another host imports.
//
// Written last, after every object it names, so that its presence is the
// commit of a publish: a manifest only ever names objects that were there
// when it was written. Each object is named with the ETag it had then, so
// an importer can tell a layer that was replaced since (same key, other
// bytes) and refuse it instead of restoring a VM from mixed memory.
//   {"format": "uffdpager-snapshot-manifest", "version": 1,
//    "name": "vm1", "vcpu_count": 1, "mem_size_mib": 32,
//    "state_file": {"url": "s3://b/p/vmstate-…", "etag": "\"…\""},
//    "layers": [{"url": "s3://b/p/ID", "etag": "\"…\"", "size": N}, …]}
// Layers are base first, as in a chain (InstanceMetadata); every layer
// above the base has a page map beside it (LayerPageMap).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager::lifecycle {

inline constexpr const char* kManifestFormat = "uffdpager-snapshot-manifest";
inline constexpr int kManifestVersion = 1;
// A manifest is a few hundred bytes; more is not one of ours.
inline constexpr uint64_t kMaxManifestBytes = 1ULL << 20;

// An object as published: its URL and the ETag it had then.
struct PublishedObject {
  std::string url;
  std::string etag;
  uint64_t size = 0;
};

struct SnapshotManifest {
  std::string name;  // the instance published
  uint32_t vcpu_count = 0;
  uint64_t mem_size_mib = 0;
  PublishedObject state_file;
  std::vector<PublishedObject> layers;  // base first

  std::string Encode() const;
  // kInvalidArgument naming what is wrong: not JSON, another format or
  // version, a missing field, no layers, or a URL that is not s3://.
  static Result<SnapshotManifest> Parse(std::string_view text);
};

}  // namespace uffdpager::lifecycle
