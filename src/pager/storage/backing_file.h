// BackingFile: a snapshot memory file opened read-only, with the identity the
// page cache keys on so that two different files never share cached pages.
//
// A file may be filled on demand (a snapshot in object storage, whose local
// copy is sparse until its chunks are fetched): its RangeFiller is asked to
// make a range present before any read of it, and such a file has no holes
// (an unfetched chunk is data not here yet, never zeros).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/file_extents.h"
#include "common/unique_fd.h"
#include "uffdpager/status.h"

namespace uffdpager {

// What makes file contents distinct: the inode, and its size and mtime at open
// (a file rewritten in place gets a new mtime, so stale pages are not reused).
struct FileIdentity {
  dev_t device = 0;
  ino_t inode = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;

  std::string ToString() const;
};

// Makes [offset, offset+length) of a filled file present on local disk.
// Thread-safe: sessions read one file from their own threads.
class RangeFiller {
 public:
  virtual ~RangeFiller() = default;
  // Makes [offset, offset+length) present. What lies up to `readahead_end`
  // (at least offset+length) may be made present with it, in the same round
  // trips to wherever the bytes come from; failing to is not this call's
  // error.
  virtual Status EnsureRange(uint64_t offset, uint64_t length, uint64_t readahead_end) = 0;
  Status EnsureRange(uint64_t offset, uint64_t length) { return EnsureRange(offset, length, offset + length); }
};

class BackingFile {
 public:
  // Opens `path` for reading (symlinks followed). Anything but a regular
  // file is kInvalidArgument, "backing memory file PATH is not a regular
  // file (it is a FIFO)", and is refused before it is opened for reading:
  // opening never blocks (a FIFO without a writer) and never runs a
  // device's open (a watchdog's, a tape's).
  static Result<std::shared_ptr<BackingFile>> Open(const std::string& path);

  // How a path is found: an O_PATH fd of the file it names, or the error
  // (with its errno). For BackingPathPolicy, openat2 beneath a root.
  using Resolver = std::function<Result<UniqueFd>()>;
  // Open, with the file `resolve` finds. `path` is the path as the caller
  // gave it: what path() and every error of this file name.
  static Result<std::shared_ptr<BackingFile>> Open(const std::string& path, const Resolver& resolve);

  // A file filled on demand: the local file at `local_path` (its size is the
  // snapshot's), read only after `filler` made a range present. `name` is
  // what path() and every error name (the object's URL); `identity` names
  // the bytes for every tier that keeps them (IdentityText). Its data is
  // `data_extents` where given (a layer's page map: sorted, disjoint, within
  // the size), else the whole file.
  static Result<std::shared_ptr<BackingFile>> OpenFilled(const std::string& local_path, std::string name,
                                                         std::string identity, std::shared_ptr<RangeFiller> filler,
                                                         std::optional<DataExtents> data_extents = std::nullopt);

  // What the bytes are, for cache keys and session records: the file's
  // identity, or a filled file's own.
  std::string IdentityText() const { return identity_text_.empty() ? identity_.ToString() : identity_text_; }

  // Makes [offset, offset+length) present before a read that does not go
  // through ReadExact (the session's io_uring). OK at once for a plain file.
  // The filler may read ahead up to the end of the data extent the range
  // ends in (never across a hole: a page map's holes are not this layer's).
  Status EnsureRange(uint64_t offset, uint64_t length) const;

  // Reads exactly `length` bytes at `offset` (made present first); a short read (the file was
  // truncated under us) is an error, never a partly filled page.
  Status ReadExact(uint64_t offset, void* buffer, size_t length) const;

  // True if [offset, offset+length) lies wholly in a hole of a sparse file:
  // such a page is zeros and needs no read.
  bool IsHole(uint64_t offset, uint64_t length) const;

  // The file's data, sorted and disjoint [start, end) ranges: what is not in
  // them is a hole (zeros in a file read alone; "look below" in a layer of a
  // chain). A file filled on demand is all data unless a page map said
  // otherwise.
  const DataExtents& data_extents() const { return data_extents_; }

  // Whether a later version of a file's size cut [offset, offset+length): for
  // errors that find the file shorter than at open.
  Status TruncatedError(uint64_t offset, uint64_t length) const;

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  uint64_t size() const { return identity_.size; }
  const FileIdentity& identity() const { return identity_; }

 private:
  BackingFile(std::string path, UniqueFd fd, FileIdentity identity)
      : path_(std::move(path)), fd_(std::move(fd)), identity_(identity) {}
  // The first data extent that ends after `offset` (end() if none).
  DataExtents::const_iterator ExtentEndingAfter(uint64_t offset) const;
  // Maps the file's data extents (FileDataExtents; all data where the
  // filesystem cannot tell).
  void MapExtents();

  std::string path_;
  UniqueFd fd_;
  FileIdentity identity_;
  DataExtents data_extents_;             // sorted [start, end)
  std::string identity_text_;            // filled files only
  std::shared_ptr<RangeFiller> filler_;  // null: a plain file
};

}  // namespace uffdpager
