// snapctl: the snapshot lifecycle of microVM instances over a data
// directory (see include/uffdpager/lifecycle.h and the README).
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "common/cli.h"
#include "common/durable_file.h"
#include "common/logging.h"
#include "common/object_url.h"
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
  std::cout << fmt::format("{:<24} {:<8} {:<16} {:>6} {:<5} {:>8} {:<20} {}\n", "NAME", "STATE", "MEMORY", "LAYERS",
                           "PAGER", "MiB", "FORKED_FROM", "REASON");
  for (const auto& s : statuses) {
    const auto& d = s.details;
    std::string memory = "-";
    if (d.contains("snapshot")) {
      memory = d["snapshot"].value("owns_memory", false) ? "owned" : "shared";
      if (d.value("one_shot_uffd", false)) memory += "+uffd";
    }
    std::cout << fmt::format("{:<24} {:<8} {:<16} {:>6} {:<5} {:>8} {:<20} {}\n", s.name, InstanceStateName(s.state),
                             memory, d.value("chain_depth", uint64_t{0}),
                             d.value("depends_on_pager", false) ? "yes" : "no", d.value("mem_size_mib", uint64_t{0}),
                             d.value("forked_from", ""), s.reason);
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
  uint64_t depth = d.value("chain_depth", uint64_t{0});
  if (depth > 1) out += fmt::format(", memory in {} layers (restored through the pager)", depth);
  if (d.contains("snapshot") && d["snapshot"].is_object()) {
    uint64_t remote = 0;
    for (const auto& layer : d["snapshot"].value("memory_layers", nlohmann::json::array())) {
      if (layer.is_string() && IsObjectUrl(layer.get<std::string>())) ++remote;
    }
    if (remote > 0) out += fmt::format(", {} layer{} in object storage", remote, remote == 1 ? "" : "s");
  }
  if (d.contains("compaction")) out += ", being compacted";
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

std::vector<NetworkOverride> ParseNetworkOverrides(const std::vector<std::string>& given) {
  std::vector<NetworkOverride> out;
  for (const auto& text : given) {
    auto eq = text.find('=');  // the validator made sure there is one
    out.push_back({text.substr(0, eq), text.substr(eq + 1)});
  }
  return out;
}

// The flags every command accepts, read by the commands once parsed.
struct GlobalFlags {
  std::string data_dir, vmm_override, log_level = "warn";
  bool json = false;
};

void AddGlobalFlags(cli::CommandLine& command_line, GlobalFlags* flags) {
  CLI::App& app = command_line.app();
  app.require_subcommand(1);
  command_line.AddDataDirFlag(&flags->data_dir, "the data directory");
  app.add_option("--vmm", flags->vmm_override, "VMM binary for this command (default: the data directory's)");
  command_line.AddJsonFlag(&flags->json, "print the instance (or list, or config) as JSON instead of a line of text");
  command_line.AddLogLevelFlag(&flags->log_level);
  command_line.SetExamples({"snapctl init", "snapctl create vm1 --vcpus 2 --mem-mib 256", "snapctl standby vm1",
                            "snapctl fork vm1 vm2 --state running --network-override eth0=tap-vm2",
                            "snapctl list --json", "UFFDPAGER_DATA_DIR=/srv/vms snapctl show vm2"});
}

// What a command on the data directory's instances prints: progress on
// stderr while it works, erased before a result or an error is printed.
class CommandOutput {
 public:
  explicit CommandOutput(const cli::CommandLine& command_line)
      : command_line_(command_line), progress_(command_line.program()) {}

  cli::Progress& progress() { return progress_; }
  // Call before printing a result.
  void Done() { progress_.Done(); }
  int Fail(const Status& status) {
    progress_.Done();
    return command_line_.Fail(status);
  }
  int Fail(int exit_code, const std::string& message) {
    progress_.Done();
    return command_line_.Fail(exit_code, message);
  }
  int UsageError(const std::string& message) {
    progress_.Done();
    return command_line_.UsageError(message);
  }

 private:
  const cli::CommandLine& command_line_;
  cli::Progress progress_;
};

using LifecycleAction = std::function<int(Lifecycle&, CommandOutput&)>;

// This very snapctl as the background compactor of the data directory
// (LifecycleOptions::background_compactor); none if it cannot tell its own
// path.
std::vector<std::string> BackgroundCompactor(const GlobalFlags& flags) {
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  const std::string dir = std::filesystem::absolute(flags.data_dir, ec).string();
  if (self.empty() || dir.empty()) return {};
  return {self, "--data-dir", dir, "--log-level", "info", "compact"};
}

// Opens the lifecycle of the data directory the global flags name, its steps
// shown as progress, and returns `action`'s exit code on it.
int WithLifecycle(const cli::CommandLine& command_line, const GlobalFlags& flags, const LifecycleAction& action) {
  CommandOutput out(command_line);
  LifecycleOptions options{flags.data_dir, flags.vmm_override, std::nullopt};
  options.progress = [&out](const std::string& step) { out.progress().Step(step); };
  options.background_compactor = BackgroundCompactor(flags);
  auto life = Lifecycle::Open(options);
  if (!life.ok()) {
    // No config.json, or one this snapctl cannot read.
    ErrorCode code = life.status().code();
    if (code == ErrorCode::kNotFound || code == ErrorCode::kInvalidArgument) {
      return out.Fail(cli::kExitNotInitialized,
                      life.status().ToString() + " (--data-dir or $" + cli::kDataDirEnv + ")");
    }
    return out.Fail(life.status());
  }
  return action(**life, out);
}

// The end of every command on one instance: `done` is what the command did;
// then where the instance stands, as JSON or as "VERB NAME: summary".
int ShowInstance(Lifecycle& l, CommandOutput& out, const Status& done, const std::string& name, bool json,
                 const std::string& verb) {
  if (!done.ok()) return out.Fail(done);
  auto shown = l.Show(name);
  if (!shown.ok()) return out.Fail(shown.status());
  out.Done();
  if (json) {
    std::cout << shown->ToJson().dump(2) << "\n";
  } else {
    cli::PrintResult(verb + " " + name + ": " + Summary(*shown));
  }
  return cli::kExitOk;
}

// The positional name of a command on an existing instance.
std::shared_ptr<std::string> AddInstanceArgument(CLI::App* command) {
  auto name = std::make_shared<std::string>();
  command->add_option("name", *name, "the instance")->required();
  return name;
}

using InstanceStep = std::function<Status(Lifecycle&, const std::string& name)>;

// A command on one existing instance: `step` on it, then where it stands.
// Returns the command, for flags of its own.
CLI::App* AddInstanceCommand(cli::CommandLine& command_line, const GlobalFlags& flags, const std::string& command_name,
                             const std::string& description, const std::vector<std::string>& examples,
                             const std::string& verb, InstanceStep step) {
  auto* command = command_line.AddCommand(command_name, description, examples);
  auto name = AddInstanceArgument(command);
  command_line.SetAction(command, [&command_line, &flags, name, verb, step = std::move(step)] {
    return WithLifecycle(command_line, flags, [&](Lifecycle& l, CommandOutput& out) {
      return ShowInstance(l, out, step(l, *name), *name, flags.json, verb);
    });
  });
  return command;
}

// init's flags: only those given change an existing data directory.
struct InitFlags {
  DataDirConfig defaults;  // of a new one
  std::string backend, vmm_binary, pager_binary, pager_version_key;
  std::vector<std::string> vmm_args;
  uint64_t pager_cache_bytes = 0, vmm_uid = 0, vmm_gid = 0, max_layers = 0, compact_depth = 0;
  bool no_vmm_args_set = false, no_pager_autostart_set = false, pager_autostart_set = false, no_vmm_uid_set = false;
  CLI::Option* backend_flag = nullptr;
  CLI::Option* vmm_binary_flag = nullptr;
  CLI::Option* vmm_arg_flag = nullptr;
  CLI::Option* no_vmm_args = nullptr;
  CLI::Option* pager_binary_flag = nullptr;
  CLI::Option* pager_key_flag = nullptr;
  CLI::Option* pager_cache_flag = nullptr;
  CLI::Option* no_autostart = nullptr;
  CLI::Option* autostart = nullptr;
  CLI::Option* vmm_uid_flag = nullptr;
  CLI::Option* vmm_gid_flag = nullptr;
  CLI::Option* no_vmm_uid = nullptr;
  CLI::Option* max_layers_flag = nullptr;
  CLI::Option* compact_depth_flag = nullptr;

  InitFlags() {
    defaults.vmm_binary = UFFDPAGER_DEFAULT_VMM_BIN;
    defaults.pager_binary = UFFDPAGER_DEFAULT_PAGER_BIN;
    defaults.pager_version_key = cli::DefaultVersionKey();
    pager_cache_bytes = defaults.pager_cache_bytes;
  }

  // Two flags given that undo each other ("--a and --b"), if any. (CLI11's
  // excludes would crowd --help.)
  std::optional<std::string> UndoingPair() const {
    for (auto [a, b] : {std::pair{vmm_arg_flag, no_vmm_args}, std::pair{autostart, no_autostart},
                        std::pair{vmm_uid_flag, no_vmm_uid}, std::pair{vmm_gid_flag, no_vmm_uid}}) {
      if (a->count() > 0 && b->count() > 0) return a->get_name() + " and " + b->get_name();
    }
    return std::nullopt;
  }

  DataDirSettings Settings() const {
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
    if (max_layers_flag->count() > 0) settings.max_layers = static_cast<uint32_t>(max_layers);
    if (compact_depth_flag->count() > 0) settings.compact_depth = static_cast<uint32_t>(compact_depth);
    return settings;
  }
};

void DeclareInitFlags(CLI::App* init, InitFlags* f) {
  f->backend_flag = init->add_option("--backend", f->backend,
                                     "uffd (forks share memory, lazy restore) or file (forks copy); default uffd")
                        ->check(CLI::IsMember({"uffd", "file"}));
  f->vmm_binary_flag = init->add_option("--vmm-binary", f->vmm_binary,
                                        "Firecracker or tinyvmm (default: " + f->defaults.vmm_binary + ")");
  f->vmm_arg_flag = init->add_option("--vmm-arg", f->vmm_args,
                                     "extra VMM argument (repeat; together they replace the list, write "
                                     "--vmm-arg=--flag for one that starts with -)")
                        ->allow_extra_args(false);
  f->no_vmm_args = init->add_flag("--no-vmm-args", f->no_vmm_args_set, "no extra VMM arguments any more");
  f->pager_binary_flag =
      init->add_option("--pager-binary", f->pager_binary,
                       "uffd-pager, started when not running (default: " + f->defaults.pager_binary + ")");
  f->pager_key_flag = init->add_option(
      "--pager-version-key", f->pager_version_key,
      "pager directory DATA/uffd/KEY (default: $" + std::string(cli::kVersionKeyEnv) + ", else the pager's version)");
  f->pager_cache_flag = init->add_option("--pager-cache-bytes", f->pager_cache_bytes,
                                         "cache size of a pager snapctl starts (default 1 GiB)")
                            ->check(IntegerIn(kMinPagerCacheBytes, kMaxPagerCacheBytes));
  f->no_autostart = init->add_flag("--no-pager-autostart", f->no_pager_autostart_set,
                                   "never start the pager; fail when it is not running");
  f->autostart = init->add_flag("--pager-autostart", f->pager_autostart_set,
                                "start the pager when it is not running (the default)");
  f->vmm_uid_flag = init->add_option("--vmm-uid", f->vmm_uid,
                                     "uid the (jailed) VMM runs as: pager sessions are given to it and accept "
                                     "only a VMM of this uid")
                        ->check(IntegerIn(0, kMaxId));
  f->vmm_gid_flag =
      init->add_option("--vmm-gid", f->vmm_gid, "gid the (jailed) VMM runs as: pager session sockets are given to it")
          ->check(IntegerIn(0, kMaxId));
  f->no_vmm_uid = init->add_flag("--no-vmm-uid", f->no_vmm_uid_set, "forget --vmm-uid and --vmm-gid");
  f->max_layers_flag =
      init->add_option("--max-layers", f->max_layers,
                       "longest chain of memory layers (uffd backend): a standby or a fork of a running instance "
                       "writes only the changed pages as a new layer until then, and a merged memory file after "
                       "(default 8; 1 never layers)")
          ->check(IntegerIn(1, kMaxPagerLayers));
  f->compact_depth_flag =
      init->add_option("--compact-depth", f->compact_depth,
                       "a chain deeper than this is merged into a new base in the background after the standby or "
                       "fork that made it (snapctl compact); at most --max-layers (default 4, or --max-layers if "
                       "that is lower; 0 never in the background)")
          ->check(IntegerIn(0, kMaxPagerLayers));
}

void PrintConfigured(const DataDirConfigured& configured, const GlobalFlags& flags) {
  const DataDirConfig& config = configured.config;
  if (flags.json) {
    std::cout << config.ToJson().dump(2) << "\n";
  } else if (configured.created) {
    cli::PrintResult(fmt::format("initialized {}: backend {}, VMM {}, pager {} (version key {})", flags.data_dir,
                                 MemoryBackendName(config.backend), config.vmm_binary, config.pager_binary,
                                 config.pager_version_key));
  } else if (configured.changed.empty()) {
    cli::PrintResult(flags.data_dir + " unchanged");
  } else {
    std::string changed;
    for (const auto& key : configured.changed) changed += (changed.empty() ? "" : ", ") + key;
    cli::PrintResult("reconfigured " + flags.data_dir + ": " + changed);
  }
}

void AddInitCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  auto* init = command_line.AddCommand(
      "init", "create a data directory, or change the settings given (the others stay as they are)",
      {"snapctl init", "snapctl init --backend file",
       "snapctl --data-dir /srv/vms init --vmm-binary /usr/bin/firecracker --vmm-arg=--no-seccomp",
       "snapctl init --vmm-binary /usr/bin/jailer --vmm-uid 123 --vmm-gid 100   # jailed VMMs"});
  auto f = std::make_shared<InitFlags>();
  DeclareInitFlags(init, f.get());
  command_line.SetAction(init, [&command_line, &flags, f] {
    if (auto pair = f->UndoingPair()) return command_line.UsageError("init: " + *pair + " undo each other");
    auto configured = Lifecycle::Configure(flags.data_dir, f->defaults, f->Settings());
    if (!configured.ok()) return command_line.Fail(configured.status());
    PrintConfigured(*configured, flags);
    return cli::kExitOk;
  });
}

