// pagerctl: command-line client of uffd-pager's control API.
#include <cstdio>
#include <iostream>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include "common/cli.h"
#include "common/json_fields.h"
#include "uffdpager/pager_client.h"
#include "uffdpager/pager_graduation.h"
#include "uffdpager/pager_service.h"

namespace {

using uffdpager::PagerClient;
using uffdpager::Status;
using uffdpager::cli::CommandLine;
using uffdpager::cli::IntegerIn;
using Json = nlohmann::json;

// The flags every command accepts, read by the commands once parsed.
struct GlobalFlags {
  std::string socket, data_dir, version_key;
  bool json = false;
};

void PrintJson(const Json& j) { std::cout << j.dump(2) << "\n"; }

std::string HealthLine(const uffdpager::PagerHealth& h, const std::string& socket) {
  return fmt::format("uffd-pager {} (build {}) is up on {}; {}; {} active session(s){}", h.version, h.pager_version,
                     socket, h.draining ? "DRAINING" : "accepting sessions", h.active_sessions,
                     h.metrics_addr.empty() ? "" : "; metrics on " + h.metrics_addr);
}

void PrintSessions(const Json& sessions) {
  std::cout << fmt::format("{:<24} {:<10} {:<20} {:>9} {:>9} {:>10} {:>10}  {}\n", "SESSION", "STATE", "INSTANCE",
                           "FAULTS", "COPIED", "PRESENT", "DISK_MiB", "REASON");
  for (const auto& s : sessions) {
    // A table shows what it can: a field the pager did not send, or sent
    // with another type, shows as empty or 0.
    uffdpager::JsonFields fields(s);
    std::string id, state, instance, reason;
    uint64_t present = 0, faults = 0, copied = 0, disk_bytes = 0;
    Json counters;
    (void)fields.ReadOptional("session_id", &id);
    (void)fields.ReadOptional("state", &state);
    (void)fields.ReadOptional("instance_id", &instance);
    (void)fields.ReadOptional("present_pages", &present);
    (void)fields.ReadOptional("reason", &reason);
    (void)fields.ReadOptional("counters", &counters);
    uffdpager::JsonFields c(counters, "counters");
    (void)c.ReadOptional("faults", &faults);
    (void)c.ReadOptional("pages_copied", &copied);
    (void)c.ReadOptional("backing_bytes_read", &disk_bytes);
    std::cout << fmt::format("{:<24} {:<10} {:<20} {:>9} {:>9} {:>10} {:>10.1f}  {}\n", id, state, instance, faults,
                             copied, present, disk_bytes / 1048576.0, reason);
  }
}

// Runs `work` with `step` shown as progress; the progress is erased before
// the caller prints anything.
template <typename Work>
auto WithProgress(const std::string& step, Work work) {
  uffdpager::cli::Progress progress("pagerctl");
  progress.Step(step);
  return work();
}

void AddGlobalFlags(CommandLine& command_line, GlobalFlags* flags) {
  CLI::App& app = command_line.app();
  app.require_subcommand(1);
  app.add_option("--socket", flags->socket, "the pager's control socket (default: DATA/uffd/KEY/control.sock)");
  command_line.AddDataDirFlag(&flags->data_dir, "the pager's data directory");
  command_line.AddVersionKeyFlag(&flags->version_key, "the pager's version key");
  command_line.AddJsonFlag(&flags->json, "print the pager's JSON answer unchanged instead of a line of text");
  command_line.SetExamples({"pagerctl health", "pagerctl --version-key v1 sessions --json",
                            "pagerctl create --instance-id vm1 --backing /srv/snap/mem",
                            "pagerctl --version-key v2 ensure && pagerctl --version-key v2 drain-others"});
}

// The client of the pager the global flags name: --socket, else the control
// socket of --data-dir and --version-key.
PagerClient ClientFor(const GlobalFlags& flags) {
  return PagerClient(flags.socket.empty() ? PagerClient::ControlSocketPath(flags.data_dir, flags.version_key)
                                          : flags.socket);
}

// The service of the pager version the global flags name: `options` holds
// the command's own settings, the global flags add the data directory and
// the version key.
uffdpager::Result<uffdpager::PagerService> ServiceFor(const GlobalFlags& flags,
                                                      uffdpager::PagerServiceOptions options) {
  options.data_dir = flags.data_dir;
  options.version_key = flags.version_key;
  return uffdpager::PagerService::Create(std::move(options));
}

// health and ensure: the pager's health, as JSON or one line.
int ReportHealth(const CommandLine& command_line, const PagerClient& pager, bool json) {
  auto h = pager.Health();
  if (!h.ok()) return command_line.Fail(h.status());
  if (json) {
    PrintJson(h->answer);
  } else {
    uffdpager::cli::PrintResult(HealthLine(*h, pager.control_socket_path()));
  }
  return uffdpager::cli::kExitOk;
}

// The positional session id of show, close and complete.
std::shared_ptr<std::string> AddSessionIdArgument(CLI::App* command) {
  auto id = std::make_shared<std::string>();
  command->add_option("session_id", *id, "the session's id")->required();
  return id;
}

void AddHealthCommand(CommandLine& command_line, const GlobalFlags& flags) {
  auto* health = command_line.AddCommand("health", "is the pager up; is it draining", {"pagerctl health --json"});
  command_line.SetAction(health,
                         [&command_line, &flags] { return ReportHealth(command_line, ClientFor(flags), flags.json); });
}

void AddStatsCommand(CommandLine& command_line, const GlobalFlags& flags) {
  auto* stats = command_line.AddCommand("stats", "cache and fault counters", {"pagerctl stats"});
  command_line.SetAction(stats, [&command_line, &flags] {
    auto s = ClientFor(flags).Stats();
    if (!s.ok()) return command_line.Fail(s.status());
    if (flags.json) {
      PrintJson(*s);
    } else {
      for (const auto& [k, v] : s->items()) std::cout << fmt::format("{:<26} {}\n", k, v.dump());
    }
    return uffdpager::cli::kExitOk;
  });
}

void AddSessionsCommand(CommandLine& command_line, const GlobalFlags& flags) {
  auto* sessions = command_line.AddCommand("sessions", "list sessions with their counters", {"pagerctl sessions"});
  command_line.SetAction(sessions, [&command_line, &flags] {
    auto list = ClientFor(flags).ListSessions();
    if (!list.ok()) return command_line.Fail(list.status());
    if (flags.json) {
      PrintJson(Json{{"sessions", *list}});  // GET /sessions's answer
    } else {
      PrintSessions(*list);
    }
    return uffdpager::cli::kExitOk;
  });
}

void AddShowCommand(CommandLine& command_line, const GlobalFlags& flags) {
  auto* show = command_line.AddCommand("show", "one session in detail", {"pagerctl show vm1"});
  auto id = AddSessionIdArgument(show);
  command_line.SetAction(show, [&command_line, &flags, id] {
    auto session = ClientFor(flags).GetSession(*id);
    if (!session.ok()) return command_line.Fail(session.status());
    if (flags.json) {
      PrintJson(*session);
    } else {
      PrintSessions(Json::array({*session}));
    }
    return uffdpager::cli::kExitOk;
  });
}

// create's flags: the request, and the ids that go into it only when given.
struct CreateFlags {
  uffdpager::CreateSessionRequest request;
  uint64_t socket_uid = 0, socket_gid = 0, expected_uid = 0, expected_pid = 0;
  CLI::Option* socket_uid_flag = nullptr;
  CLI::Option* socket_gid_flag = nullptr;
  CLI::Option* expected_uid_flag = nullptr;
  CLI::Option* expected_pid_flag = nullptr;

