// The command-line conventions of uffd-pager, pagerctl and snapctl, through
// the real binaries as a person runs them: refused flag values and the exit
// codes, --version, --help that describes every argument with examples and
// the exit codes, global flags anywhere, --json that is the API's answer
// unchanged, the defaults from the environment, and `snapctl init` changing
// only what it is given. (What needs KVM guests is in tests/lifecycle.)
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/child_process.h"
#include "common/cli.h"
#include "common/http_client.h"
#include "common/version.h"
#include "support/pager_process.h"
#include "support/run_tool.h"
#include "support/temp_dir.h"
#include "uffdpager/pager_client.h"

#ifndef PAGERCTL_BIN
#error "PAGERCTL_BIN must name the pagerctl binary"
#endif
#ifndef SNAPCTL_BIN
#error "SNAPCTL_BIN must name the snapctl binary"
#endif

namespace uffdpager::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

// The arguments of a --help text that have no description: each entry of
// the Options and Positionals sections has its description after two
// spaces on its line, or on the next line, indented.
std::vector<std::string> UndescribedArguments(const std::string& help) {
  std::vector<std::string> lines;
  std::istringstream in(help);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::vector<std::string> out;
  bool in_section = false;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (line == "Options:" || line == "Positionals:") {
      in_section = true;
      continue;
    }
    if (line.empty()) in_section = false;
    if (!in_section || line.size() < 3 || line.compare(0, 2, "  ") != 0 || line[2] == ' ') continue;
    std::string rest = line.substr(2);
    auto gap = rest.find("  ");
    bool described = gap != std::string::npos && rest.find_first_not_of(' ', gap) != std::string::npos;
    if (!described && i + 1 < lines.size()) {
      const std::string& next = lines[i + 1];
      described = next.size() > 10 && next.compare(0, 10, std::string(10, ' ')) == 0 &&
                  next.find_first_not_of(' ') != std::string::npos;
    }
    if (!described) out.push_back(rest);
  }
  return out;
}

json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in, nullptr, false);
}

class CliTest : public ::testing::Test {
 protected:
  // Every run gets a data directory of its own, never the machine's.
  std::vector<std::string> Env() const { return {"UFFDPAGER_DATA_DIR=" + data(), "UFFDPAGER_VERSION_KEY="}; }
  std::string data() const { return dir_ / "data"; }
  ToolRun Run(std::vector<std::string> argv, std::vector<std::string> extra_env = {}) const {
    std::vector<std::string> env = Env();
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    return RunTool(argv, env);
  }

  TempDir dir_;
};

