// pagerctl: command-line client of uffd-pager's control API.
#include <cstdio>
#include <iostream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include "common/cli.h"
#include "common/json_fields.h"
#include "uffdpager/pager_client.h"
#include "uffdpager/pager_service.h"

namespace {

using uffdpager::PagerClient;
using uffdpager::Status;
using uffdpager::cli::IntegerIn;
using Json = nlohmann::json;

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

}  // namespace

int main(int argc, char** argv) {
  uffdpager::cli::CommandLine command_line("pagerctl", "pagerctl: control a running uffd-pager");
  CLI::App& app = command_line.app();
  app.require_subcommand(1);
  std::string socket, data_dir, version_key;
  bool json = false;
  app.add_option("--socket", socket, "the pager's control socket (default: DATA/uffd/KEY/control.sock)");
  command_line.AddDataDirFlag(&data_dir, "the pager's data directory");
  command_line.AddVersionKeyFlag(&version_key, "the pager's version key");
  command_line.AddJsonFlag(&json, "print the pager's JSON answer unchanged instead of a line of text");
  command_line.SetExamples({"pagerctl health", "pagerctl --version-key v1 sessions --json",
                            "pagerctl create --instance-id vm1 --backing /srv/snap/mem",
                            "pagerctl --version-key v2 ensure && pagerctl --version-key v2 drain-others"});

  auto* health = command_line.AddCommand("health", "is the pager up; is it draining", {"pagerctl health --json"});
  auto* stats = command_line.AddCommand("stats", "cache and fault counters", {"pagerctl stats"});
  auto* sessions = command_line.AddCommand("sessions", "list sessions with their counters", {"pagerctl sessions"});
  std::string id;
  auto* show = command_line.AddCommand("show", "one session in detail", {"pagerctl show vm1"});
  show->add_option("session_id", id, "the session's id")->required();
  auto* create = command_line.AddCommand(
      "create", "create a session for a VM restore (PUT /snapshot/load's backend_path is its socket)",
      {"pagerctl create --instance-id vm1 --backing /srv/snap/mem",
       "pagerctl create --instance-id vm1 --backing /srv/snap/mem --socket-uid 123 --expected-uid 123"});
  uffdpager::CreateSessionRequest req;
  create->add_option("--instance-id", req.instance_id, "instance the VM belongs to")->required();
  create->add_option("--backing", req.backing_memory_path, "snapshot memory file (absolute path)")->required();
  create->add_option("--session-id", req.session_id, "session id (default: the instance id)");
  create->add_option("--cache-key", req.cache_key, "cache key (default: the backing path)");
  create->add_flag("--kill-on-failure", req.kill_client_on_failure, "kill the VMM if a fault cannot be served");
  constexpr uint64_t kMaxId = 0xfffffffe;  // (uid_t)-1 means "no change" to chown
  uint64_t socket_uid = 0, socket_gid = 0, expected_uid = 0, expected_pid = 0;
  auto* socket_uid_flag =
      create->add_option("--socket-uid", socket_uid, "give the session socket to this uid (a jailed VMM's)")
          ->check(IntegerIn(0, kMaxId));
  auto* socket_gid_flag =
      create->add_option("--socket-gid", socket_gid, "give the session socket to this gid (mode 0660)")
          ->check(IntegerIn(0, kMaxId));
  auto* expected_uid_flag = create->add_option("--expected-uid", expected_uid, "accept only a VMM running as this uid")
                                ->check(IntegerIn(0, kMaxId));
  auto* expected_pid_flag = create->add_option("--expected-pid", expected_pid, "accept only the VMM with this pid")
                                ->check(IntegerIn(1, INT32_MAX));
  auto* close = command_line.AddCommand("close", "close a session", {"pagerctl close vm1"});
  close->add_option("session_id", id, "the session's id")->required();
  auto* complete = command_line.AddCommand("complete", "populate every page of a session, then unregister",
                                           {"pagerctl complete vm1"});
  complete->add_option("session_id", id, "the session's id")->required();
  auto* drain = command_line.AddCommand("drain", "refuse new sessions; exit once no session holds a VM",
                                        {"pagerctl --version-key v1 drain"});
  uffdpager::PagerServiceOptions service_options;
  uint64_t ready_timeout_ms = service_options.ready_timeout.count();
  std::vector<std::string> start_command;
  auto* ensure = command_line.AddCommand("ensure", "start this version's pager (its systemd unit) unless it answers",
                                         {"pagerctl --version-key v2 ensure",
                                          "pagerctl --data-dir /tmp/d --version-key t ensure -- uffd-pager --data-dir "
                                          "{data_dir} --version-key {version}"});
  ensure->add_option("--ready-timeout-ms", ready_timeout_ms, "bound on the start command plus the wait for /health")
      ->capture_default_str()
      ->check(IntegerIn(1, uffdpager::PagerService::kMaxReadyTimeout.count()));
  ensure->add_option("start_command", start_command,
                     "after --: the start command; {version} and {data_dir} are replaced "
                     "(default: systemctl start uffd-pager@{version}.service)");
  auto* drain_others = command_line.AddCommand(
      "drain-others", "drain the pager of every other version under DATA/uffd/ (after an upgrade)",
      {"pagerctl --version-key v2 drain-others"});
  if (auto done = command_line.Parse(argc, argv)) return *done;

  if (ensure->parsed() || drain_others->parsed()) {
    service_options.data_dir = data_dir;
    service_options.version_key = version_key;
    service_options.ready_timeout = std::chrono::milliseconds(ready_timeout_ms);
    if (!start_command.empty()) service_options.start_command = start_command;
    auto service = uffdpager::PagerService::Create(service_options);
    if (!service.ok()) return command_line.Fail(service.status());
    if (ensure->parsed()) {
      auto pager = [&] {
        uffdpager::cli::Progress progress("pagerctl");  // erased before anything else is printed
        progress.Step("waiting for uffd-pager " + version_key + " to answer");
        return service->EnsureRunning();
      }();
      if (!pager.ok()) return command_line.Fail(pager.status());
      auto h = pager->Health();
      if (!h.ok()) return command_line.Fail(h.status());
      if (json) {
        PrintJson(h->answer);
      } else {
        uffdpager::cli::PrintResult(HealthLine(*h, pager->control_socket_path()));
      }
    } else {
      auto drained = service->DrainOtherVersions();
      if (!drained.ok()) return command_line.Fail(drained.status());
      if (json) {
        PrintJson(Json{{"drained", *drained}});
      } else if (drained->empty()) {
        uffdpager::cli::PrintResult("no other version of uffd-pager answers under " + data_dir + "/uffd");
      } else {
        uffdpager::cli::PrintResult(
            fmt::format("draining {}: they serve their VMs and exit once none holds a VM", fmt::join(*drained, ", ")));
      }
    }
    return uffdpager::cli::kExitOk;
  }

  if (socket.empty()) socket = PagerClient::ControlSocketPath(data_dir, version_key);
  PagerClient client(socket);

  if (health->parsed()) {
    auto h = client.Health();
    if (!h.ok()) return command_line.Fail(h.status());
    if (json) {
      PrintJson(h->answer);
    } else {
      uffdpager::cli::PrintResult(HealthLine(*h, socket));
    }
  } else if (stats->parsed()) {
    auto s = client.Stats();
    if (!s.ok()) return command_line.Fail(s.status());
    if (json) {
      PrintJson(*s);
    } else {
      for (const auto& [k, v] : s->items()) std::cout << fmt::format("{:<26} {}\n", k, v.dump());
    }
  } else if (sessions->parsed()) {
    auto list = client.ListSessions();
    if (!list.ok()) return command_line.Fail(list.status());
    if (json) {
      PrintJson(Json{{"sessions", *list}});  // GET /sessions's answer
    } else {
      PrintSessions(*list);
    }
  } else if (show->parsed()) {
    auto session = client.GetSession(id);
    if (!session.ok()) return command_line.Fail(session.status());
    if (json) {
      PrintJson(*session);
    } else {
      Json one = Json::array({*session});
      PrintSessions(one);
    }
  } else if (create->parsed()) {
    if (socket_uid_flag->count() > 0) req.socket_uid = static_cast<uint32_t>(socket_uid);
    if (socket_gid_flag->count() > 0) req.socket_gid = static_cast<uint32_t>(socket_gid);
    if (expected_uid_flag->count() > 0) req.expected_uid = static_cast<uint32_t>(expected_uid);
    if (expected_pid_flag->count() > 0) req.expected_pid = static_cast<int32_t>(expected_pid);
    auto created = client.CreateSession(req);
    if (!created.ok()) return command_line.Fail(created.status());
    if (json) {
      PrintJson(created->answer);
    } else {
      uffdpager::cli::PrintResult(
          fmt::format("session {} listening on {}", created->session_id, created->uffd_socket_path));
    }
  } else if (close->parsed()) {
    if (auto st = client.CloseSession(id); !st.ok()) return command_line.Fail(st);
    if (!json) uffdpager::cli::PrintResult("session " + id + " closed");
  } else if (complete->parsed()) {
    Status completed;
    {
      uffdpager::cli::Progress progress("pagerctl");
      progress.Step("installing every page of session " + id);
      completed = client.CompleteSession(id);
    }
    if (!completed.ok()) return command_line.Fail(completed);
    if (!json) uffdpager::cli::PrintResult("session " + id + " complete: every page present, memory unregistered");
  } else if (drain->parsed()) {
    if (auto st = client.Drain(); !st.ok()) return command_line.Fail(st);
    if (!json) uffdpager::cli::PrintResult("draining: new sessions refused; the pager exits once none holds a VM");
  }
  return uffdpager::cli::kExitOk;
}
