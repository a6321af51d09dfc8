// Publish and import: a snapshot that moves between hosts through a bucket.
//
// Publish (snapctl publish NAME s3://BUCKET/PREFIX) uploads what another
// host needs to restore NAME's snapshot:
//  - each layer of its chain as the object PREFIX/ID. Blob ids are unique
//    and a named blob is never written again, so an object of that name and
//    size already holds those bytes: it is not uploaded again, and
//    publishing a fork that shares a published base uploads only its own
//    layers. A layer that is itself an object (an imported snapshot's) is
//    named as it is.
//  - beside every layer above the base, its page map (LayerPageMap) from the
//    blob's data extents: an uploaded Diff has no holes, so without the map
//    its zeros would hide the pages below.
//  - the state file, as PREFIX/STATE_FILE (state file names are unique too).
//  - last the manifest PREFIX/NAME.json (SnapshotManifest): its presence is
//    the commit, so it never names an object that is not there.
// Nothing local changes: publish only reads the data directory.
//
// Import (snapctl import NAME s3://BUCKET/PREFIX/SOURCE.json) makes a new
// Standby instance whose memory chain is the manifest's layer URLs, after
// checking that each still has the ETag the manifest names. Only the state
// file is downloaded; memory is paged from the store by the pager on the
// first restore. Like a fork, the instance is built in a staging folder and
// renamed into place (the commit); the journal names it, so recovery drops
// a staging folder an interrupted import left.
#include <fcntl.h>
#include <sys/stat.h>

#include <spdlog/spdlog.h>

#include <filesystem>

#include "common/durable_file.h"
#include "common/file_extents.h"
#include "common/layer_page_map.h"
#include "common/object_store_client.h"
#include "common/unique_fd.h"
#include "lifecycle/crash_point.h"
#include "lifecycle/operations.h"
#include "lifecycle/snapshot_manifest.h"

namespace uffdpager::lifecycle {

namespace {

// The largest state file import downloads: Firecracker's are far smaller.
constexpr uint64_t kMaxStateFileBytes = 64ULL << 20;

// The store from the AWS_* environment (endpoint, region, credentials).
Result<std::unique_ptr<ObjectStoreClient>> OpenStore() {
  auto config = LoadObjectStoreConfig();
  if (!config.ok()) return config.status().WithContext("the object store (AWS_* environment)");
  return std::make_unique<ObjectStoreClient>(*config);
}

// "s3://BUCKET/PREFIX" (a trailing '/' allowed) as the bucket and prefix.
Result<ObjectUrl> ParsePrefix(std::string url) {
  while (url.size() > 5 && url.back() == '/') url.pop_back();
  auto prefix = ParseObjectUrl(url);
  if (!prefix.ok()) return prefix.status().WithContext("publish destination \"" + url + "\" (s3://BUCKET/PREFIX)");
  return prefix;
}

ObjectUrl Under(const ObjectUrl& prefix, const std::string& name) {
  return ObjectUrl{prefix.bucket, prefix.key + "/" + name};
}

// Reads a whole (small) object, only while it has `etag` when one is given.
Result<std::string> GetSmallObject(ObjectStoreClient& store, const ObjectUrl& url, uint64_t size, uint64_t max,
                                   const std::string& etag) {
  if (size > max) {
    return Status::InvalidArgument(url.ToString() + " has " + std::to_string(size) + " bytes, more than the " +
                                   std::to_string(max) + " expected");
  }
  std::string bytes(size, '\0');
  if (size == 0) return bytes;
  UFFD_RETURN_IF_ERROR(store.GetRange(url, 0, size, etag, reinterpret_cast<std::byte*>(bytes.data()))
                           .WithContext("read " + url.ToString()));
  return bytes;
}

// A local layer as published: uploaded unless an object of its name and
// size is there already, with its page map when it is above the base.
struct LayerUpload {
  PublishedObject object;
  bool uploaded = false;
};

Result<LayerUpload> PublishLayer(ObjectStoreClient& store, const std::string& path, const ObjectUrl& url,
                                 bool needs_page_map) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) return Status::FromErrno(errno, "stat " + path);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  LayerUpload out;
  out.object.url = url.ToString();
  out.object.size = size;
  auto there = store.Head(url);
  if (there.ok() && there->size == size) {
    out.object.etag = there->etag;  // the same blob, published before
  } else if (there.ok() || there.status().code() == ErrorCode::kNotFound) {
    auto put = store.Put(url, fd.get(), size);
    if (!put.ok()) return put.status().WithContext("upload " + path + " to " + url.ToString());
    out.object.etag = put->etag;
    out.uploaded = true;
  } else {
    return there.status().WithContext("HEAD " + url.ToString());
  }
  if (needs_page_map) {
    auto extents = FileDataExtents(fd.get(), size, path);
    if (!extents.ok()) return extents.status();
    LayerPageMap map{out.object.etag, size, std::move(*extents)};
    const ObjectUrl map_url = LayerPageMap::LocationOf(url);
    auto put = store.Put(map_url, map.Encode());
    if (!put.ok()) return put.status().WithContext("upload the page map " + map_url.ToString());
  }
  return out;
}

}  // namespace

