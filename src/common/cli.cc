#include "common/cli.h"

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <utility>

#include <fmt/format.h>

#include "common/version.h"

#ifndef UFFDPAGER_DEFAULT_DATA_DIR
#define UFFDPAGER_DEFAULT_DATA_DIR "/var/lib/uffd-pager"
#endif

namespace uffdpager::cli {

namespace {

std::string FromEnvironment(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

std::string Joined(const std::vector<std::string>& words, const char* separator) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : separator) + w;
  return out;
}

constexpr char kExitCodeTable[] =
    "Exit codes:\n"
    "  0  done\n"
    "  1  the operation failed (the message says why)\n"
    "  2  the command line is wrong; nothing was done\n"
    "  3  the pager or the VMM cannot be reached or started\n"
    "  4  the named instance or session does not exist\n"
    "  5  it exists already, or its state does not allow this\n"
    "  6  no data directory there (snapctl init), or its config.json is unreadable\n";

}  // namespace

int ExitCodeFor(const Status& status) {
  switch (status.code()) {
    case ErrorCode::kOk: return kExitOk;
    case ErrorCode::kNotFound: return kExitNotFound;
    case ErrorCode::kUnavailable:
    case ErrorCode::kTimeout: return kExitUnavailable;
    case ErrorCode::kConflict:
    case ErrorCode::kAlreadyExists: return kExitConflict;
    default: return kExitFailed;
  }
}

std::string DefaultDataDir() { return FromEnvironment(kDataDirEnv, UFFDPAGER_DEFAULT_DATA_DIR); }

std::string DefaultVersionKey() { return FromEnvironment(kVersionKeyEnv, kVersion); }

CLI::Validator IntegerIn(uint64_t min, uint64_t max) {
  std::string range = fmt::format("an integer from {} to {}", min, max);
  return CLI::Validator(
      [min, max, range](std::string& text) -> std::string {
        uint64_t value = 0;
        const char* end = text.data() + text.size();
        auto [stop, error] = std::from_chars(text.data(), end, value);
        // from_chars takes no sign and no space; a value past 2^64-1 is out of range, not wrapped.
        if (text.empty() || error != std::errc() || stop != end || value < min || value > max) {
          return "\"" + text + "\" is not " + range;
        }
        return "";
      },
      fmt::format("INT in [{}, {}]", min, max));
}

CommandLine::CommandLine(std::string program, std::string description)
    : program_(std::move(program)), app_(std::move(description), program_) {
  app_.fallthrough();  // a subcommand hands the flags it does not know to the program: global flags anywhere
  app_.set_version_flag("--version", program_ + " " + kVersion, "print the version and exit");
  app_.set_help_flag("-h,--help", "print this help and exit");
  app_.get_formatter()->column_width(36);
  app_.footer([this] { return Footer(examples_, false); });
}

void CommandLine::AddDataDirFlag(std::string* data_dir, const std::string& what) {
  *data_dir = DefaultDataDir();
  app_.add_option("--data-dir", *data_dir,
                  what + " (default: $" + kDataDirEnv + ", else " + UFFDPAGER_DEFAULT_DATA_DIR + ")")
      ->check(CLI::Validator(
          [](std::string& dir) { return dir.empty() ? std::string("the data directory may not be empty") : ""; },
          "DIR"));
  global_flags_.push_back("--data-dir DIR");
}

void CommandLine::AddVersionKeyFlag(std::string* version_key, const std::string& what) {
  *version_key = DefaultVersionKey();
  app_.add_option("--version-key", *version_key,
                  what + " (default: $" + kVersionKeyEnv + ", else the pager's version, " + kVersion + ")");
  global_flags_.push_back("--version-key KEY");
}

void CommandLine::AddJsonFlag(bool* json, const std::string& what) {
  app_.add_flag("--json", *json, what);
  global_flags_.push_back("--json");
}

void CommandLine::AddLogLevelFlag(std::string* level) {
  app_.add_option("--log-level", *level, "log messages at this level and above: " + Joined(kLogLevels, ", "))
      ->check(CLI::IsMember(kLogLevels))
      ->capture_default_str();
  global_flags_.push_back("--log-level LEVEL");
}

