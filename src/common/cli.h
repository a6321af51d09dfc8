// The command-line conventions snapctl, pagerctl and uffd-pager share, in
// one place: global flags accepted before or after the subcommand, the exit
// codes, the default data directory and version key (and the environment
// variables that override them), numeric flags checked before use, a
// one-line result on success, progress on a terminal, and --help with
// examples and the exit codes.
//
// Thread safety: Progress may be reported from any thread; everything else
// runs on main's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "uffdpager/status.h"

namespace uffdpager::cli {

// Exit codes, the same in every tool (README, "Exit codes").
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;          // the operation was tried and failed; stderr says why
inline constexpr int kExitUsage = 2;           // the command line is wrong; nothing was done
inline constexpr int kExitUnavailable = 3;     // the pager or VMM cannot be reached or started
inline constexpr int kExitNotFound = 4;        // the named instance or session does not exist
inline constexpr int kExitConflict = 5;        // it exists already, or its state does not allow this
inline constexpr int kExitNotInitialized = 6;  // no data directory there (snapctl init), or its config is unreadable

// The exit code of a failed operation: kNotFound is kExitNotFound,
// kUnavailable and kTimeout kExitUnavailable, kConflict and kAlreadyExists
// kExitConflict, anything else kExitFailed. REQUIRES: !status.ok().
int ExitCodeFor(const Status& status);

// The data directory and version key every tool (and the systemd unit) uses
// unless told otherwise: $UFFDPAGER_DATA_DIR, else the build's default
// (/var/lib/uffd-pager); $UFFDPAGER_VERSION_KEY, else the pager's version.
inline constexpr char kDataDirEnv[] = "UFFDPAGER_DATA_DIR";
inline constexpr char kVersionKeyEnv[] = "UFFDPAGER_VERSION_KEY";
std::string DefaultDataDir();
std::string DefaultVersionKey();

// A flag's value as a decimal integer in [min, max]: no sign, no
// fraction, nothing a cast would wrap ("-5" is refused, not 2^64-5). The
// message names the accepted range.
CLI::Validator IntegerIn(uint64_t min, uint64_t max);
// --log-level: one of kLogLevels; a typo is refused with the list.
inline const std::vector<std::string> kLogLevels = {"trace", "debug", "info", "warn", "error", "critical", "off"};

// One program's command line.
class CommandLine {
 public:
  CommandLine(std::string program, std::string description);

  CLI::App& app() { return app_; }
  const std::string& program() const { return program_; }

  // Global flags (given before or after the subcommand).
  void AddDataDirFlag(std::string* data_dir, const std::string& what);
  void AddVersionKeyFlag(std::string* version_key, const std::string& what);
  void AddJsonFlag(bool* json, const std::string& what);
  void AddLogLevelFlag(std::string* level);

  // A subcommand; its --help shows `examples`, the global flags and the exit
  // codes.
  CLI::App* AddCommand(const std::string& name, const std::string& description,
                       const std::vector<std::string>& examples);
  // The examples of the program's own --help.
  void SetExamples(const std::vector<std::string>& examples);

  // What `command` (from AddCommand) does once the command line names it:
  // RunCommand() calls `action` after Parse and leaves with its exit code.
  // `action` reads the command's flags, so it runs only after parsing.
  void SetAction(CLI::App* command, std::function<int()> action);

  // Parses argv. Returns the exit code to leave with when there is nothing
  // more to do (--help, --version: kExitOk; a wrong command line: kExitUsage,
  // after saying what was wrong and what would be accepted), nullopt to go on.
  std::optional<int> Parse(int argc, char** argv);
  // The exit code of the action of the command the command line named.
  // REQUIRES: Parse returned nullopt; every command has an action.
  int RunCommand() const;

  // "PROGRAM: message" on stderr; the exit code for it.
  int Fail(const Status& status) const;
  int Fail(int exit_code, const std::string& message) const;
  // A usage error found after parsing (flags that do not go together).
  int UsageError(const std::string& message) const;

 private:
  std::string Footer(const std::vector<std::string>& examples, bool for_command) const;

  std::string program_;
  CLI::App app_;
  std::vector<std::string> global_flags_;  // "--json: print ...", for the subcommands' help
  std::vector<std::string> examples_;
  std::vector<std::pair<CLI::App*, std::function<int()>>> actions_;
};

// The one-line human result of a command that succeeded, on stdout.
void PrintResult(const std::string& line);

// Progress of an operation that may take seconds, on stderr, only when
// stderr is a terminal: "PROGRAM: what (N s)", redrawn in place while the
// step lasts, erased when done, so nothing of it reaches a pipe or a log.
class Progress {
 public:
  explicit Progress(std::string program);
  ~Progress();  // Done()
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  bool enabled() const { return enabled_; }
  // The step now under way. Thread-safe.
  void Step(const std::string& what) EXCLUDES(mu_);
  // Erases the line and shows no step after this: call it before printing
  // a result or an error. Idempotent.
  void Done() EXCLUDES(mu_);

 private:
  void Redraw() REQUIRES(mu_);
  void Tick() EXCLUDES(mu_);

  const std::string program_;
  const bool enabled_;
  Mutex mu_;
  CondVar wake_{&mu_};
  std::string step_ GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point step_started_ GUARDED_BY(mu_);
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread ticker_;
};

}  // namespace uffdpager::cli