Result<PublishedSnapshot> PublishInstance(Context& c, const InstanceMetadata& m, const std::string& destination) {
  if ((m.state != InstanceState::kStandby && m.state != InstanceState::kStopped) || !m.snapshot) {
    return Status::Conflict("instance " + m.name + " is " + InstanceStateName(m.state) +
                            (m.snapshot ? "" : " without a snapshot") +
                            "; only Standby or Stopped instances with a snapshot are published");
  }
  auto prefix = ParsePrefix(destination);
  if (!prefix.ok()) return prefix.status();
  const LayerChain& chain = m.snapshot->memory_layers;
  // Every layer fits one PUT, checked before anything is uploaded.
  for (const auto& layer : chain) {
    if (IsObjectLayer(layer)) continue;
    struct stat st {};
    if (::stat(c.store.BlobPath(layer).c_str(), &st) < 0) {
      return Status::FromErrno(errno, "stat " + c.store.BlobPath(layer));
    }
    if (static_cast<uint64_t>(st.st_size) > kMaxSinglePutBytes) {
      return Status::InvalidArgument("layer " + c.store.BlobPath(layer) + " has " + std::to_string(st.st_size) +
                                     " bytes, more than one PUT takes (" + std::to_string(kMaxSinglePutBytes) +
                                     "); a multipart upload, which snapctl lacks, would be needed");
    }
  }
  auto store = OpenStore();
  if (!store.ok()) return store.status();

  PublishedSnapshot out;
  SnapshotManifest manifest;
  manifest.name = m.name;
  manifest.vcpu_count = m.vcpu_count;
  manifest.mem_size_mib = m.mem_size_mib;
  for (size_t i = 0; i < chain.size(); ++i) {
    c.Step("publishing layer " + std::to_string(i + 1) + " of " + std::to_string(chain.size()) + " of " + m.name);
    if (IsObjectLayer(chain[i])) {
      // Published before (an imported snapshot's layer): named as it is.
      auto url = ParseObjectUrl(chain[i]);
      if (!url.ok()) return url.status();
      auto info = (*store)->Head(*url);
      if (!info.ok()) return info.status().WithContext("HEAD " + chain[i]);
      manifest.layers.push_back({chain[i], info->etag, info->size});
      ++out.layers_reused;
      continue;
    }
    auto layer = PublishLayer(**store, c.store.BlobPath(chain[i]), Under(*prefix, chain[i]), i > 0);
    if (!layer.ok()) return layer.status();
    manifest.layers.push_back(layer->object);
    if (layer->uploaded) {
      ++out.layers_uploaded;
      out.layer_bytes_uploaded += layer->object.size;
    } else {
      ++out.layers_reused;
    }
  }
  CrashPoint("publish.after_layers");

  c.Step("publishing the state file of " + m.name);
  const std::string state_path = c.store.StateFilePath(m.name, m.snapshot->state_file);
  auto state = ReadRegularFile(state_path, kMaxStateFileBytes);
  if (!state.ok()) return state.status();
  const ObjectUrl state_url = Under(*prefix, m.snapshot->state_file);
  auto state_put = (*store)->Put(state_url, *state);
  if (!state_put.ok()) return state_put.status().WithContext("upload " + state_path + " to " + state_url.ToString());
  manifest.state_file = {state_url.ToString(), state_put->etag, state->size()};

  // The commit: the manifest names only objects that are there.
  const ObjectUrl manifest_url = Under(*prefix, m.name + ".json");
  auto put = (*store)->Put(manifest_url, manifest.Encode());
  if (!put.ok()) return put.status().WithContext("upload the manifest " + manifest_url.ToString());
  out.manifest_url = manifest_url.ToString();
  for (const auto& l : manifest.layers) out.layers.push_back(l.url);
  spdlog::info("published {} as {}: {} layer(s) uploaded ({} bytes), {} already there", m.name, out.manifest_url,
               out.layers_uploaded, out.layer_bytes_uploaded, out.layers_reused);
  return out;
}

