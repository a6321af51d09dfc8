// snapctl: the snapshot lifecycle of microVM instances over a data
// directory (see include/uffdpager/lifecycle.h and the README).
#include <iostream>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

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

int Fail(const Status& st) {
  std::cerr << "snapctl: " << st.ToString() << "\n";
  switch (st.code()) {
    case ErrorCode::kNotFound: return 2;
    case ErrorCode::kUnavailable: return 3;
    default: return 1;
  }
}

void PrintStatuses(const std::vector<InstanceStatus>& statuses, bool json) {
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& s : statuses) out.push_back(s.ToJson());
    std::cout << out.dump(2) << "\n";
    return;
  }
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"snapctl: boot, standby, fork, restore, stop and delete microVM instances"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags may follow the subcommand (list --json)
  std::string data_dir, vmm_override, log_level = "warn";
  bool json = false;
  app.add_option("--data-dir", data_dir, "the data directory")->required();
  app.add_option("--vmm", vmm_override, "VMM binary for this command (default: the data directory's)");
  app.add_flag("--json", json, "print JSON");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();

  DataDirConfig config;
  config.vmm_binary = UFFDPAGER_DEFAULT_VMM_BIN;
  config.pager_binary = UFFDPAGER_DEFAULT_PAGER_BIN;
  std::string backend = "uffd";
  bool no_autostart = false;
  auto* init = app.add_subcommand("init", "create or reconfigure a data directory");
  init->add_option("--backend", backend, "uffd (forks share memory, lazy restore) or file (forks copy)")
      ->capture_default_str();
  init->add_option("--vmm-binary", config.vmm_binary, "Firecracker or tinyvmm")->capture_default_str();
  init->add_option("--vmm-arg", config.vmm_args, "extra VMM argument (repeat)")->allow_extra_args(false);
  init->add_option("--pager-binary", config.pager_binary, "uffd-pager")->capture_default_str();
  init->add_option("--pager-version-key", config.pager_version_key, "pager directory DATA/uffd/KEY")
      ->capture_default_str();
  init->add_option("--pager-cache-bytes", config.pager_cache_bytes, "cache size of a pager snapctl starts")
      ->capture_default_str();
  init->add_flag("--no-pager-autostart", no_autostart, "never start the pager; fail when it is not running");

  std::string name, source, target = "running", boot_config_path;
  BootConfig boot;
  bool paused = false;
  auto* create = app.add_subcommand("create", "boot a new instance");
  create->add_option("name", name)->required();
  create->add_option("--vcpus", boot.vcpu_count)->capture_default_str();
  create->add_option("--mem-mib", boot.mem_size_mib)->capture_default_str();
  create->add_option("--boot-config", boot_config_path,
                     "JSON object of pre-boot PUT requests {\"/boot-source\": {...}, ...} (Firecracker)");
  auto* standby = app.add_subcommand("standby", "snapshot a running instance and stop its VMM");
  standby->add_option("name", name)->required();
  auto* restore = app.add_subcommand("restore", "start an instance from its snapshot");
  restore->add_option("name", name)->required();
  restore->add_flag("--paused", paused, "leave the restored VM paused");
  auto* fork = app.add_subcommand("fork", "a new instance from a standby or running one");
  fork->add_option("source", source)->required();
  fork->add_option("name", name)->required();
  fork->add_option("--state", target, "running, standby or stopped")->capture_default_str();
  auto* stop = app.add_subcommand("stop", "stop the VMM (state since the last snapshot is lost)");
  stop->add_option("name", name)->required();
  auto* del = app.add_subcommand("delete", "stop and remove an instance");
  del->add_option("name", name)->required();
  auto* list = app.add_subcommand("list", "instances and their checked state");
  auto* show = app.add_subcommand("show", "one instance in detail");
  show->add_option("name", name)->required();
  auto* recover = app.add_subcommand("recover", "finish or undo what an interrupted command left");
  CLI11_PARSE(app, argc, argv);
  ConfigureLogging("snapctl", log_level);

  if (init->parsed()) {
    auto b = ParseMemoryBackend(backend);
    if (!b.ok()) return Fail(b.status());
    config.backend = *b;
    config.pager_autostart = !no_autostart;
    Status st = Lifecycle::InitDataDir(data_dir, config);
    return st.ok() ? 0 : Fail(st);
  }
  auto life = Lifecycle::Open({data_dir, vmm_override, std::nullopt});
  if (!life.ok()) return Fail(life.status());
  Lifecycle& l = **life;
  Status st;
  if (create->parsed()) {
    if (!boot_config_path.empty()) {
      auto text = ReadWholeFile(boot_config_path);
      if (!text.ok()) return Fail(text.status());
      boot.pre_boot_requests = nlohmann::json::parse(*text, nullptr, false);
      if (!boot.pre_boot_requests.is_object())
        return Fail(Status::InvalidArgument(boot_config_path + ": not a JSON object"));
    }
    st = l.Create(name, boot);
  } else if (standby->parsed()) {
    st = l.Standby(name);
  } else if (restore->parsed()) {
    st = l.Restore(name, !paused);
  } else if (fork->parsed()) {
    auto t = ParseForkTarget(target);
    if (!t.ok()) return Fail(t.status());
    st = l.Fork(source, name, *t);
  } else if (stop->parsed()) {
    st = l.Stop(name);
  } else if (del->parsed()) {
    st = l.Delete(name);
  } else if (recover->parsed()) {
    st = l.Recover();
  } else if (list->parsed()) {
    auto statuses = l.List();
    if (!statuses.ok()) return Fail(statuses.status());
    PrintStatuses(*statuses, json);
    return 0;
  } else if (show->parsed()) {
    auto s = l.Show(name);
    if (!s.ok()) return Fail(s.status());
    std::cout << s->ToJson().dump(2) << "\n";
    return 0;
  }
  if (!st.ok()) return Fail(st);
  return 0;
}