  uffdpager::CreateSessionRequest Request() const {
    uffdpager::CreateSessionRequest req = request;
    if (socket_uid_flag->count() > 0) req.socket_uid = static_cast<uint32_t>(socket_uid);
    if (socket_gid_flag->count() > 0) req.socket_gid = static_cast<uint32_t>(socket_gid);
    if (expected_uid_flag->count() > 0) req.expected_uid = static_cast<uint32_t>(expected_uid);
    if (expected_pid_flag->count() > 0) req.expected_pid = static_cast<int32_t>(expected_pid);
    return req;
  }
};

void AddCreateCommand(CommandLine& command_line, const GlobalFlags& flags) {
  auto* create = command_line.AddCommand(
      "create", "create a session for a VM restore (PUT /snapshot/load's backend_path is its socket)",
      {"pagerctl create --instance-id vm1 --backing /srv/snap/mem",
       "pagerctl create --instance-id vm1 --backing /srv/snap/mem --socket-uid 123 --expected-uid 123",
       "pagerctl create --instance-id vm1 --backing-url s3://snapshots/vm1/mem",
       "pagerctl create --instance-id vm1 --backing-layer /srv/snap/base.mem --backing-layer /srv/snap/diff1.mem"});
  auto f = std::make_shared<CreateFlags>();
  uffdpager::CreateSessionRequest& req = f->request;
  create->add_option("--instance-id", req.instance_id, "instance the VM belongs to")->required();
  auto* backing = create->add_option("--backing", req.backing_memory_path, "snapshot memory file (absolute path)");
  auto* backing_url =
      create->add_option("--backing-url", req.backing_memory_url,
                         "snapshot memory object, s3://BUCKET/KEY (the pager's store: its AWS_* environment)");
  auto* backing_layer = create->add_option(
      "--backing-layer", req.backing_layers,
      "a layer of a chain, base first: a path or an s3://BUCKET/KEY object (repeat it: each page comes from the "
      "topmost layer that holds it)");
  backing->excludes(backing_url);
  backing->excludes(backing_layer);
  backing_url->excludes(backing_layer);
  create->add_option("--session-id", req.session_id, "session id (default: the instance id)");
  create->add_option("--cache-key", req.cache_key, "cache key (default: the backing path or URL)");
  create->add_flag("--kill-on-failure", req.kill_client_on_failure, "kill the VMM if a fault cannot be served");
  constexpr uint64_t kMaxId = 0xfffffffe;  // (uid_t)-1 means "no change" to chown
  f->socket_uid_flag =
      create->add_option("--socket-uid", f->socket_uid, "give the session socket to this uid (a jailed VMM's)")
          ->check(IntegerIn(0, kMaxId));
  f->socket_gid_flag =
      create->add_option("--socket-gid", f->socket_gid, "give the session socket to this gid (mode 0660)")
          ->check(IntegerIn(0, kMaxId));
  f->expected_uid_flag = create->add_option("--expected-uid", f->expected_uid, "accept only a VMM running as this uid")
                             ->check(IntegerIn(0, kMaxId));
  f->expected_pid_flag = create->add_option("--expected-pid", f->expected_pid, "accept only the VMM with this pid")
                             ->check(IntegerIn(1, INT32_MAX));
  command_line.SetAction(create, [&command_line, &flags, f] {
    if (f->request.backing_memory_path.empty() && f->request.backing_memory_url.empty() &&
        f->request.backing_layers.empty()) {
      return command_line.Fail(
          uffdpager::Status::InvalidArgument("one of --backing, --backing-url and --backing-layer is required"));
    }
    auto created = ClientFor(flags).CreateSession(f->Request());
    if (!created.ok()) return command_line.Fail(created.status());
    if (flags.json) {
      PrintJson(created->answer);
    } else {
      uffdpager::cli::PrintResult(
          fmt::format("session {} listening on {}", created->session_id, created->uffd_socket_path));
    }
    return uffdpager::cli::kExitOk;
  });
}

void AddCloseCommand(CommandLine& command_line, const GlobalFlags& flags) {
  auto* close = command_line.AddCommand("close", "close a session", {"pagerctl close vm1"});
  auto id = AddSessionIdArgument(close);
  command_line.SetAction(close, [&command_line, &flags, id] {
    if (auto st = ClientFor(flags).CloseSession(*id); !st.ok()) return command_line.Fail(st);
    if (!flags.json) uffdpager::cli::PrintResult("session " + *id + " closed");
    return uffdpager::cli::kExitOk;
  });
}

void AddCompleteCommand(CommandLine& command_line, const GlobalFlags& flags) {
  auto* complete = command_line.AddCommand("complete", "populate every page of a session, then unregister",
                                           {"pagerctl complete vm1"});
  auto id = AddSessionIdArgument(complete);
  command_line.SetAction(complete, [&command_line, &flags, id] {
    PagerClient client = ClientFor(flags);
    Status completed =
        WithProgress("installing every page of session " + *id, [&] { return client.CompleteSession(*id); });
    if (!completed.ok()) return command_line.Fail(completed);
    if (!flags.json) {
      uffdpager::cli::PrintResult("session " + *id + " complete: every page present, memory unregistered");
    }
    return uffdpager::cli::kExitOk;
  });
}

void AddDrainCommand(CommandLine& command_line, const GlobalFlags& flags) {
  auto* drain = command_line.AddCommand("drain", "refuse new sessions; exit once no session holds a VM",
                                        {"pagerctl --version-key v1 drain"});
  command_line.SetAction(drain, [&command_line, &flags] {
    if (auto st = ClientFor(flags).Drain(); !st.ok()) return command_line.Fail(st);
    if (!flags.json) {
      uffdpager::cli::PrintResult("draining: new sessions refused; the pager exits once none holds a VM");
    }
    return uffdpager::cli::kExitOk;
  });
}

// ensure's flags: the bound on the start and the start command.
struct EnsureFlags {
  uint64_t ready_timeout_ms = uffdpager::PagerServiceOptions().ready_timeout.count();
  std::vector<std::string> start_command;
};

void AddEnsureCommand(CommandLine& command_line, const GlobalFlags& flags) {
  auto* ensure = command_line.AddCommand("ensure", "start this version's pager (its systemd unit) unless it answers",
                                         {"pagerctl --version-key v2 ensure",
                                          "pagerctl --data-dir /tmp/d --version-key t ensure -- uffd-pager --data-dir "
                                          "{data_dir} --version-key {version}"});
  auto f = std::make_shared<EnsureFlags>();
  ensure->add_option("--ready-timeout-ms", f->ready_timeout_ms, "bound on the start command plus the wait for /health")
      ->capture_default_str()
      ->check(IntegerIn(1, uffdpager::PagerService::kMaxReadyTimeout.count()));
  ensure->add_option("start_command", f->start_command,
                     "after --: the start command; {version} and {data_dir} are replaced "
                     "(default: systemctl start uffd-pager@{version}.service)");
  command_line.SetAction(ensure, [&command_line, &flags, f] {
    uffdpager::PagerServiceOptions options;
    options.ready_timeout = std::chrono::milliseconds(f->ready_timeout_ms);
    if (!f->start_command.empty()) options.start_command = f->start_command;
    auto service = ServiceFor(flags, options);
    if (!service.ok()) return command_line.Fail(service.status());
    auto pager = WithProgress("waiting for uffd-pager " + flags.version_key + " to answer",
                              [&] { return service->EnsureRunning(); });
    if (!pager.ok()) return command_line.Fail(pager.status());
    return ReportHealth(command_line, *pager, flags.json);
  });
}

void AddDrainOthersCommand(CommandLine& command_line, const GlobalFlags& flags) {
  auto* drain_others = command_line.AddCommand(
      "drain-others", "drain the pager of every other version under DATA/uffd/ (after an upgrade)",
      {"pagerctl --version-key v2 drain-others"});
  command_line.SetAction(drain_others, [&command_line, &flags] {
    auto service = ServiceFor(flags, uffdpager::PagerServiceOptions());
    if (!service.ok()) return command_line.Fail(service.status());
    auto drained = service->DrainOtherVersions();
    if (!drained.ok()) return command_line.Fail(drained.status());
    if (flags.json) {
      PrintJson(Json{{"drained", *drained}});
    } else if (drained->empty()) {
      uffdpager::cli::PrintResult("no other version of uffd-pager answers under " + flags.data_dir + "/uffd");
    } else {
      uffdpager::cli::PrintResult(
          fmt::format("draining {}: they serve their VMs and exit once none holds a VM", fmt::join(*drained, ", ")));
    }
    return uffdpager::cli::kExitOk;
  });
}

struct GraduateFlags {
  uint64_t soak_seconds = 600;
  uint64_t max_concurrent = 2;
  uint64_t retry_seconds = 60;
  uint64_t max_per_pass = 0;
  uint64_t passes = 1;
  uint64_t interval_seconds = 10;
};

Json GraduationJson(const uffdpager::GraduationReport& r) {
  return Json{{"graduated", r.graduated},     {"failed", r.failed},     {"soaking", r.soaking},
              {"backing_off", r.backing_off}, {"deferred", r.deferred}, {"still_served", r.still_served}};
}

std::string GraduationLine(const uffdpager::GraduationReport& r) {
  std::string served;
  for (const auto& [version, count] : r.still_served) {
    served += fmt::format("{}{} on {}", served.empty() ? "" : ", ", count, version);
  }
  return fmt::format("graduated {} session(s){}; {} soaking, {} backing off, {} deferred; still on a pager: {}",
                     r.graduated.size(),
                     r.graduated.empty() ? "" : " (" + fmt::format("{}", fmt::join(r.graduated, ", ")) + ")", r.soaking,
                     r.backing_off, r.deferred, served.empty() ? "none" : served);
}

void AddGraduateCommand(CommandLine& command_line, const GlobalFlags& flags) {
  auto* graduate = command_line.AddCommand(
      "graduate",
      "complete the serving sessions of every pager version older than the soak age, outdated versions first, so "
      "their VMs no longer depend on a pager",
      {"pagerctl --version-key v2 graduate --soak-seconds 600 --max-concurrent 2",
       "pagerctl --version-key v2 graduate --passes 0 --interval-seconds 30   # until stopped"});
  auto f = std::make_shared<GraduateFlags>();
  graduate->add_option("--soak-seconds", f->soak_seconds, "leave sessions younger than this on their pager")
      ->capture_default_str()
      ->check(IntegerIn(0, 365ULL * 24 * 3600));
  graduate->add_option("--max-concurrent", f->max_concurrent, "completions in flight at once")
      ->capture_default_str()
      ->check(IntegerIn(1, 64));
  graduate->add_option("--retry-seconds", f->retry_seconds, "after a failed completion, wait this long to retry it")
      ->capture_default_str()
      ->check(IntegerIn(0, 24 * 3600));
  graduate->add_option("--max-per-pass", f->max_per_pass, "graduate at most this many per pass (0: no bound)")
      ->capture_default_str()
      ->check(IntegerIn(0, 1000000));
  graduate->add_option("--passes", f->passes, "passes to run (0: until stopped)")
      ->capture_default_str()
      ->check(IntegerIn(0, 1000000));
  graduate->add_option("--interval-seconds", f->interval_seconds, "between passes")
      ->capture_default_str()
      ->check(IntegerIn(1, 24 * 3600));
  command_line.SetAction(graduate, [&command_line, &flags, f] {
    uffdpager::GraduationOptions options;
    options.data_dir = flags.data_dir;
    options.version_key = flags.version_key;
    options.soak_age = std::chrono::seconds(f->soak_seconds);
    options.max_concurrent = static_cast<unsigned>(f->max_concurrent);
    options.retry_backoff = std::chrono::seconds(f->retry_seconds);
    options.max_per_pass = f->max_per_pass;
    auto graduation = uffdpager::PagerGraduation::Create(options);
    if (!graduation.ok()) return command_line.Fail(graduation.status());
    bool any_failed = false;
    for (uint64_t pass = 0; f->passes == 0 || pass < f->passes; ++pass) {
      if (pass > 0) std::this_thread::sleep_for(std::chrono::seconds(f->interval_seconds));
      auto report = graduation->RunPass();
      if (!report.ok()) return command_line.Fail(report.status());
      if (flags.json) {
        PrintJson(GraduationJson(*report));
      } else {
        uffdpager::cli::PrintResult(GraduationLine(*report));
      }
      for (const auto& failure : report->failed) std::cerr << "pagerctl: graduate: " << failure << "\n";
      any_failed = !report->failed.empty();
    }
    // The last pass decides: a failure is retried by a later pass.
    return any_failed ? uffdpager::cli::kExitFailed : uffdpager::cli::kExitOk;
  });
}

}  // namespace

int main(int argc, char** argv) {
  CommandLine command_line("pagerctl", "pagerctl: control a running uffd-pager");
  GlobalFlags flags;
  AddGlobalFlags(command_line, &flags);
  AddHealthCommand(command_line, flags);  // in the order of --help
  AddStatsCommand(command_line, flags);
  AddSessionsCommand(command_line, flags);
  AddShowCommand(command_line, flags);
  AddCreateCommand(command_line, flags);
  AddCloseCommand(command_line, flags);
  AddCompleteCommand(command_line, flags);
  AddDrainCommand(command_line, flags);
  AddEnsureCommand(command_line, flags);
  AddDrainOthersCommand(command_line, flags);
  AddGraduateCommand(command_line, flags);
  if (auto done = command_line.Parse(argc, argv)) return *done;
  return command_line.RunCommand();
}