TEST_F(CliTest, RefusedFlagValuesSayWhatIsAcceptedAndDoNothing) {
  struct Case {
    std::vector<std::string> argv;
    std::string flag;
    std::string accepted;  // part of the message that says what would do
  };
  const std::string pager = UFFD_PAGER_BIN, pagerctl = PAGERCTL_BIN, snapctl = SNAPCTL_BIN;
  const std::vector<Case> cases = {
      // A negative size used to wrap to an unbounded cache.
      {{pager, "--cache-max-bytes", "-5"}, "--cache-max-bytes", "an integer from 0 to"},
      {{pager, "--cache-max-bytes", "1.5e9"}, "--cache-max-bytes", "an integer from 0 to"},
      {{pager, "--cache-max-bytes", "99999999999999999999999"}, "--cache-max-bytes", "an integer from 0 to"},
      {{pager, "--handshake-timeout-ms", "0"}, "--handshake-timeout-ms", "an integer from 1 to"},
      {{pager, "--handshake-timeout-ms", "4294967297"}, "--handshake-timeout-ms", "an integer from 1 to"},
      {{pager, "--http-idle-timeout-seconds", "0"}, "--http-idle-timeout-seconds", "an integer from 1 to"},
      {{pager, "--max-request-bytes", "-1"}, "--max-request-bytes", "an integer from 1024 to"},
      {{pager, "--fault-around-max-pages", "513"}, "--fault-around-max-pages", "an integer from 0 to 512"},
      {{pager, "--prefetch-record-ms", "0"}, "--prefetch-record-ms", "an integer from 1 to"},
      // A typo used to silence every log line.
      {{pager, "--log-level", "warnn"}, "--log-level", "trace,debug,info,warn,error"},
      {{pager, "--zero-pages", "maybe"}, "--zero-pages", "detect"},
      {{pagerctl, "ensure", "--ready-timeout-ms", "0"}, "--ready-timeout-ms", "an integer from 1 to"},
      {{pagerctl, "create", "--instance-id", "a", "--backing", "/x", "--socket-uid", "-1"},
       "--socket-uid",
       "an integer from 0 to"},
      {{pagerctl, "create", "--instance-id", "a", "--backing", "/x", "--expected-pid", "0"},
       "--expected-pid",
       "an integer from 1 to"},
      {{snapctl, "create", "vm", "--vcpus", "0"}, "--vcpus", "an integer from 1 to 32"},
      {{snapctl, "create", "vm", "--vcpus", "-1"}, "--vcpus", "an integer from 1 to 32"},
      {{snapctl, "create", "vm", "--mem-mib", "0"}, "--mem-mib", "an integer from 1 to"},
      {{snapctl, "init", "--pager-cache-bytes", "-5"}, "--pager-cache-bytes", "an integer from 0 to"},
      {{snapctl, "init", "--vmm-uid", "-1"}, "--vmm-uid", "an integer from 0 to"},
      {{snapctl, "init", "--backend", "tape"}, "--backend", "uffd"},
      {{snapctl, "list", "--log-level", "loud"}, "--log-level", "trace"},
      {{snapctl, "fork", "a", "b", "--state", "paused"}, "--state", "running"},
      {{snapctl, "restore", "a", "--network-override", "eth0"}, "--network-override", "IFACE_ID=HOST_DEV_NAME"},
  };
  for (const auto& c : cases) {
    std::string joined;
    for (const auto& a : c.argv) joined += a.substr(a.rfind('/') + 1) + " ";
    SCOPED_TRACE(joined);
    ToolRun r = Run(c.argv);
    EXPECT_EQ(r.exit_code, cli::kExitUsage) << r.err;
    EXPECT_NE(r.err.find(c.flag), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.accepted), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(data())) << "a refused command line did something";
  }
}

TEST_F(CliTest, EveryToolHasVersionAndHelpWithExamplesAndExitCodes) {
  const std::map<std::string, std::vector<std::string>> commands = {
      {UFFD_PAGER_BIN, {""}},
      {PAGERCTL_BIN,
       {"", "health", "stats", "sessions", "show", "create", "close", "complete", "drain", "ensure", "drain-others"}},
      {SNAPCTL_BIN,
       {"", "init", "create", "standby", "restore", "fork", "pause", "resume", "stop", "delete", "list", "show",
        "recover", "compact"}},
  };
  for (const auto& [tool, subcommands] : commands) {
    const std::string name = tool.substr(tool.rfind('/') + 1);
    ToolRun version = Run({tool, "--version"});
    EXPECT_EQ(version.exit_code, 0) << name;
    EXPECT_EQ(version.out, name + " " + kVersion + "\n");
    for (const auto& sub : subcommands) {
      SCOPED_TRACE(name + " " + sub);
      std::vector<std::string> argv = {tool};
      if (!sub.empty()) argv.push_back(sub);
      argv.push_back("--help");
      ToolRun help = Run(argv);
      EXPECT_EQ(help.exit_code, 0) << help.err;
      EXPECT_NE(help.out.find("Examples:\n  " + name), std::string::npos) << help.out;
      EXPECT_NE(help.out.find("Exit codes:\n  0  done\n"), std::string::npos) << help.out;
      EXPECT_NE(help.out.find("  6  no data directory"), std::string::npos) << help.out;
      EXPECT_EQ(UndescribedArguments(help.out), std::vector<std::string>()) << help.out;
      if (!sub.empty()) {
        // Global flags after the command: --version is one.
        ToolRun after = Run({tool, sub, "--version"});
        EXPECT_EQ(after.exit_code, 0) << after.err;
        EXPECT_EQ(after.out, name + " " + kVersion + "\n");
      }
    }
  }
}

