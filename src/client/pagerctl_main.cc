// pagerctl: command-line client of uffd-pager's control API.
#include <cstdio>
#include <iostream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <CLI/CLI.hpp>

#include "common/json_fields.h"
#include "uffdpager/pager_client.h"
#include "uffdpager/pager_service.h"

namespace {

using uffdpager::PagerClient;
using Json = nlohmann::json;

int Fail(const uffdpager::Status& st) {
  std::cerr << "pagerctl: " << st.ToString() << "\n";
  return st.code() == uffdpager::ErrorCode::kUnavailable ? 3 : 1;
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
  CLI::App app{"pagerctl: control a running uffd-pager"};
  app.require_subcommand(1);
  std::string socket, data_dir = "/var/lib/uffd-pager", version_key;
  bool json = false;
  app.add_option("--socket", socket, "control socket (default DATA/uffd/VERSION/control.sock)");
  app.add_option("--data-dir", data_dir, "the pager's --data-dir")->capture_default_str();
  app.add_option("--version-key", version_key, "the pager's --version-key");
  app.add_flag("--json", json, "print the API's JSON instead of text");

  auto* health = app.add_subcommand("health", "is the pager up; is it draining");
  auto* stats = app.add_subcommand("stats", "cache and fault counters");
  auto* sessions = app.add_subcommand("sessions", "list sessions with their counters");
  auto* create = app.add_subcommand("create", "create a session for a VM restore");
  uffdpager::CreateSessionRequest req;
  create->add_option("--instance-id", req.instance_id, "instance the VM belongs to")->required();
  create->add_option("--backing", req.backing_memory_path, "snapshot memory file (absolute path)")->required();
  create->add_option("--session-id", req.session_id, "session id (default: the instance id)");
  create->add_option("--cache-key", req.cache_key, "cache key (default: the backing path)");
  create->add_flag("--kill-on-failure", req.kill_client_on_failure, "kill the VMM if a fault cannot be served");
  std::string id;
  auto* close = app.add_subcommand("close", "close a session");
  close->add_option("session_id", id)->required();
  auto* complete = app.add_subcommand("complete", "populate every page of a session, then unregister");
  complete->add_option("session_id", id)->required();
  auto* drain = app.add_subcommand("drain", "refuse new sessions; exit after the last closes");
  uffdpager::PagerServiceOptions service_options;
  int64_t ready_timeout_ms = service_options.ready_timeout.count();
  std::vector<std::string> start_command;
  auto* ensure = app.add_subcommand("ensure", "start this version's pager (its systemd unit) unless it answers");
  ensure->add_option("--ready-timeout-ms", ready_timeout_ms, "bound on the start command plus the wait for /health")
      ->capture_default_str();
  ensure->add_option("start_command", start_command,
                     "after --: the start command; {version} and {data_dir} are replaced "
                     "(default: systemctl start uffd-pager@{version}.service)");
  auto* drain_others =
      app.add_subcommand("drain-others", "drain the pager of every other version under DATA/uffd/ (upgrade)");
  CLI11_PARSE(app, argc, argv);

  if (ensure->parsed() || drain_others->parsed()) {
    if (version_key.empty()) {
      std::cerr << "pagerctl: " << (ensure->parsed() ? "ensure" : "drain-others")
                << " needs --version-key (and --data-dir)\n";
      return 2;
    }
    service_options.data_dir = data_dir;
    service_options.version_key = version_key;
    service_options.ready_timeout = std::chrono::milliseconds(ready_timeout_ms);
    if (!start_command.empty()) service_options.start_command = start_command;
    auto service = uffdpager::PagerService::Create(service_options);
    if (!service.ok()) return Fail(service.status());
    if (ensure->parsed()) {
      auto pager = service->EnsureRunning();
      if (!pager.ok()) {
        // A start that timed out left the pager as unreachable as one that failed.
        int rc = Fail(pager.status());
        return pager.status().code() == uffdpager::ErrorCode::kTimeout ? 3 : rc;
      }
      auto h = pager->Health();
      if (!h.ok()) return Fail(h.status());
      if (json) {
        std::cout << Json{{"version", h->version},
                          {"draining", h->draining},
                          {"active_sessions", h->active_sessions},
                          {"control_socket", pager->control_socket_path()}}
                  << "\n";
      } else {
        std::cout << fmt::format("uffd-pager {} is up on {}; {} active session(s)\n", h->version,
                                 pager->control_socket_path(), h->active_sessions);
      }
    } else {
      auto drained = service->DrainOtherVersions();
      if (!drained.ok()) return Fail(drained.status());
      if (json) {
        std::cout << Json{{"drained", *drained}} << "\n";
      } else if (drained->empty()) {
        std::cout << "no other version of uffd-pager answers under " << data_dir << "/uffd\n";
      } else {
        std::cout << fmt::format("draining {}: they serve their VMs and exit when the last session closes\n",
                                 fmt::join(*drained, ", "));
      }
    }
    return 0;
  }

  if (socket.empty()) {
    if (version_key.empty()) {
      std::cerr << "pagerctl: give --socket, or --data-dir with --version-key\n";
      return 2;
    }
    socket = PagerClient::ControlSocketPath(data_dir, version_key);
  }
  PagerClient client(socket);

  if (health->parsed()) {
    auto h = client.Health();
    if (!h.ok()) return Fail(h.status());
    if (json) {
      std::cout << Json{{"version", h->version}, {"draining", h->draining}, {"active_sessions", h->active_sessions}}
                << "\n";
    } else {
      std::cout << fmt::format("uffd-pager {} is up; {}; {} active session(s)\n", h->version,
                               h->draining ? "DRAINING" : "accepting sessions", h->active_sessions);
    }
  } else if (stats->parsed()) {
    auto s = client.Stats();
    if (!s.ok()) return Fail(s.status());
    if (json) {
      std::cout << s->dump(2) << "\n";
    } else {
      for (const auto& [k, v] : s->items()) std::cout << fmt::format("{:<26} {}\n", k, v.dump());
    }
  } else if (sessions->parsed()) {
    auto list = client.ListSessions();
    if (!list.ok()) return Fail(list.status());
    if (json) {
      std::cout << list->dump(2) << "\n";
    } else {
      PrintSessions(*list);
    }
  } else if (create->parsed()) {
    auto created = client.CreateSession(req);
    if (!created.ok()) return Fail(created.status());
    if (json) {
      std::cout << Json{{"session_id", created->session_id},
                        {"uffd_socket_path", created->uffd_socket_path},
                        {"pager_version", created->pager_version}}
                << "\n";
    } else {
      std::cout << fmt::format("session {} listening on {}\n", created->session_id, created->uffd_socket_path);
    }
  } else if (close->parsed()) {
    if (auto st = client.CloseSession(id); !st.ok()) return Fail(st);
    if (!json) std::cout << "session " << id << " closed\n";
  } else if (complete->parsed()) {
    if (auto st = client.CompleteSession(id); !st.ok()) return Fail(st);
    if (!json) std::cout << "session " << id << " complete: every page present, memory unregistered\n";
  } else if (drain->parsed()) {
    if (auto st = client.Drain(); !st.ok()) return Fail(st);
    if (!json) std::cout << "draining: new sessions refused; the pager exits when the last closes\n";
  }
  return 0;
}
