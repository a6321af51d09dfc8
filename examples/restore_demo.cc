// restore_demo: starts a uffd-pager on a data directory of its own, generates
// one snapshot memory file, and restores several concurrent "VMs" from it
// through the pager. Each VM is a child process that lays out guest memory
// and performs the UFFD handshake exactly as Firecracker does, touches a
// realistic working set (a hot core plus a random tail) from two vCPU-like
// threads, and checks every byte it touched against the file. The demo then
// prints what the pager served, and from where: disk or shared cache.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "common/guest_memory.h"
#include "common/memory_mapping.h"
#include "common/unique_fd.h"
#include "common/vmm_handshake.h"
#include "uffdpager/pager_client.h"
#include "uffdpager/pager_process.h"

namespace fs = std::filesystem;
using namespace uffdpager;

namespace {

constexpr uint64_t kMiB = 1ULL << 20;
constexpr uint64_t kPage = 4096;

// A memory file whose pages are random bytes, with every eighth page zero
// (as real guests have plenty of).
Status GenerateSnapshot(const std::string& path, uint64_t bytes) {
  std::mt19937_64 rng(2026);
  std::vector<uint64_t> page(kPage / 8);
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return Status::FromErrno(errno, "create " + path);
  for (uint64_t p = 0; p < bytes / kPage; ++p) {
    for (auto& w : page) w = (p % 8 == 7) ? 0 : rng();
    if (::write(fd.get(), page.data(), kPage) != ssize_t(kPage)) return Status::FromErrno(errno, "write " + path);
  }
  return Status::Ok();
}

// The pages a VM touches: all of a hot core (first quarter) and a random
// tenth of the rest, in a shuffled order seeded per VM.
std::vector<uint64_t> WorkingSet(uint64_t pages, unsigned vm) {
  std::mt19937_64 rng(vm + 1);
  std::vector<uint64_t> set;
  for (uint64_t p = 0; p < pages / 4; ++p) set.push_back(p);
  for (uint64_t p = pages / 4; p < pages; ++p) {
    if (rng() % 10 == 0) set.push_back(p);
  }
  std::shuffle(set.begin(), set.end(), rng);
  return set;
}

// The body of one VM process; returns its exit code.
int RunVm(unsigned vm, const std::string& socket_path, const std::string& snapshot, uint64_t bytes) {
  auto start = std::chrono::steady_clock::now();
  // Two regions, as Firecracker has once guest memory crosses its MMIO hole.
  auto memory = GuestMemory::Allocate({bytes * 3 / 4, bytes / 4}, kPage);
  if (!memory.ok()) return fmt::print(stderr, "vm{}: {}\n", vm, memory.status().ToString()), 2;
  VmmHandshakeOptions handshake_options;
  auto handshake = PerformVmmHandshake(*memory, socket_path, handshake_options);
  if (!handshake.ok()) return fmt::print(stderr, "vm{}: {}\n", vm, handshake.status().ToString()), 2;

  auto set = WorkingSet(bytes / kPage, vm);
  std::vector<std::thread> vcpus;
  for (unsigned t = 0; t < 2; ++t) {
    vcpus.emplace_back([&, t] {
      for (size_t i = t; i < set.size(); i += 2) {
        (void)*reinterpret_cast<volatile uint8_t*>(memory->AtFileOffset(set[i] * kPage));
      }
    });
  }
  for (auto& v : vcpus) v.join();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  UniqueFd file(::open(snapshot.c_str(), O_RDONLY | O_CLOEXEC));
  auto mapped = MemoryMapping::Map(nullptr, bytes, PROT_READ, MAP_SHARED, file.get(), 0, "snapshot");
  if (!mapped.ok()) return fmt::print(stderr, "vm{}: {}\n", vm, mapped.status().ToString()), 2;
  uint64_t wrong = 0;
  for (uint64_t p : set) wrong += std::memcmp(memory->AtFileOffset(p * kPage), mapped->data() + p * kPage, kPage) != 0;
  fmt::print("  vm{}: touched {} pages ({:.1f} MiB) in {:.3f} s from 2 vCPU threads; {}\n", vm, set.size(),
             set.size() * kPage / double(kMiB), seconds,
             wrong == 0 ? "every byte matches the snapshot" : fmt::format("{} PAGES DIFFER", wrong));
  std::fflush(stdout);
  return wrong == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path exe_dir = fs::read_symlink("/proc/self/exe").parent_path();
  std::string data_dir = (exe_dir.parent_path() / "demo-data").string();
  unsigned vms = 4;
  uint64_t memory_mib = 64;
  CLI::App app{"restore several concurrent VMs from one snapshot through a uffd-pager"};
  app.add_option("--data-dir", data_dir, "where the pager and the snapshot live")->capture_default_str();
  app.add_option("--vms", vms, "concurrent VMs to restore")->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--memory-mib", memory_mib, "guest memory per VM")->capture_default_str()->check(CLI::Range(8, 4096));
  CLI11_PARSE(app, argc, argv);
  memory_mib = memory_mib / 8 * 8;
  const uint64_t bytes = memory_mib * kMiB;

  fs::create_directories(data_dir + "/snapshots");
  std::string snapshot = data_dir + "/snapshots/demo.mem";
  std::error_code ec;
  if (fs::file_size(snapshot, ec) != bytes) {
    fmt::print("generating a {} MiB snapshot memory file at {}\n", memory_mib, snapshot);
    if (Status st = GenerateSnapshot(snapshot, bytes); !st.ok()) return fmt::print(stderr, "{}\n", st.ToString()), 1;
  }

  PagerLaunchOptions launch;
  launch.binary = (exe_dir / "uffd-pager").string();
  launch.data_dir = data_dir;
  launch.version_key = "demo";
  launch.cache_max_bytes = 1ULL << 30;
  launch.log_path = data_dir + "/pager.log";
  auto pager = PagerProcess::Launch(launch);
  if (!pager.ok()) return fmt::print(stderr, "cannot start uffd-pager: {}\n", pager.status().ToString()), 1;
  const PagerClient& client = (*pager)->client();
  fmt::print("uffd-pager pid {} serving {} (log: {})\n", (*pager)->pid(), client.control_socket_path(),
             launch.log_path);

  // The orchestrator's part: one session per VM, created before the VM loads.
  std::vector<std::string> sockets;
  for (unsigned vm = 0; vm < vms; ++vm) {
    CreateSessionRequest req;
    req.instance_id = fmt::format("vm{}", vm);
    req.backing_memory_path = fs::absolute(snapshot).string();
    req.cache_key = "demo-snapshot";
    auto created = client.CreateSession(req);
    if (!created.ok()) return fmt::print(stderr, "{}\n", created.status().ToString()), 1;
    sockets.push_back(created->uffd_socket_path);
  }
  fmt::print("restoring {} VMs of {} MiB each, concurrently:\n", vms, memory_mib);
  std::fflush(stdout);
  std::vector<pid_t> children;
  for (unsigned vm = 0; vm < vms; ++vm) {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(RunVm(vm, sockets[vm], snapshot, bytes));
    children.push_back(pid);
  }
  int failures = 0;
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    failures += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }

