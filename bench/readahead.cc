#include "readahead.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <climits>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

namespace uffdpager::bench {

namespace {

namespace fs = std::filesystem;

// What the signal path needs to put the original value back, prepared by
// Take before `armed` is set: no allocation, no locks in a handler.
struct PreparedRestore {
  char sysfs_path[PATH_MAX] = {};
  char value[32] = {};  // "<original kib>\n"
  size_t value_len = 0;
  int node_fd = -1;  // used only when sysfs is not writable
  long sectors = 0;
  bool use_sysfs = true;
};
PreparedRestore prepared;
volatile std::sig_atomic_t armed = 0;

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGABRT, SIGSEGV, SIGBUS};
struct sigaction previous_actions[std::size(kSignals)];

void OnFatalSignal(int signal) {
  RestoreReadaheadNow();
  // SA_RESETHAND put the default action back: re-raised, the signal does
  // what it would have done without us (terminate, dump core) once the
  // handler returns and unblocks it.
  ::raise(signal);
}

Result<std::string> ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return Status::NotFound("cannot read " + path);
  return line;
}

Result<uint64_t> ReadKib(const std::string& path) {
  auto line = ReadFirstLine(path);
  if (!line.ok()) return line.status();
  try {
    return uint64_t(std::stoull(*line));
  } catch (const std::exception&) {
    return Status::Internal(path + " holds \"" + *line + "\", not a number");
  }
}

// The device node of `disk_dir` (a /sys/.../block/<disk> directory), checked
// to be the device the directory describes.
std::string DeviceNode(const fs::path& disk_dir, std::string* why_not) {
  std::string name = disk_dir.filename().string();
  std::ifstream uevent(disk_dir / "uevent");
  for (std::string line; std::getline(uevent, line);) {
    if (line.starts_with("DEVNAME=")) name = line.substr(8);
  }
  auto dev = ReadFirstLine((disk_dir / "dev").string());
  unsigned major_number = 0, minor_number = 0;
  if (!dev.ok() || std::sscanf(dev->c_str(), "%u:%u", &major_number, &minor_number) != 2) {
    *why_not = "no dev file under " + disk_dir.string();
    return "";
  }
  std::string node = "/dev/" + name;
  struct stat st {};
  if (::stat(node.c_str(), &st) != 0 || !S_ISBLK(st.st_mode) || st.st_rdev != makedev(major_number, minor_number)) {
    *why_not = node + " is not block device " + *dev;
    return "";
  }
  return node;
}

}  // namespace

Result<ReadaheadDevice> FindReadaheadDevice(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  const unsigned maj = major(st.st_dev), min = minor(st.st_dev);
  if (maj == 0) {
    return Status::NotFound(
        fmt::format("{} lives on a filesystem without a block device (st_dev {}:{}: tmpfs, overlayfs, btrfs, a network "
                    "filesystem?)",
                    path, maj, min));
  }
  std::error_code ec;
  fs::path dir = fs::canonical(fmt::format("/sys/dev/block/{}:{}", maj, min), ec);
  if (ec) return Status::FromErrno(ec.value(), fmt::format("resolve /sys/dev/block/{}:{}", maj, min));
  // A partition has no queue of its own: the disk above it does.
  while (!fs::exists(dir / "queue" / "read_ahead_kb", ec)) {
    if (!dir.has_parent_path() || dir.parent_path() == dir || dir.string() == "/sys/devices") {
      return Status::NotFound(fmt::format("no queue/read_ahead_kb above /sys/dev/block/{}:{}", maj, min));
    }
    dir = dir.parent_path();
  }
  ReadaheadDevice device;
  device.disk = dir.filename().string();
  device.sysfs_path = (dir / "queue" / "read_ahead_kb").string();
  std::string why_not;
  device.node = DeviceNode(dir, &why_not);
  auto kib = ReadKib(device.sysfs_path);
  if (!kib.ok()) return kib.status();
  device.original_kib = *kib;
  return device;
}

ReadaheadOverride::ReadaheadOverride(ReadaheadDevice device) : device_(std::move(device)) {}

