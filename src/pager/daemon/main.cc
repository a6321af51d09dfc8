// uffd-pager: the host-wide userfaultfd page server.
#include <signal.h>
#include <sys/stat.h>

#include <string>
#include <thread>

#include <spdlog/spdlog.h>
#include "common/cli.h"
#include "common/logging.h"
#include "common/version.h"
#include "pager/daemon/pager_daemon.h"

namespace {

using uffdpager::cli::IntegerIn;

constexpr uint64_t kMaxCacheBytes = 1ULL << 50;     // 1 PiB: more is a typo, not a cache
constexpr uint64_t kMaxMilliseconds = 3600 * 1000;  // an hour

// What the command line sets beyond PagerOptions.
struct CommandLine {
  uffdpager::PagerOptions options;
  std::string log_level = "info";
  std::string zero_pages = "detect";
};

void AddFlags(uffdpager::cli::CommandLine& command_line, CommandLine& cl) {
  uffdpager::PagerOptions& options = cl.options;
  CLI::App& app = command_line.app();
  command_line.AddDataDirFlag(&options.data_dir, "data directory; files go under DATA/uffd/VERSION/");
  command_line.AddVersionKeyFlag(&options.version_key, "version key naming this pager's directory DATA/uffd/KEY");
  app.add_option("--cache-max-bytes", options.cache_max_bytes,
                 "bound of the shared page cache in bytes (0: keep no page)")
      ->capture_default_str()
      ->check(IntegerIn(0, kMaxCacheBytes));
  app.add_option("--handshake-timeout-ms", options.handshake_timeout_ms,
                 "how long a connected client may stay silent before it is dropped")
      ->capture_default_str()
      ->check(IntegerIn(1, kMaxMilliseconds));
  app.add_option("--http-idle-timeout-seconds", options.http_idle_timeout_seconds,
                 "how long a control API connection may stay idle before it is closed")
      ->capture_default_str()
      ->check(IntegerIn(1, 86400));
  app.add_option("--max-request-bytes", options.max_request_bytes, "largest control API request body")
      ->capture_default_str()
      ->check(IntegerIn(1024, 1ULL << 30));
  app.add_option("--fault-around-max-pages", options.fault_around_max_pages,
                 "install up to this many missing neighbours with each demand fault (adaptive; 0 = off)")
      ->capture_default_str()
      ->check(IntegerIn(0, 512));
  app.add_option("--zero-pages", cl.zero_pages,
                 "detect: all-zero pages and file holes keep no cache memory and go in with UFFDIO_ZEROPAGE; "
                 "copy: treat them as data (to measure what detection saves)")
      ->capture_default_str()
      ->check(CLI::IsMember({"detect", "copy"}));
  app.add_flag("--prefetch,!--no-prefetch", options.prefetch,
               "record the working set of a cache key's first restore and prefetch it into later ones (default: "
               "on; --no-prefetch turns it off)");
  app.add_option(
         "--prefetch-record-ms", options.prefetch_record_ms,
         "how long after its handshake a restore's faults are recorded as the working set (longer while they go "
         "on: until they pause for 500 ms, at most ten times this)")
      ->capture_default_str()
      ->check(IntegerIn(1, kMaxMilliseconds));
  app.add_option("--object-cache-max-bytes", options.object_cache_max_bytes,
                 "bound of the disk tier of snapshots in object storage (whole object versions no session uses are "
                 "removed, least recently written first); 0: none")
      ->capture_default_str()
      ->check(IntegerIn(0, uint64_t{1} << 50));
  app.add_option("--object-readahead-chunks", options.object_readahead_chunks,
                 "1 MiB chunks of an object fetched ahead with a demanded one, in the same round of parallel GETs "
                 "(never across a hole of its page map); 0: none")
      ->capture_default_str()
      ->check(IntegerIn(0, 63));
  app.add_option("--object-store-retries", options.object_store_retries,
                 "how often a failed request to the object store (timeout, refused or reset connection, 5xx) is "
                 "tried again, with backoff from 50 ms doubling to 2 s, before the sessions that need it fail")
      ->capture_default_str()
      ->check(IntegerIn(0, 100));
  app.add_option("--working-set-disk-bytes", options.working_set_disk_bytes,
                 "bound of the compact copies of working sets on disk (read in a few large reads at replay); "
                 "0: none, replay reads the memory file")
      ->capture_default_str()
      ->check(IntegerIn(0, uint64_t{1} << 50));
  app.add_flag("--refine-working-sets,!--no-refine-working-sets", options.refine_working_sets,
               "a replay of a record older than --working-set-refine-seconds holds back a sample of it and records "
               "again, so pages no longer touched age out and new ones join (default: on)");
  app.add_flag("--published-working-sets,!--no-published-working-sets", options.published_working_sets,
               "with an object store: publish the working set recorded for a snapshot of object layers as "
               "TOP.workingset beside its top layer, and replay the one published there when this pager has none "
               "(default: on)");
  app.add_option("--working-set-refine-seconds", options.working_set_refine_seconds,
                 "how old a working-set record must be before a replay refines it (0: every replay)")
      ->capture_default_str()
      ->check(IntegerIn(0, 86400 * 365));
  app.add_option("--socket-owner", options.socket_owner,
                 "user (name or uid) that owns control.sock and the session sockets (default: the pager's user)");
  app.add_option("--socket-group", options.socket_group,
                 "group (name or gid) given the sockets, with mode 0660 (default: none, mode 0600)");
  app.add_option("--allowed-backing-root", options.allowed_backing_roots,
                 "serve only backing files beneath this directory (repeatable; default: any path)")
      ->take_all()
      ->allow_extra_args(false);
  app.add_option("--metrics-addr", options.metrics_addr,
                 "also serve GET /metrics (Prometheus) on this loopback HOST:PORT, e.g. 127.0.0.1:9464");
  app.add_option("--take-over", options.take_over_versions,
                 "at start, take the live sessions of the pager of this version key (repeatable); it exits "
                 "once they are ours");
  app.add_flag("--take-over-all", options.take_over_all,
               "at start, take the live sessions of every other version's pager under DATA/uffd/");
  command_line.AddLogLevelFlag(&cl.log_level);
  command_line.SetExamples({
      "uffd-pager                                    # DATA and KEY from the environment or the defaults",
      "uffd-pager --data-dir /srv/vms --version-key v1 --cache-max-bytes 8589934592",
      "uffd-pager --version-key v2 --take-over v1     # upgrade: take v1's sessions, v1 exits",
      "uffd-pager --allowed-backing-root /srv/snapshots --metrics-addr 127.0.0.1:9464",
  });
}

// Blocks SIGTERM and SIGINT in this thread and every thread started after
// it, so one thread takes them with sigwait; ignores SIGPIPE.
sigset_t BlockTerminationSignals() {
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

// Serves until drained or signalled.
int Serve(const uffdpager::PagerOptions& options, const sigset_t& signals) {
  auto daemon = uffdpager::PagerDaemon::Start(options);
  if (!daemon.ok()) {
    spdlog::critical("cannot start: {}", daemon.status().ToString());
    return uffdpager::cli::ExitCodeFor(daemon.status());
  }
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig != 0) {
      spdlog::info("signal {}: shutting down", sig);
      (*daemon)->Shutdown();
    }
  });
  (*daemon)->WaitUntilDone();
  // Release the signal thread if no signal came, then tear down.
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  daemon->reset();
  return uffdpager::cli::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CommandLine cl;
  uffdpager::cli::CommandLine command_line(
      "uffd-pager", "uffd-pager: serves Firecracker userfaultfd page faults from snapshot memory files");
  AddFlags(command_line, cl);
  if (auto done = command_line.Parse(argc, argv)) return *done;
  cl.options.zero_pages = cl.zero_pages == "copy" ? uffdpager::ZeroPageMode::kCopy : uffdpager::ZeroPageMode::kDetect;
  uffdpager::ConfigureLogging("uffd-pager", cl.log_level);
  ::umask(077);  // sockets and files are private unless made otherwise
  sigset_t signals = BlockTerminationSignals();
  return Serve(cl.options, signals);
}
