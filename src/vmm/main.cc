// tinyvmm: a small KVM virtual machine monitor that speaks the part of
// Firecracker's API the snapshot lifecycle uses and performs Firecracker's
// exact UFFD handshake on a Uffd snapshot load. See firecracker_api.h for the
// routes and guest_program.h for what the guest does.
#include <signal.h>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/http_server.h"
#include "common/logging.h"
#include "vmm/firecracker_api.h"
#include "vmm/snapshot_verifier.h"
#include "vmm/vmm_controller.h"

namespace {

using namespace uffdpager;
using namespace uffdpager::vmm;

// The command line as given; Options() turns it into the VMM's options.
struct Flags {
  std::string api_sock;
  std::string log_level = "info";
  VmmOptions options;
  uint64_t hole_start_mib = options.hole_start / kMiB, hole_size_mib = options.hole_size / kMiB;
  uint64_t stall_ms = 5000, pause_ms = 5000;
  std::vector<std::string> verify;

  VmmOptions Options() const {
    VmmOptions out = options;
    out.hole_start = hole_start_mib * kMiB;
    out.hole_size = hole_size_mib * kMiB;
    out.stall_timeout = std::chrono::milliseconds(stall_ms);
    out.pause_timeout = std::chrono::milliseconds(pause_ms);
    return out;
  }
};

void AddFlags(CLI::App& app, Flags* flags) {
  VmmOptions& options = flags->options;
  auto* api_opt = app.add_option("--api-sock", flags->api_sock, "path of the API Unix socket");
  app.add_option("--verify", flags->verify,
                 "check two snapshots of a guest against the model and exit: FROM_STATE FROM_MEM TO_STATE TO_MEM")
      ->expected(4)
      ->excludes(api_opt);
  app.add_option("--id", options.instance_id, "instance id reported by GET /")->capture_default_str();
  app.add_option("--mem-hole-start-mib", flags->hole_start_mib,
                 "guest physical address (MiB, 2 MiB multiple) where RAM stops for the hole; memory beyond it "
                 "forms a second region")
      ->capture_default_str();
  app.add_option("--mem-hole-size-mib", flags->hole_size_mib, "size of the hole (MiB)")->capture_default_str();
  app.add_option("--guest-seed", options.program.seed, "seed of the guest's page walk and memory content")
      ->capture_default_str();
  app.add_option("--guest-write-every", options.program.write_every,
                 "the guest writes a counter into every Nth page it reads")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--stall-timeout-ms", flags->stall_ms,
                 "report a stall when a running vCPU (or a Uffd load) makes no progress for this long")
      ->capture_default_str();
  app.add_flag("--exit-on-stall", options.exit_on_stall, "exit with status 4 when a stall is detected");
  app.add_option("--pause-timeout-ms", flags->pause_ms, "how long PATCH /vm Paused waits for the vCPUs")
      ->capture_default_str();
  app.add_option("--log-level", flags->log_level, "trace, debug, info, warn, error")->capture_default_str();
}

// --verify FROM_STATE FROM_MEM TO_STATE TO_MEM: the exit code.
int Verify(const std::vector<std::string>& verify) {
  auto report = VerifyGuestProgress(verify[0], verify[1], verify[2], verify[3]);
  if (!report.ok()) {
    spdlog::error("verification failed: {}", report.status().ToString());
    return 1;
  }
  spdlog::info("verified: {} guest steps replayed, {} pages identical to the model", report->steps_replayed,
               report->pages_compared);
  return 0;
}

// Serves the Firecracker API on `api_sock` until SIGTERM or SIGINT: the exit
// code.
int Serve(const VmmOptions& options, const std::string& api_sock) {
  // Block the termination signals before any thread starts, so that every
  // thread inherits the mask and only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto controller = std::make_unique<VmmController>(options);
  FirecrackerApi api(*controller);
  HttpServerOptions http_options;
  http_options.error_body = [](const std::string& m) { return FirecrackerApi::FaultBody(m); };
  // A snapshot load may legitimately wait on the page server for a while.
  http_options.idle_timeout_seconds = 120;
  auto server = HttpServer::Start(api_sock, http_options, [&api](const HttpRequest& r) { return api.Handle(r); });
  if (!server.ok()) {
    spdlog::error("cannot serve the API on {}: {}", api_sock, server.status().ToString());
    return 1;
  }
  spdlog::info("tinyvmm {} serving the Firecracker API on {}", options.instance_id, api_sock);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("signal {}: stopping", sig);
  // A request stuck on guest memory nobody serves would hold the server's
  // shutdown forever; the vCPU threads likewise. Stop what stops, then exit
  // without running destructors of what may still be in use.
  bool clean = controller->Shutdown(std::chrono::seconds(2));
  if (!clean) {
    spdlog::warn("vCPU threads are stuck in the kernel; exiting without waiting for them");
    spdlog::default_logger()->flush();
    std::_Exit(0);
  }
  server->reset();
  controller.reset();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tinyvmm: a small KVM VMM with Firecracker's snapshot API"};
  Flags flags;
  AddFlags(app, &flags);
  CLI11_PARSE(app, argc, argv);
  ConfigureLogging("tinyvmm", flags.log_level);
  if (!flags.verify.empty()) return Verify(flags.verify);
  if (flags.api_sock.empty()) {
    spdlog::error("--api-sock is required");
    return 2;
  }
  return Serve(flags.Options(), flags.api_sock);
}