Result<std::unique_ptr<ReadaheadOverride>> ReadaheadOverride::Take(const ReadaheadDevice& device) {
  if (armed) return Status::Conflict("another readahead override is alive");
  std::unique_ptr<ReadaheadOverride> o(new ReadaheadOverride(device));
  if (device.node.empty()) {
    o->node_note_ = "no device node found for " + device.disk;
  } else {
    o->node_.reset(::open(device.node.c_str(), O_RDONLY | O_CLOEXEC));
    if (!o->node_) {
      o->node_note_ = fmt::format("cannot open {}: {}", device.node, std::strerror(errno));
    } else {
      long sectors = 0;
      if (::ioctl(o->node_.get(), BLKRAGET, &sectors) != 0) {
        o->node_note_ = fmt::format("BLKRAGET on {}: {}", device.node, std::strerror(errno));
        o->node_.reset();
      } else if (uint64_t(sectors) / 2 != device.original_kib) {
        return Status::Internal(fmt::format("BLKRAGET on {} says {} KiB, {} says {} KiB", device.node, sectors / 2,
                                            device.sysfs_path, device.original_kib));
      }
    }
  }
  // Writing the original value changes nothing and proves we may write.
  std::string sysfs_error;
  {
    std::ofstream out(device.sysfs_path);
    if (out && (out << device.original_kib << "\n" << std::flush)) {
      o->sysfs_writable_ = true;
    } else {
      sysfs_error = fmt::format("cannot write {}: {}", device.sysfs_path, std::strerror(errno));
    }
  }
  if (!o->sysfs_writable_) {
    bool ioctl_ok = o->node_ && ::ioctl(o->node_.get(), BLKRASET, long(device.original_kib * 2)) == 0;
    if (!ioctl_ok) {
      return Status::PermissionDenied(
          fmt::format("cannot set the readahead of {} (needs root and a writable /sys): "
                      "{}; {}",
                      device.disk, sysfs_error, o->node_note_.empty() ? "BLKRASET refused" : o->node_note_));
    }
  }

  std::snprintf(prepared.sysfs_path, sizeof(prepared.sysfs_path), "%s", device.sysfs_path.c_str());
  prepared.value_len = size_t(std::snprintf(prepared.value, sizeof(prepared.value), "%llu\n",
                                            static_cast<unsigned long long>(device.original_kib)));
  prepared.node_fd = o->node_.get();
  prepared.sectors = long(device.original_kib * 2);
  prepared.use_sysfs = o->sysfs_writable_;
  armed = 1;
  o->armed_ = true;
  struct sigaction action {};
  action.sa_handler = OnFatalSignal;
  action.sa_flags = SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  for (size_t i = 0; i < std::size(kSignals); ++i) ::sigaction(kSignals[i], &action, &previous_actions[i]);
  return o;
}

ReadaheadOverride::~ReadaheadOverride() {
  if (!armed_) return;  // Take failed before it changed anything
  Status restored = Restore();
  if (!restored.ok()) {
    // The handler-style write is the last resort; say so loudly either way.
    RestoreReadaheadNow();
    std::fprintf(stderr, "restore_bench: putting back the readahead of %s (%llu KiB): %s\n", device_.disk.c_str(),
                 static_cast<unsigned long long>(device_.original_kib), restored.ToString().c_str());
  }
  for (size_t i = 0; i < std::size(kSignals); ++i) ::sigaction(kSignals[i], &previous_actions[i], nullptr);
  armed = 0;
}

Status ReadaheadOverride::Write(uint64_t kib) {
  if (sysfs_writable_) {
    std::ofstream out(device_.sysfs_path);
    if (!out || !(out << kib << "\n" << std::flush)) return Status::FromErrno(errno, "write " + device_.sysfs_path);
    return Status::Ok();
  }
  if (::ioctl(node_.get(), BLKRASET, long(kib * 2)) != 0) return Status::FromErrno(errno, "BLKRASET " + device_.node);
  return Status::Ok();
}

Result<uint64_t> ReadaheadOverride::ReadBack() const {
  auto kib = ReadKib(device_.sysfs_path);
  if (!kib.ok()) return kib.status();
  if (node_) {
    long sectors = 0;
    if (::ioctl(node_.get(), BLKRAGET, &sectors) != 0) return Status::FromErrno(errno, "BLKRAGET " + device_.node);
    if (uint64_t(sectors) / 2 != *kib) {
      return Status::Internal(fmt::format("{} says {} KiB but BLKRAGET on {} says {} KiB", device_.sysfs_path, *kib,
                                          device_.node, sectors / 2));
    }
  }
  return kib;
}

Status ReadaheadOverride::Set(uint64_t kib) {
  if (kib % 4 != 0) return Status::InvalidArgument(fmt::format("readahead {} KiB is not a multiple of 4 KiB", kib));
  UFFD_RETURN_IF_ERROR(Write(kib));
  auto now = ReadBack();
  if (!now.ok()) return now.status();
  if (*now != kib) {
    return Status::Internal(
        fmt::format("set the readahead of {} to {} KiB, it reads back {} KiB", device_.disk, kib, *now));
  }
  return Status::Ok();
}

Status ReadaheadOverride::Restore() { return Set(device_.original_kib); }

nlohmann::json ReadaheadOverride::Describe() const {
  nlohmann::json j = {{"disk", device_.disk},
                      {"read_ahead_kb", device_.sysfs_path},
                      {"original_kib", device_.original_kib},
                      {"set_through", sysfs_writable_ ? "read_ahead_kb" : "BLKRASET"},
                      {"checked_with_blkraget", node_.valid()}};
  if (!device_.node.empty()) j["node"] = device_.node;
  if (!node_note_.empty()) j["blkraget_note"] = node_note_;
  return j;
}

void RestoreReadaheadNow() {
  if (!armed) return;
  if (prepared.use_sysfs) {
    int fd = ::open(prepared.sysfs_path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      (void)!::write(fd, prepared.value, prepared.value_len);
      ::close(fd);
    }
  } else if (prepared.node_fd >= 0) {
    (void)::ioctl(prepared.node_fd, BLKRASET, prepared.sectors);
  }
}

}  // namespace uffdpager::bench