Status ImportInstance(Context& c, const std::string& name, const std::string& manifest_location) {
  UFFD_RETURN_IF_ERROR(ValidateInstanceName(name));
  if (c.store.Exists(name)) return Status::Error(ErrorCode::kAlreadyExists, "instance " + name + " exists");
  auto manifest_url = ParseObjectUrl(manifest_location);
  if (!manifest_url.ok()) return manifest_url.status().WithContext("manifest \"" + manifest_location + "\"");
  auto store = OpenStore();
  if (!store.ok()) return store.status();

  c.Step("reading the manifest " + manifest_location);
  auto head = (*store)->Head(*manifest_url);
  // A missing manifest is the caller's input at fault, not an unknown
  // instance (kNotFound means that alone here).
  if (!head.ok()) {
    Status st = head.status().WithContext("manifest " + manifest_location);
    return st.code() == ErrorCode::kNotFound ? st.WithCode(ErrorCode::kInvalidArgument) : st;
  }
  auto text = GetSmallObject(**store, *manifest_url, head->size, kMaxManifestBytes, head->etag);
  if (!text.ok()) return text.status();
  auto manifest = SnapshotManifest::Parse(*text);
  if (!manifest.ok()) return manifest.status().WithContext("manifest " + manifest_location);
  if (manifest->layers.size() > kMaxPagerLayers) {
    return Status::InvalidArgument("manifest " + manifest_location + " names " +
                                   std::to_string(manifest->layers.size()) + " layers; a pager session serves " +
                                   std::to_string(kMaxPagerLayers) + " at most");
  }
  // Every layer is still the version published: a replaced one would mix
  // another snapshot's pages into this one.
  LayerChain chain;
  for (const auto& layer : manifest->layers) {
    auto url = ParseObjectUrl(layer.url);
    if (!url.ok()) return url.status();
    auto info = (*store)->Head(*url);
    if (!info.ok()) {
      Status st = info.status().WithContext("layer " + layer.url + " of manifest " + manifest_location);
      return st.code() == ErrorCode::kNotFound ? st.WithCode(ErrorCode::kConflict) : st;
    }
    if (info->etag != layer.etag || info->size != layer.size) {
      return Status::Conflict("layer " + layer.url + " changed since manifest " + manifest_location +
                              " was written (ETag " + info->etag + ", " + std::to_string(info->size) +
                              " bytes; the manifest names " + layer.etag + ", " + std::to_string(layer.size) +
                              " bytes): not imported");
    }
    chain.push_back(layer.url);
  }

  JournalEntry e{"import", name, {{"manifest", manifest_location}, {"staging", c.store.StagingDir(name)}}};
  UFFD_RETURN_IF_ERROR(c.journal.Record(e));
  const std::string staging = c.store.StagingDir(name);
  auto fail = [&](const Status& why) {
    std::error_code ec;
    std::filesystem::remove_all(staging, ec);
    (void)c.journal.Finish(name);
    return why.WithContext("import " + name + " from " + manifest_location);
  };
  std::error_code ec;
  std::filesystem::create_directories(staging + "/snapshot", ec);
  if (ec) return fail(Status::FromErrno(ec.value(), "create " + staging + "/snapshot"));

  c.Step("downloading the state file " + manifest->state_file.url);
  auto state_url = ParseObjectUrl(manifest->state_file.url);
  if (!state_url.ok()) return fail(state_url.status());
  auto state =
      GetSmallObject(**store, *state_url, manifest->state_file.size, kMaxStateFileBytes, manifest->state_file.etag);
  if (!state.ok()) return fail(state.status());
  const std::string state_file = InstanceStore::NewStateFileName();
  if (Status st = WriteFileAtomically(staging + "/snapshot/" + state_file, *state); !st.ok()) return fail(st);
  CrashPoint("import.after_state_file");

  InstanceMetadata m;
  m.name = name;
  m.state = InstanceState::kStandby;
  m.vcpu_count = manifest->vcpu_count;
  m.mem_size_mib = manifest->mem_size_mib;
  m.snapshot = SnapshotRecord{state_file, chain, false};
  m.needs_full_snapshot = true;
  if (Status st = c.store.SaveInto(staging, m); !st.ok()) return fail(st);
  CrashPoint("import.before_commit");
  if (Status st = RenameDurably(staging, c.store.InstanceDir(name)); !st.ok()) return fail(st);
  CrashPoint("import.after_commit");
  spdlog::info("imported {} from {} ({} layer(s) in object storage)", name, manifest_location, chain.size());
  return c.journal.Finish(name);
}

Status RecoverImport(Context& c, const JournalEntry& e) {
  if (!c.store.Exists(e.instance)) {
    spdlog::warn("rolling back the interrupted import of {}", e.instance);
    std::error_code ec;
    std::filesystem::remove_all(c.store.StagingDir(e.instance), ec);
  }
  return c.journal.Finish(e.instance);
}

}  // namespace uffdpager::lifecycle