  auto stats = client.Stats();
  if (!stats.ok()) return fmt::print(stderr, "{}\n", stats.status().ToString()), 1;
  const auto& s = *stats;
  uint64_t served = s["bytes_copied"].get<uint64_t>();
  uint64_t from_disk = s["backing_bytes_read"].get<uint64_t>();
  uint64_t hits = s["cache_hits"].get<uint64_t>(), misses = s["cache_misses"].get<uint64_t>();
  fmt::print("pager served {} faults: {} pages ({:.1f} MiB) copied into {} VMs\n", s["faults"].get<uint64_t>(),
             s["pages_copied"].get<uint64_t>(), served / double(kMiB), vms);
  fmt::print("  zero pages:        {} (UFFDIO_ZEROPAGE: nothing copied, nothing cached)\n",
             s["zero_pages"].get<uint64_t>());
  fmt::print("  from disk:         {:.1f} MiB ({} page reads)\n", from_disk / double(kMiB), misses);
  fmt::print("  from shared cache: {:.1f} MiB ({} hits, {:.0f}% of pages)\n",
             (served - std::min(served, from_disk)) / double(kMiB), hits,
             100.0 * hits / std::max<uint64_t>(1, hits + misses));
  fmt::print("  mean fault service time: {:.1f} us\n", s["fault_service_ns_avg"].get<uint64_t>() / 1000.0);

  for (unsigned vm = 0; vm < vms; ++vm) (void)client.CloseSession(fmt::format("vm{}", vm));
  (void)client.Drain();
  (*pager)->WaitForExit(std::chrono::seconds(10));
  if (failures != 0) {
    fmt::print(stderr, "{} VM(s) saw wrong bytes or failed\n", failures);
    return 1;
  }
  fmt::print("all {} VMs restored with every byte right\n", vms);
  return 0;
}