CLI::App* CommandLine::AddCommand(const std::string& name, const std::string& description,
                                  const std::vector<std::string>& examples) {
  CLI::App* command = app_.add_subcommand(name, description);
  command->footer([this, examples] { return Footer(examples, true); });
  return command;
}

void CommandLine::SetExamples(const std::vector<std::string>& examples) { examples_ = examples; }

void CommandLine::SetAction(CLI::App* command, std::function<int()> action) {
  actions_.emplace_back(command, std::move(action));
}

std::string CommandLine::Footer(const std::vector<std::string>& examples, bool for_command) const {
  std::string out;
  if (!examples.empty()) out += "Examples:\n  " + Joined(examples, "\n  ") + "\n\n";
  if (for_command && !global_flags_.empty()) {
    out += "Global flags, before or after the command (see " + program_ + " --help): " + Joined(global_flags_, ", ") +
           ", --version\n\n";
  }
  if (!for_command && !global_flags_.empty()) {
    out += "Global flags may come before or after the command.\n\n";
  }
  return out + kExitCodeTable;
}

std::optional<int> CommandLine::Parse(int argc, char** argv) {
  try {
    app_.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::Success& e) {
    return app_.exit(e);  // --help, --version
  } catch (const CLI::ParseError& e) {
    // CLI11 says "A subcommand is required" both for a word that names no
    // command and for no word at all.
    if (dynamic_cast<const CLI::RequiredError*>(&e) == nullptr || app_.get_subcommands().size() > 0) {
      return UsageError(e.what());
    }
    std::vector<std::string> names;
    for (const CLI::App* sub : std::as_const(app_).get_subcommands([](const CLI::App*) { return true; })) {
      names.push_back(sub->get_name());
    }
    for (const std::string& word : app_.remaining()) {
      if (!word.empty() && word[0] != '-') {
        return UsageError("unknown command \"" + word + "\"; the commands are " + Joined(names, ", "));
      }
    }
    return UsageError("a command is required: " + Joined(names, ", "));
  }
}

int CommandLine::RunCommand() const {
  for (const auto& [command, action] : actions_) {
    if (command->parsed()) return action();
  }
  return kExitOk;  // a command without an action does nothing
}

int CommandLine::Fail(const Status& status) const { return Fail(ExitCodeFor(status), status.ToString()); }

int CommandLine::Fail(int exit_code, const std::string& message) const {
  std::cerr << program_ << ": " << message << "\n";
  return exit_code;
}

int CommandLine::UsageError(const std::string& message) const {
  std::cerr << program_ << ": " << message << "\n"
            << "Run '" << program_ << " --help' for more.\n";
  return kExitUsage;
}

void PrintResult(const std::string& line) { std::cout << line << "\n" << std::flush; }

Progress::Progress(std::string program) : program_(std::move(program)), enabled_(::isatty(STDERR_FILENO) == 1) {
  if (enabled_) ticker_ = std::thread([this] { Tick(); });
}

Progress::~Progress() { Done(); }

void Progress::Done() {
  if (!enabled_) return;
  {
    MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
    wake_.Signal();
  }
  ticker_.join();
  std::fputs("\r\033[K", stderr);  // erase the line
  std::fflush(stderr);
}

void Progress::Step(const std::string& what) {
  if (!enabled_) return;
  MutexLock lock(&mu_);
  if (stop_) return;
  step_ = what;
  step_started_ = std::chrono::steady_clock::now();
  Redraw();
}

void Progress::Redraw() {
  if (step_.empty()) return;
  auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - step_started_).count();
  std::string line = program_ + ": " + step_;
  if (seconds > 0) line += fmt::format(" ({} s)", seconds);
  std::fprintf(stderr, "\r\033[K%s", line.c_str());
  std::fflush(stderr);
}

void Progress::Tick() {
  MutexLock lock(&mu_);
  while (!stop_) {
    wake_.WaitFor(std::chrono::milliseconds(500));
    if (!stop_) Redraw();
  }
}

}  // namespace uffdpager::cli
