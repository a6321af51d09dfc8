// snapctl: the snapshot lifecycle of microVM instances over a data
// directory (see include/uffdpager/lifecycle.h and the README).
#include <iostream>

#include <fmt/format.h>

#include "common/cli.h"
#include "common/durable_file.h"
#include "common/logging.h"
#include "uffdpager/lifecycle.h"

#ifndef UFFDPAGER_DEFAULT_VMM_BIN
#define UFFDPAGER_DEFAULT_VMM_BIN ""
#endif
#ifndef UFFDPAGER_DEFAULT_PAGER_BIN
#define UFFDPAGER_DEFAULT_PAGER_BIN ""
#endif

namespace {

using namespace uffdpager;
using cli::IntegerIn;

constexpr uint64_t kMaxVcpus = 32;           // Firecracker's limit
constexpr uint64_t kMaxMemMib = 1ULL << 30;  // a PiB; more is a typo
constexpr uint64_t kMaxId = 0xfffffffe;      // (uid_t)-1 is "no change" to chown
constexpr uint64_t kMinPagerCacheBytes = 0;  // the pager's own bound: 0 keeps no page
constexpr uint64_t kMaxPagerCacheBytes = 1ULL << 50;

void PrintStatuses(const std::vector<InstanceStatus>& statuses) {
  std::cout << fmt::format("{:<24} {:<8} {:<16} {:>8} {:<20} {}\n", "NAME", "STATE", "MEMORY", "MiB", "FORKED_FROM",
                           "REASON");
  for (const auto& s : statuses) {
    const auto& d = s.details;
    std::string memory = "-";
    if (d.contains("snapshot")) {
      memory = d["snapshot"].value("owns_memory", false) ? "owned" : "shared";
      if (d.value("one_shot_uffd", false)) memory += "+uffd";
    }
    std::cout << fmt::format("{:<24} {:<8} {:<16} {:>8} {:<20} {}\n", s.name, InstanceStateName(s.state), memory,
                             d.value("mem_size_mib", uint64_t{0}), d.value("forked_from", ""), s.reason);
  }
}

// "Running, 2 vCPUs, 32 MiB, VMM pid 1234, memory served by the pager".
std::string Summary(const InstanceStatus& s) {
  const auto& d = s.details;
  std::string out = InstanceStateName(s.state);
  if (!s.reason.empty()) return out + " (" + s.reason + ")";
  uint64_t vcpus = d.value("vcpu_count", uint64_t{0});
  out += fmt::format(", {} vCPU{}, {} MiB", vcpus, vcpus == 1 ? "" : "s", d.value("mem_size_mib", uint64_t{0}));
  if (d.contains("vmm") && d["vmm"].is_object()) {
    const auto& vmm = d["vmm"];
    out += fmt::format(", VMM pid {}", vmm.value("pid", 0));
    std::string source = vmm.value("memory_source", "");
    if (source == "uffd") out += ", memory served by the pager";
    if (source == "file") out += ", memory from its own snapshot file";
  } else if (d.value("one_shot_uffd", false)) {
    out += ", memory shared with " + d.value("forked_from", std::string("its source")) +
           " (its first restore goes through the pager)";
  }
  return out;
}

// "IFACE=TAP" into a NetworkOverride.
CLI::Validator NetworkOverrideSyntax() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        auto eq = text.find('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
          return "\"" + text + "\" is not IFACE_ID=HOST_DEV_NAME (e.g. eth0=tap-vm7)";
        }
        return "";
      },
      "IFACE=TAP");
}

void AddRestoreFlags(CLI::App* command, RestoreOptions* options, std::vector<std::string>* network_overrides) {
  command
      ->add_option("--network-override", *network_overrides,
                   "IFACE_ID=HOST_DEV_NAME: restore the guest interface IFACE_ID on this TAP device (repeatable; "
                   "Firecracker 1.12+)")
      ->check(NetworkOverrideSyntax())
      ->allow_extra_args(false);
  command->add_option("--vsock-override", options->vsock_uds_path,
                      "restore the vsock device on this Unix socket path (Firecracker 1.12+)");
}