// create's flags.
struct CreateFlags {
  std::string name, boot_config_path;
  BootConfig boot;
};

void AddCreateCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  auto* create = command_line.AddCommand("create", "boot a new instance (Running)",
                                         {"snapctl create vm1", "snapctl create vm1 --vcpus 2 --mem-mib 512",
                                          "snapctl create vm1 --boot-config pre-boot.json   # Firecracker"});
  auto f = std::make_shared<CreateFlags>();
  create->add_option("name", f->name, "the new instance's name (1-64 of [A-Za-z0-9._-])")->required();
  create->add_option("--vcpus", f->boot.vcpu_count, "number of vCPUs")
      ->capture_default_str()
      ->check(IntegerIn(1, kMaxVcpus));
  create->add_option("--mem-mib", f->boot.mem_size_mib, "guest memory in MiB")
      ->capture_default_str()
      ->check(IntegerIn(1, kMaxMemMib));
  create->add_option("--boot-config", f->boot_config_path,
                     "JSON object of pre-boot PUT requests {\"/boot-source\": {...}, ...} (Firecracker)");
  command_line.SetAction(create, [&command_line, &flags, f] {
    return WithLifecycle(command_line, flags, [&](Lifecycle& l, CommandOutput& out) {
      BootConfig boot = f->boot;
      if (!f->boot_config_path.empty()) {
        auto text = ReadWholeFile(f->boot_config_path, 1 << 20);
        if (!text.ok()) return out.UsageError("--boot-config: " + text.status().ToString());
        boot.pre_boot_requests = nlohmann::json::parse(*text, nullptr, false);
        if (!boot.pre_boot_requests.is_object()) {
          return out.UsageError("--boot-config: " + f->boot_config_path + " is not a JSON object");
        }
      }
      return ShowInstance(l, out, l.Create(f->name, boot), f->name, flags.json, "created");
    });
  });
}

void AddStandbyCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  AddInstanceCommand(command_line, flags, "standby", "snapshot a live instance and stop its VMM",
                     {"snapctl standby vm1"}, "standby",
                     [](Lifecycle& l, const std::string& name) { return l.Standby(name); });
}

// The flags restore and fork share: how the restored VM starts.
struct RestoreFlags {
  bool paused = false;
  std::vector<std::string> network_overrides;
  std::string vsock_uds_path;

  bool Given() const { return paused || !network_overrides.empty() || !vsock_uds_path.empty(); }
  RestoreOptions Options() const {
    RestoreOptions options;
    options.resume = !paused;
    options.network_overrides = ParseNetworkOverrides(network_overrides);
    options.vsock_uds_path = vsock_uds_path;
    return options;
  }
};

void AddRestoreFlags(CLI::App* command, RestoreFlags* flags, const std::string& paused_help) {
  command->add_flag("--paused", flags->paused, paused_help);
  command
      ->add_option("--network-override", flags->network_overrides,
                   "IFACE_ID=HOST_DEV_NAME: restore the guest interface IFACE_ID on this TAP device (repeatable; "
                   "Firecracker 1.12+)")
      ->check(NetworkOverrideSyntax())
      ->allow_extra_args(false);
  command->add_option("--vsock-override", flags->vsock_uds_path,
                      "restore the vsock device on this Unix socket path (Firecracker 1.12+)");
}

void AddRestoreCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  auto restore = std::make_shared<RestoreFlags>();
  auto* command = AddInstanceCommand(
      command_line, flags, "restore", "start an instance from its snapshot (Standby or Stopped)",
      {"snapctl restore vm1", "snapctl restore vm2 --paused",
       "snapctl restore vm2 --network-override eth0=tap-vm2 --vsock-override /run/vm2.vsock"},
      "restored", [restore](Lifecycle& l, const std::string& name) { return l.Restore(name, restore->Options()); });
  AddRestoreFlags(command, restore.get(), "leave the restored VM paused (snapctl resume starts it)");
}

// fork's flags.
struct ForkFlags {
  std::string source, name, target = "running";
  RestoreFlags restore;
};

void AddForkCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  auto* fork =
      command_line.AddCommand("fork", "a new instance from a standby or live one",
                              {"snapctl fork vm1 vm2", "snapctl fork vm1 vm3 --state standby",
                               "snapctl fork vm1 vm4 --network-override eth0=tap-vm4 --vsock-override /run/vm4.vsock"});
  auto f = std::make_shared<ForkFlags>();
  fork->add_option("source", f->source, "the instance to fork")->required();
  fork->add_option("name", f->name, "the new instance's name")->required();
  fork->add_option("--state", f->target, "the fork's state: running, standby or stopped")
      ->capture_default_str()
      ->check(CLI::IsMember({"running", "standby", "stopped"}, CLI::ignore_case));
  AddRestoreFlags(fork, &f->restore, "with --state running: leave the fork's VM paused");
  command_line.SetAction(fork, [&command_line, &flags, f] {
    ForkTarget target = *ParseForkTarget(f->target);
    if (target != ForkTarget::kRunning && f->restore.Given()) {
      return command_line.UsageError("fork: --paused and the overrides go with --state running only");
    }
    return WithLifecycle(command_line, flags, [&](Lifecycle& l, CommandOutput& out) {
      Status forked = l.Fork(f->source, f->name, target, f->restore.Options());
      return ShowInstance(l, out, forked, f->name, flags.json, "forked " + f->source + " as");
    });
  });
}

void AddPauseCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  AddInstanceCommand(command_line, flags, "pause", "pause a running instance's vCPUs", {"snapctl pause vm1"}, "paused",
                     [](Lifecycle& l, const std::string& name) { return l.Pause(name); });
}

void AddResumeCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  AddInstanceCommand(command_line, flags, "resume", "resume a paused instance", {"snapctl resume vm1"}, "resumed",
                     [](Lifecycle& l, const std::string& name) { return l.Resume(name); });
}

void AddStopCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  AddInstanceCommand(command_line, flags, "stop", "stop the VMM (state since the last snapshot is lost)",
                     {"snapctl stop vm1"}, "stopped",
                     [](Lifecycle& l, const std::string& name) { return l.Stop(name); });
}

void AddDeleteCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  auto* del = command_line.AddCommand("delete", "stop and remove an instance", {"snapctl delete vm1"});
  auto name = AddInstanceArgument(del);
  command_line.SetAction(del, [&command_line, &flags, name] {
    return WithLifecycle(command_line, flags, [&](Lifecycle& l, CommandOutput& out) {
      if (Status st = l.Delete(*name); !st.ok()) return out.Fail(st);
      out.Done();
      if (flags.json) {
        std::cout << nlohmann::json{{"name", *name}, {"deleted", true}}.dump(2) << "\n";
      } else {
        cli::PrintResult("deleted " + *name);
      }
      return cli::kExitOk;
    });
  });
}

void AddListCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  auto* list = command_line.AddCommand("list", "instances and their checked state", {"snapctl list --json"});
  command_line.SetAction(list, [&command_line, &flags] {
    return WithLifecycle(command_line, flags, [&](Lifecycle& l, CommandOutput& out) {
      auto statuses = l.List();
      if (!statuses.ok()) return out.Fail(statuses.status());
      out.Done();
      if (flags.json) {
        nlohmann::json json = nlohmann::json::array();
        for (const auto& s : *statuses) json.push_back(s.ToJson());
        std::cout << json.dump(2) << "\n";
      } else {
        PrintStatuses(*statuses);
      }
      return cli::kExitOk;
    });
  });
}

void AddShowCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  auto* show = command_line.AddCommand("show", "one instance in detail (JSON)", {"snapctl show vm1"});
  auto name = AddInstanceArgument(show);
  command_line.SetAction(show, [&command_line, &flags, name] {
    return WithLifecycle(command_line, flags, [&](Lifecycle& l, CommandOutput& out) {
      return ShowInstance(l, out, Status(), *name, /*json=*/true, "show");
    });
  });
}

void AddRecoverCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  auto* recover =
      command_line.AddCommand("recover", "finish or undo what an interrupted command left", {"snapctl recover"});
  command_line.SetAction(recover, [&command_line, &flags] {
    return WithLifecycle(command_line, flags, [&](Lifecycle& l, CommandOutput& out) {
      if (Status st = l.Recover(); !st.ok()) return out.Fail(st);
      out.Done();
      if (!flags.json) cli::PrintResult(flags.data_dir + ": nothing is left half done");
      return cli::kExitOk;
    });
  });
}

void AddCompactCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  auto* compact = command_line.AddCommand(
      "compact",
      "merge snapshot chains into new bases while other commands go on (what snapctl starts in the background "
      "when a chain grows deeper than --compact-depth; its output goes to DATA/compactions/compact.log)",
      {"snapctl compact   # every chain deeper than the compact depth", "snapctl compact vm1 vm2"});
  auto names = std::make_shared<std::vector<std::string>>();
  compact->add_option("name", *names,
                      "instances whose chains to merge, whatever their depth (default: every chain "
                      "deeper than the data directory's compact depth)");
  command_line.SetAction(compact, [&command_line, &flags, names] {
    return WithLifecycle(command_line, flags, [&](Lifecycle& l, CommandOutput& out) {
      auto compacted = l.Compact(*names);
      if (!compacted.ok()) return out.Fail(compacted.status());
      out.Done();
      if (flags.json) {
        nlohmann::json json = nlohmann::json::array();
        for (const auto& c : *compacted) {
          json.push_back({{"layers", c.layers}, {"blob", c.blob}, {"instances", c.instances}});
        }
        std::cout << json.dump(2) << "\n";
        return cli::kExitOk;
      }
      if (compacted->empty()) cli::PrintResult("compacted nothing: no chain to merge");
      for (const auto& c : *compacted) {
        std::string instances;
        for (const auto& n : c.instances) instances += (instances.empty() ? "" : ", ") + n;
        cli::PrintResult(instances.empty()
                             ? fmt::format("compacted nothing: every instance on the {} layers topped by {} moved on",
                                           c.layers.size(), c.layers.back())
                             : fmt::format("compacted {} layers into {} for {}", c.layers.size(), c.blob, instances));
      }
      return cli::kExitOk;
    });
  });
}

void AddPublishCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  auto* publish = command_line.AddCommand(
      "publish",
      "upload a Standby or Stopped instance's snapshot to a bucket for another host to import (the store from "
      "the AWS_* environment; layers already there are not sent again)",
      {"snapctl publish vm1 s3://snapshots/pool-a   # writes s3://snapshots/pool-a/vm1.json last"});
  auto name = AddInstanceArgument(publish);
  auto destination = std::make_shared<std::string>();
  publish->add_option("destination", *destination, "s3://BUCKET/PREFIX: where the objects go")->required();
  command_line.SetAction(publish, [&command_line, &flags, name, destination] {
    return WithLifecycle(command_line, flags, [&](Lifecycle& l, CommandOutput& out) {
      auto published = l.Publish(*name, *destination);
      if (!published.ok()) return out.Fail(published.status());
      out.Done();
      if (flags.json) {
        std::cout << nlohmann::json{{"name", *name},
                                    {"manifest", published->manifest_url},
                                    {"layers", published->layers},
                                    {"layers_uploaded", published->layers_uploaded},
                                    {"layers_reused", published->layers_reused},
                                    {"layer_bytes_uploaded", published->layer_bytes_uploaded}}
                         .dump(2)
                  << "\n";
      } else {
        cli::PrintResult(fmt::format("published {} as {}: {} layer(s) uploaded ({} bytes), {} already there", *name,
                                     published->manifest_url, published->layers_uploaded,
                                     published->layer_bytes_uploaded, published->layers_reused));
      }
      return cli::kExitOk;
    });
  });
}

void AddImportCommand(cli::CommandLine& command_line, const GlobalFlags& flags) {
  auto* import = command_line.AddCommand(
      "import",
      "a new Standby instance from a published snapshot's manifest: only the state file is downloaded; the "
      "pager pages the memory from the bucket (the store from the AWS_* environment, which it inherits)",
      {"snapctl import vm7 s3://snapshots/pool-a/vm1.json && snapctl restore vm7"});
  auto name = std::make_shared<std::string>();
  auto manifest = std::make_shared<std::string>();
  import->add_option("name", *name, "the new instance's name")->required();
  import->add_option("manifest", *manifest, "s3://BUCKET/PREFIX/SOURCE.json, as publish printed it")->required();
  command_line.SetAction(import, [&command_line, &flags, name, manifest] {
    return WithLifecycle(command_line, flags, [&](Lifecycle& l, CommandOutput& out) {
      return ShowInstance(l, out, l.Import(*name, *manifest), *name, flags.json, "imported " + *manifest + " as");
    });
  });
}

}  // namespace

int main(int argc, char** argv) {
  cli::CommandLine command_line(
      "snapctl",
      "snapctl: boot, standby, fork, restore, pause, stop and delete microVMs, compact their snapshots, and "
      "publish and import them through object storage");
  GlobalFlags flags;
  AddGlobalFlags(command_line, &flags);
  AddInitCommand(command_line, flags);  // in the order of --help
  AddCreateCommand(command_line, flags);
  AddStandbyCommand(command_line, flags);
  AddRestoreCommand(command_line, flags);
  AddForkCommand(command_line, flags);
  AddPauseCommand(command_line, flags);
  AddResumeCommand(command_line, flags);
  AddStopCommand(command_line, flags);
  AddDeleteCommand(command_line, flags);
  AddListCommand(command_line, flags);
  AddShowCommand(command_line, flags);
  AddRecoverCommand(command_line, flags);
  AddCompactCommand(command_line, flags);
  AddPublishCommand(command_line, flags);
  AddImportCommand(command_line, flags);
  if (auto done = command_line.Parse(argc, argv)) return *done;
  ConfigureLogging("snapctl", flags.log_level);
  return command_line.RunCommand();
}
