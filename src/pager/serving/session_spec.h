// SessionSpec: what POST /sessions asked for, fixed for the session's life.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pager/access/peer_check.h"
#include "pager/access/socket_permissions.h"

namespace uffdpager {

struct SessionSpec {
  std::string id;
  std::string instance_id;
  // The memory: exactly one of a local file (backing_memory_path) or an
  // object (backing_memory_url, "s3://BUCKET/KEY"), whose version the pager
  // pins at create (backing_etag: every read asks for that ETag).
  std::string backing_path;
  std::string backing_url;
  std::string backing_etag;
  // Or a chain of layers, base first (BackingChain): each page from the
  // topmost layer whose data holds it. A layer is a local file's absolute
  // path or an object's "s3://BUCKET/KEY" (whose page map, if it has one,
  // says which of its bytes are data: LayerPageMap).
  std::vector<std::string> backing_layers;
  // The version the pager pinned at create of each layer that is an object
  // ("" for a file); empty until the layers were opened once.
  std::vector<std::string> backing_layer_etags;
  // The caller's name for the snapshot (default: the backing path or URL); with the
  // identity of the bytes it becomes the session's CacheKey.
  std::string cache_key;
  bool kill_client_on_failure = false;
  // Who may connect (over the pager-wide --socket-owner/--socket-group).
  SocketOwnership socket_ownership;
  // Which process must be on the other end; anyone else is turned away.
  ExpectedPeer expected_peer;

  // The path, the URL or the top layer: for log lines and messages, and the
  // default cache key.
  const std::string& BackingName() const {
    if (!backing_layers.empty()) return backing_layers.back();
    return backing_url.empty() ? backing_path : backing_url;
  }
};

// Adds to `j` the fields that say which memory `spec` serves, as GET
// /sessions/ID and the session record both show them: the URL and its
// pinned ETag, or the layers and the pinned ETags of those that are objects.
// (The path is written by each, under its own rules.)
void AddBackingFields(const SessionSpec& spec, nlohmann::json* j);

}  // namespace uffdpager