std::vector<NetworkOverride> ParseNetworkOverrides(const std::vector<std::string>& given) {
  std::vector<NetworkOverride> out;
  for (const auto& text : given) {
    auto eq = text.find('=');  // the validator made sure there is one
    out.push_back({text.substr(0, eq), text.substr(eq + 1)});
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  cli::CommandLine command_line("snapctl", "snapctl: boot, standby, fork, restore, pause, stop and delete microVMs");
  CLI::App& app = command_line.app();
  app.require_subcommand(1);
  std::string data_dir, vmm_override, log_level = "warn";
  bool json = false;
  command_line.AddDataDirFlag(&data_dir, "the data directory");
  app.add_option("--vmm", vmm_override, "VMM binary for this command (default: the data directory's)");
  command_line.AddJsonFlag(&json, "print the instance (or list, or config) as JSON instead of a line of text");
  command_line.AddLogLevelFlag(&log_level);
  command_line.SetExamples({"snapctl init", "snapctl create vm1 --vcpus 2 --mem-mib 256", "snapctl standby vm1",
                            "snapctl fork vm1 vm2 --state running --network-override eth0=tap-vm2",
                            "snapctl list --json", "UFFDPAGER_DATA_DIR=/srv/vms snapctl show vm2"});

  // init: only the flags given change an existing directory.
  DataDirConfig defaults;
  defaults.vmm_binary = UFFDPAGER_DEFAULT_VMM_BIN;
  defaults.pager_binary = UFFDPAGER_DEFAULT_PAGER_BIN;
  defaults.pager_version_key = cli::DefaultVersionKey();
  std::string backend, vmm_binary, pager_binary, pager_version_key;
  std::vector<std::string> vmm_args;
  uint64_t pager_cache_bytes = defaults.pager_cache_bytes, vmm_uid = 0, vmm_gid = 0;
  bool no_vmm_args_set = false, no_pager_autostart_set = false, pager_autostart_set = false, no_vmm_uid_set = false;
  auto* init = command_line.AddCommand(
      "init", "create a data directory, or change the settings given (the others stay as they are)",
      {"snapctl init", "snapctl init --backend file",
       "snapctl --data-dir /srv/vms init --vmm-binary /usr/bin/firecracker --vmm-arg=--no-seccomp",
       "snapctl init --vmm-binary /usr/bin/jailer --vmm-uid 123 --vmm-gid 100   # jailed VMMs"});
  auto* backend_flag = init->add_option("--backend", backend,
                                        "uffd (forks share memory, lazy restore) or file (forks copy); default uffd")
                           ->check(CLI::IsMember({"uffd", "file"}));
  auto* vmm_binary_flag =
      init->add_option("--vmm-binary", vmm_binary, "Firecracker or tinyvmm (default: " + defaults.vmm_binary + ")");
  auto* vmm_arg_flag = init->add_option("--vmm-arg", vmm_args,
                                        "extra VMM argument (repeat; together they replace the list, write "
                                        "--vmm-arg=--flag for one that starts with -)")
                           ->allow_extra_args(false);
  auto* no_vmm_args = init->add_flag("--no-vmm-args", no_vmm_args_set, "no extra VMM arguments any more");
  auto* pager_binary_flag = init->add_option(
      "--pager-binary", pager_binary, "uffd-pager, started when not running (default: " + defaults.pager_binary + ")");
  auto* pager_key_flag = init->add_option(
      "--pager-version-key", pager_version_key,
      "pager directory DATA/uffd/KEY (default: $" + std::string(cli::kVersionKeyEnv) + ", else the pager's version)");
  auto* pager_cache_flag =
      init->add_option("--pager-cache-bytes", pager_cache_bytes, "cache size of a pager snapctl starts (default 1 GiB)")
          ->check(IntegerIn(kMinPagerCacheBytes, kMaxPagerCacheBytes));
  auto* no_autostart = init->add_flag("--no-pager-autostart", no_pager_autostart_set,
                                      "never start the pager; fail when it is not running");
  auto* autostart =
      init->add_flag("--pager-autostart", pager_autostart_set, "start the pager when it is not running (the default)");
  auto* vmm_uid_flag = init->add_option("--vmm-uid", vmm_uid,
                                        "uid the (jailed) VMM runs as: pager sessions are given to it and accept "
                                        "only a VMM of this uid")
                           ->check(IntegerIn(0, kMaxId));
  auto* vmm_gid_flag =
      init->add_option("--vmm-gid", vmm_gid, "gid the (jailed) VMM runs as: pager session sockets are given to it")
          ->check(IntegerIn(0, kMaxId));
  auto* no_vmm_uid = init->add_flag("--no-vmm-uid", no_vmm_uid_set, "forget --vmm-uid and --vmm-gid");

  std::string name, source, target = "running", boot_config_path;
  BootConfig boot;
  RestoreOptions restore_options;
  std::vector<std::string> network_overrides;
  bool paused = false;
  auto* create = command_line.AddCommand("create", "boot a new instance (Running)",
                                         {"snapctl create vm1", "snapctl create vm1 --vcpus 2 --mem-mib 512",
                                          "snapctl create vm1 --boot-config pre-boot.json   # Firecracker"});
  create->add_option("name", name, "the new instance's name (1-64 of [A-Za-z0-9._-])")->required();
  create->add_option("--vcpus", boot.vcpu_count, "number of vCPUs")
      ->capture_default_str()
      ->check(IntegerIn(1, kMaxVcpus));
  create->add_option("--mem-mib", boot.mem_size_mib, "guest memory in MiB")
      ->capture_default_str()
      ->check(IntegerIn(1, kMaxMemMib));
  create->add_option("--boot-config", boot_config_path,
                     "JSON object of pre-boot PUT requests {\"/boot-source\": {...}, ...} (Firecracker)");
  auto* standby =
      command_line.AddCommand("standby", "snapshot a live instance and stop its VMM", {"snapctl standby vm1"});
  standby->add_option("name", name, "the instance")->required();
  auto* restore =
      command_line.AddCommand("restore", "start an instance from its snapshot (Standby or Stopped)",
                              {"snapctl restore vm1", "snapctl restore vm2 --paused",
                               "snapctl restore vm2 --network-override eth0=tap-vm2 --vsock-override /run/vm2.vsock"});
  restore->add_option("name", name, "the instance")->required();
  restore->add_flag("--paused", paused, "leave the restored VM paused (snapctl resume starts it)");
  AddRestoreFlags(restore, &restore_options, &network_overrides);
  auto* fork =
      command_line.AddCommand("fork", "a new instance from a standby or live one",
                              {"snapctl fork vm1 vm2", "snapctl fork vm1 vm3 --state standby",
                               "snapctl fork vm1 vm4 --network-override eth0=tap-vm4 --vsock-override /run/vm4.vsock"});
  fork->add_option("source", source, "the instance to fork")->required();
  fork->add_option("name", name, "the new instance's name")->required();
  fork->add_option("--state", target, "the fork's state: running, standby or stopped")
      ->capture_default_str()
      ->check(CLI::IsMember({"running", "standby", "stopped"}, CLI::ignore_case));
  fork->add_flag("--paused", paused, "with --state running: leave the fork's VM paused");
  AddRestoreFlags(fork, &restore_options, &network_overrides);
  auto* pause = command_line.AddCommand("pause", "pause a running instance's vCPUs", {"snapctl pause vm1"});
  pause->add_option("name", name, "the instance")->required();
  auto* resume = command_line.AddCommand("resume", "resume a paused instance", {"snapctl resume vm1"});
  resume->add_option("name", name, "the instance")->required();
  auto* stop =
      command_line.AddCommand("stop", "stop the VMM (state since the last snapshot is lost)", {"snapctl stop vm1"});
  stop->add_option("name", name, "the instance")->required();
  auto* del = command_line.AddCommand("delete", "stop and remove an instance", {"snapctl delete vm1"});
  del->add_option("name", name, "the instance")->required();
  auto* list = command_line.AddCommand("list", "instances and their checked state", {"snapctl list --json"});
  auto* show = command_line.AddCommand("show", "one instance in detail (JSON)", {"snapctl show vm1"});
  show->add_option("name", name, "the instance")->required();
  auto* recover =
      command_line.AddCommand("recover", "finish or undo what an interrupted command left", {"snapctl recover"});
  if (auto done = command_line.Parse(argc, argv)) return *done;
  ConfigureLogging("snapctl", log_level);
  if (fork->parsed() && *ParseForkTarget(target) != ForkTarget::kRunning &&
      (paused || !network_overrides.empty() || !restore_options.vsock_uds_path.empty())) {
    return command_line.UsageError("fork: --paused and the overrides go with --state running only");
  }
  restore_options.resume = !paused;
  restore_options.network_overrides = ParseNetworkOverrides(network_overrides);

  if (init->parsed()) {
    // Flags that undo each other (CLI11's excludes would crowd --help).
    for (auto [a, b] : {std::pair{vmm_arg_flag, no_vmm_args}, std::pair{autostart, no_autostart},
                        std::pair{vmm_uid_flag, no_vmm_uid}, std::pair{vmm_gid_flag, no_vmm_uid}}) {
      if (a->count() > 0 && b->count() > 0) {
        return command_line.UsageError("init: " + a->get_name() + " and " + b->get_name() + " undo each other");
      }
    }
    DataDirSettings settings;
    if (backend_flag->count() > 0) settings.backend = *ParseMemoryBackend(backend);
    if (vmm_binary_flag->count() > 0) settings.vmm_binary = vmm_binary;
    if (vmm_arg_flag->count() > 0) settings.vmm_args = vmm_args;
    if (no_vmm_args->count() > 0) settings.vmm_args = std::vector<std::string>();
    if (pager_binary_flag->count() > 0) settings.pager_binary = pager_binary;
    if (pager_key_flag->count() > 0) settings.pager_version_key = pager_version_key;
    if (pager_cache_flag->count() > 0) settings.pager_cache_bytes = pager_cache_bytes;
    if (no_autostart->count() > 0) settings.pager_autostart = false;
    if (autostart->count() > 0) settings.pager_autostart = true;
    if (vmm_uid_flag->count() > 0) settings.vmm_uid = std::optional<uint32_t>(static_cast<uint32_t>(vmm_uid));
    if (vmm_gid_flag->count() > 0) settings.vmm_gid = std::optional<uint32_t>(static_cast<uint32_t>(vmm_gid));
    if (no_vmm_uid->count() > 0) settings.vmm_uid = settings.vmm_gid = std::optional<uint32_t>();
    auto configured = Lifecycle::Configure(data_dir, defaults, settings);
    if (!configured.ok()) return command_line.Fail(configured.status());
    if (json) {
      std::cout << configured->config.ToJson().dump(2) << "\n";
    } else if (configured->created) {
      cli::PrintResult(fmt::format("initialized {}: backend {}, VMM {}, pager {} (version key {})", data_dir,
                                   MemoryBackendName(configured->config.backend), configured->config.vmm_binary,
                                   configured->config.pager_binary, configured->config.pager_version_key));
    } else if (configured->changed.empty()) {
      cli::PrintResult(data_dir + " unchanged");
    } else {
      std::string changed;
      for (const auto& key : configured->changed) changed += (changed.empty() ? "" : ", ") + key;
      cli::PrintResult("reconfigured " + data_dir + ": " + changed);
    }
    return cli::kExitOk;
  }

  cli::Progress progress("snapctl");
  // The progress line goes before anything else is printed.
  auto fail = [&](const Status& st) {
    progress.Done();
    return command_line.Fail(st);
  };
  LifecycleOptions options{data_dir, vmm_override, std::nullopt};
  options.progress = [&progress](const std::string& step) { progress.Step(step); };
  auto life = Lifecycle::Open(options);
  if (!life.ok()) {
    // No config.json, or one this snapctl cannot read.
    ErrorCode code = life.status().code();
    if (code == ErrorCode::kNotFound || code == ErrorCode::kInvalidArgument) {
      progress.Done();
      return command_line.Fail(cli::kExitNotInitialized,
                               life.status().ToString() + " (--data-dir or $" + cli::kDataDirEnv + ")");
    }
    return fail(life.status());
  }
  Lifecycle& l = **life;

  if (list->parsed()) {
    auto statuses = l.List();
    if (!statuses.ok()) return fail(statuses.status());
    progress.Done();
    if (json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& s : *statuses) out.push_back(s.ToJson());
      std::cout << out.dump(2) << "\n";
    } else {
      PrintStatuses(*statuses);
    }
    return cli::kExitOk;
  }
  if (recover->parsed()) {
    if (Status st = l.Recover(); !st.ok()) return fail(st);
    progress.Done();
    if (!json) cli::PrintResult(data_dir + ": nothing is left half done");
    return cli::kExitOk;
  }
  if (del->parsed()) {
    if (Status st = l.Delete(name); !st.ok()) return fail(st);
    progress.Done();
    if (json) {
      std::cout << nlohmann::json{{"name", name}, {"deleted", true}}.dump(2) << "\n";
    } else {
      cli::PrintResult("deleted " + name);
    }
    return cli::kExitOk;
  }

  // The commands on one instance: do it, then show where it stands.
  std::string verb;
  Status st;
  if (create->parsed()) {
    if (!boot_config_path.empty()) {
      auto text = ReadWholeFile(boot_config_path, 1 << 20);
      if (!text.ok()) {
        progress.Done();
        return command_line.UsageError("--boot-config: " + text.status().ToString());
      }
      boot.pre_boot_requests = nlohmann::json::parse(*text, nullptr, false);
      if (!boot.pre_boot_requests.is_object()) {
        progress.Done();
        return command_line.UsageError("--boot-config: " + boot_config_path + " is not a JSON object");
      }
    }
    verb = "created";
    st = l.Create(name, boot);
  } else if (standby->parsed()) {
    verb = "standby";
    st = l.Standby(name);
  } else if (restore->parsed()) {
    verb = "restored";
    st = l.Restore(name, restore_options);
  } else if (fork->parsed()) {
    verb = "forked " + source + " as";
    st = l.Fork(source, name, *ParseForkTarget(target), restore_options);
  } else if (pause->parsed()) {
    verb = "paused";
    st = l.Pause(name);
  } else if (resume->parsed()) {
    verb = "resumed";
    st = l.Resume(name);
  } else if (stop->parsed()) {
    verb = "stopped";
    st = l.Stop(name);
  } else if (show->parsed()) {
    verb = "show";
  }
  if (!st.ok()) return fail(st);
  auto shown = l.Show(name);
  if (!shown.ok()) return fail(shown.status());
  progress.Done();
  if (json || show->parsed()) {
    std::cout << shown->ToJson().dump(2) << "\n";
  } else {
    cli::PrintResult(verb + " " + name + ": " + Summary(*shown));
  }
  return cli::kExitOk;
}
