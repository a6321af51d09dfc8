// RunTool: runs one of our command-line tools as a person would — a
// subprocess with extra environment variables — and keeps its exit code,
// stdout and stderr apart, for tests of what the tools print and return.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/wait_for.h"

namespace uffdpager::testing {

struct ToolRun {
  int exit_code = -1;  // -1: killed, or did not exit in time
  std::string out;
  std::string err;
};

// `env` entries are NAME=VALUE (NAME= with nothing unsets NAME). The wait is
// bounded by `timeout`, after which the tool is killed.
inline ToolRun RunTool(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
                       std::chrono::milliseconds timeout = std::chrono::minutes(2)) {
  ToolRun run;
  char out_path[] = "/tmp/tool-out.XXXXXX";
  char err_path[] = "/tmp/tool-err.XXXXXX";
  int out_fd = ::mkstemp(out_path);
  int err_fd = ::mkstemp(err_path);
  if (out_fd < 0 || err_fd < 0) return run;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, STDIN_FILENO);
    for (const auto& e : env) {
      auto eq = e.find('=');
      if (eq + 1 == e.size()) {
        ::unsetenv(e.substr(0, eq).c_str());
      } else {
        ::setenv(e.substr(0, eq).c_str(), e.substr(eq + 1).c_str(), 1);
      }
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out_fd);
  ::close(err_fd);
  int status = 0;
  bool exited = pid > 0 && WaitFor([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout);
  if (pid > 0 && !exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  if (exited && WIFEXITED(status)) run.exit_code = WEXITSTATUS(status);
  auto slurp = [](const char* path) {
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    ::unlink(path);
    return text;
  };
  run.out = slurp(out_path);
  run.err = slurp(err_path);
  return run;
}

}  // namespace uffdpager::testing
