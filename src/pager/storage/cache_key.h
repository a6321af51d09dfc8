// CacheKey: what names a snapshot's bytes in every tier that keeps them (the
// page cache, the working-set store) and in the metrics.
//
// It is two things at once: the caller's name for the snapshot (the
// `cache_key` of POST /sessions, by default the backing path), and the
// identity of the bytes that name resolved to when the session began (for a
// file: device, inode, size and mtime). Tiers match on both, so a caller who
// reuses a name for other bytes (a file rewritten, replaced, or another file
// given the same key) never gets the old bytes; the metrics label by name
// only, so an operator sees one series per snapshot, not per version of it.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

namespace uffdpager {

class CacheKey {
 public:
  CacheKey() = default;
  CacheKey(std::string name, std::string identity) : name_(std::move(name)), identity_(std::move(identity)) {}

  const std::string& name() const { return name_; }
  const std::string& identity() const { return identity_; }
  // Both parts, unambiguous (a name cannot hold the separator's meaning:
  // the identity's length is written first).
  std::string ToString() const { return std::to_string(identity_.size()) + ":" + identity_ + "/" + name_; }

  bool operator==(const CacheKey&) const = default;

 private:
  std::string name_;
  std::string identity_;
};

struct CacheKeyHash {
  size_t operator()(const CacheKey& key) const {
    return std::hash<std::string>{}(key.name()) * 31 + std::hash<std::string>{}(key.identity());
  }
};

}  // namespace uffdpager
