// RunBoundedCommand: runs a program to its end, or to a deadline, and keeps
// what it printed. PagerService runs its start command through it
// (`systemctl start uffd-pager@V.service`): a hung systemctl, or a command
// that blocks on something we cannot see, must not hang the caller.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager {

struct CommandOutcome {
  int wait_status = 0;  // as from waitpid
  std::string output;   // stdout and stderr interleaved; only the tail if it was long
};

// Runs argv (argv[0] is looked up in PATH when it has no '/') with stdin on
// /dev/null, in a process group of its own. Returns once the program exits,
// even if something it started in the background still holds its output
// open. At `deadline` the whole process group is killed and the answer is
// kTimeout (with the output so far). A program that cannot be executed is
// an error naming it. A non-zero exit is NOT an error here: the caller
// judges wait_status.
Result<CommandOutcome> RunBoundedCommand(const std::vector<std::string>& argv,
                                         std::chrono::steady_clock::time_point deadline);

// argv as one line a person can paste into a shell (arguments quoted when
// they need it), for error messages.
std::string DescribeCommand(const std::vector<std::string>& argv);

// A command's output as an error message quotes it: without trailing
// whitespace, "(none)" when empty.
std::string OutputForMessage(const std::string& output);

// "exited with status N", "was killed by signal N".
std::string DescribeWaitStatus(int wait_status);

}  // namespace uffdpager