TEST_F(CliTest, UnknownOrMissingCommandsAreUsageErrorsThatListTheCommands) {
  for (const std::string tool : {PAGERCTL_BIN, SNAPCTL_BIN}) {
    ToolRun unknown = Run({tool, "frobnicate"});
    EXPECT_EQ(unknown.exit_code, cli::kExitUsage);
    EXPECT_NE(unknown.err.find("unknown command \"frobnicate\"; the commands are "), std::string::npos) << unknown.err;
    EXPECT_NE(unknown.err.find("create"), std::string::npos) << unknown.err;
    ToolRun none = Run({tool});
    EXPECT_EQ(none.exit_code, cli::kExitUsage);
    EXPECT_NE(none.err.find("a command is required: "), std::string::npos) << none.err;
    ToolRun bad_flag = Run({tool, "list", "--frobnicate"});
    EXPECT_EQ(bad_flag.exit_code, cli::kExitUsage) << "was 109";
  }
}

// The exit codes a person scripts against, each for the one reason the
// table gives it (a missing VMM binary, a missing pager binary and a data
// directory without config all used to exit 2, "unknown instance").
TEST_F(CliTest, SnapctlExitCodesEachMeanOneThing) {
  ToolRun uninitialized = Run({SNAPCTL_BIN, "list"});
  EXPECT_EQ(uninitialized.exit_code, cli::kExitNotInitialized) << uninitialized.err;
  EXPECT_NE(uninitialized.err.find("snapctl init"), std::string::npos) << uninitialized.err;

  ToolRun init = Run({SNAPCTL_BIN, "init"});
  ASSERT_EQ(init.exit_code, 0) << init.err;
  EXPECT_EQ(init.out.rfind("initialized " + data() + ": backend uffd", 0), 0u) << init.out;
  EXPECT_EQ(std::count(init.out.begin(), init.out.end(), '\n'), 1) << "one line: " << init.out;
  EXPECT_EQ(ReadJson(data() + "/config.json")["pager_version_key"], kVersion) << "the shared default version key";

  ToolRun unknown = Run({SNAPCTL_BIN, "show", "nosuch"});
  EXPECT_EQ(unknown.exit_code, cli::kExitNotFound) << unknown.err;
  EXPECT_EQ(Run({SNAPCTL_BIN, "pause", "nosuch"}).exit_code, cli::kExitNotFound);

  // A VMM that is not there, or exits at once: unavailable, and no instance
  // is left behind to block the retry.
  for (const std::string vmm : {"/nonexistent/firecracker", "/bin/false"}) {
    SCOPED_TRACE(vmm);
    ToolRun create = Run({SNAPCTL_BIN, "--vmm", vmm, "create", "vm", "--mem-mib", "32"});
    EXPECT_EQ(create.exit_code, cli::kExitUnavailable) << create.err;
    EXPECT_NE(create.err.find(vmm), std::string::npos) << create.err;
    EXPECT_FALSE(fs::exists(data() + "/instances/vm")) << "a failed create left its instance";
    EXPECT_EQ(Run({SNAPCTL_BIN, "show", "vm"}).exit_code, cli::kExitNotFound);
    EXPECT_TRUE(fs::is_empty(data() + "/journal"));
  }
}

TEST_F(CliTest, SnapctlInitChangesOnlyTheSettingsGiven) {
  ASSERT_EQ(Run({SNAPCTL_BIN, "init", "--vmm-arg=--a", "--vmm-arg=--b", "--pager-cache-bytes", "12345",
                 "--no-pager-autostart", "--vmm-uid", "7", "--vmm-gid", "8", "--pager-version-key", "k1"})
                .exit_code,
            0);
  ToolRun again = Run({SNAPCTL_BIN, "init", "--backend", "file"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, "reconfigured " + data() + ": backend\n");
  json config = ReadJson(data() + "/config.json");
  EXPECT_EQ(config["backend"], "file");
  EXPECT_EQ(config["vmm_args"], json({"--a", "--b"}));
  EXPECT_EQ(config["pager_cache_bytes"], 12345);
  EXPECT_EQ(config["pager_autostart"], false);
  EXPECT_EQ(config["vmm_uid"], 7);
  EXPECT_EQ(config["vmm_gid"], 8);
  EXPECT_EQ(config["pager_version_key"], "k1");

  EXPECT_EQ(Run({SNAPCTL_BIN, "init"}).out, data() + " unchanged\n");
  ASSERT_EQ(Run({SNAPCTL_BIN, "init", "--no-vmm-args", "--no-vmm-uid", "--pager-autostart"}).exit_code, 0);
  config = ReadJson(data() + "/config.json");
  EXPECT_EQ(config["vmm_args"], json::array());
  EXPECT_FALSE(config.contains("vmm_uid"));
  EXPECT_FALSE(config.contains("vmm_gid"));
  EXPECT_EQ(config["pager_autostart"], true);
  EXPECT_EQ(config["pager_cache_bytes"], 12345);
  // --json after the command: the config as JSON.
  ToolRun shown = Run({SNAPCTL_BIN, "init", "--json"});
  EXPECT_EQ(json::parse(shown.out, nullptr, false), config) << shown.out;

  // The layer bound: 8 unless given, 1 to the pager's 16; the compact
  // depth (4 unless given) follows it down.
  EXPECT_EQ(config["max_layers"], 8);
  EXPECT_EQ(config["compact_depth"], 4);
  ToolRun layers = Run({SNAPCTL_BIN, "init", "--max-layers", "3"});
  EXPECT_EQ(layers.out, "reconfigured " + data() + ": compact_depth, max_layers\n") << layers.err;
  EXPECT_EQ(ReadJson(data() + "/config.json")["max_layers"], 3);
  EXPECT_EQ(ReadJson(data() + "/config.json")["compact_depth"], 3);
  for (const char* bad : {"0", "17"}) {
    ToolRun refused = Run({SNAPCTL_BIN, "init", "--max-layers", bad});
    EXPECT_EQ(refused.exit_code, cli::kExitUsage) << bad;
    EXPECT_NE(refused.err.find("--max-layers"), std::string::npos) << refused.err;
  }
  EXPECT_EQ(ReadJson(data() + "/config.json")["max_layers"], 3);
  json edited = ReadJson(data() + "/config.json");
  edited["max_layers"] = 0;
  std::ofstream(data() + "/config.json") << edited.dump();
  ToolRun unreadable = Run({SNAPCTL_BIN, "list"});
  EXPECT_EQ(unreadable.exit_code, cli::kExitNotInitialized);
  EXPECT_NE(unreadable.err.find("max_layers"), std::string::npos) << unreadable.err;
}

// One data directory and one version key for every tool, from the
// environment: a pager started with neither flag is the one pagerctl and
// snapctl find with neither flag.
TEST_F(CliTest, TheDefaultsComeFromTheEnvironmentForEveryTool) {
  const std::vector<std::string> env = {"UFFDPAGER_VERSION_KEY=envkey"};
  auto pager = ChildProcess::Spawn(
      {"/usr/bin/env", "UFFDPAGER_DATA_DIR=" + data(), "UFFDPAGER_VERSION_KEY=envkey", UFFD_PAGER_BIN},
      dir_ / "pager.log");
  ASSERT_TRUE(pager.ok()) << pager.status().ToString();
  PagerClient client(PagerClient::ControlSocketPath(data(), "envkey"));
  ASSERT_TRUE(WaitFor([&] { return client.Health().ok(); }, 20s)) << pager->Log();

  ToolRun health = Run({PAGERCTL_BIN, "health"}, env);
  EXPECT_EQ(health.exit_code, 0) << health.err;
  EXPECT_NE(health.out.find("uffd-pager envkey (build " + std::string(kVersion) + ") is up on " +
                            PagerClient::ControlSocketPath(data(), "envkey")),
            std::string::npos)
      << health.out;
  ToolRun init = Run({SNAPCTL_BIN, "init"}, env);
  EXPECT_EQ(init.exit_code, 0) << init.err;
  EXPECT_EQ(ReadJson(data() + "/config.json")["pager_version_key"], "envkey");
  // Without the variable, the other key: nobody answers there.
  EXPECT_EQ(Run({PAGERCTL_BIN, "health"}).exit_code, cli::kExitUnavailable);
}

TEST_F(CliTest, PagerctlJsonIsTheApiAnswerUnchanged) {
  PagerProcessOptions options;
  options.extra_args = {"--metrics-addr", "127.0.0.1:0"};
  auto pager = TestPager::Start(dir_.path(), options);
  ASSERT_TRUE(pager.ok()) << pager.status().ToString();
  const std::string socket = (*pager)->client().control_socket_path();
  auto api = [&](const std::string& path) {
    auto r = HttpClient(socket).Send("GET", path, "", 10s);
    EXPECT_TRUE(r.ok() && r->status == 200);
    return r.ok() ? json::parse(r->body, nullptr, false) : json();
  };

  const json health = api("/health");
  ASSERT_TRUE(health.contains("pager_version") && health.contains("metrics_addr")) << health.dump();
  // --json before and after the command alike.
  for (const auto& argv : {std::vector<std::string>{PAGERCTL_BIN, "--json", "--socket", socket, "health"},
                           std::vector<std::string>{PAGERCTL_BIN, "health", "--socket", socket, "--json"}}) {
    ToolRun r = Run(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out, nullptr, false), health) << r.out;
  }
  ToolRun sessions = Run({PAGERCTL_BIN, "sessions", "--json", "--socket", socket});
  EXPECT_EQ(json::parse(sessions.out, nullptr, false), api("/sessions")) << sessions.out;

  // A session: created through pagerctl; its answer, its description.
  std::ofstream(dir_ / "mem", std::ios::binary) << std::string(1 << 16, 'x');
  ToolRun created = Run({PAGERCTL_BIN, "--socket", socket, "--json", "create", "--instance-id", "vm1", "--backing",
                         dir_ / "mem", "--expected-uid", std::to_string(::getuid())});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  json answer = json::parse(created.out, nullptr, false);
  EXPECT_EQ(answer["session_id"], "vm1");
  EXPECT_TRUE(answer.contains("uffd_socket_path") && answer.contains("pager_version")) << created.out;
  ToolRun shown = Run({PAGERCTL_BIN, "--socket", socket, "--json", "show", "vm1"});
  EXPECT_EQ(json::parse(shown.out, nullptr, false), api("/sessions/vm1")) << shown.out;
  EXPECT_EQ(json::parse(shown.out, nullptr, false)["expected_uid"], ::getuid());

  // One line of text without --json; the exit codes of the table.
  ToolRun text = Run({PAGERCTL_BIN, "--socket", socket, "health"});
  EXPECT_EQ(std::count(text.out.begin(), text.out.end(), '\n'), 1) << text.out;
  EXPECT_EQ(Run({PAGERCTL_BIN, "--socket", socket, "show", "nosuch"}).exit_code, cli::kExitNotFound);
  EXPECT_EQ(Run({PAGERCTL_BIN, "--socket", socket, "complete", "nosuch"}).exit_code, cli::kExitNotFound);
  ToolRun closed = Run({PAGERCTL_BIN, "--socket", socket, "close", "vm1"});
  EXPECT_EQ(closed.exit_code, 0);
  EXPECT_EQ(closed.out, "session vm1 closed\n");
  EXPECT_EQ(Run({PAGERCTL_BIN, "--socket", dir_ / "nobody.sock", "health"}).exit_code, cli::kExitUnavailable);
}

}  // namespace
}  // namespace uffdpager::testing
