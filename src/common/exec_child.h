// What a forked child does just before exec, in one place. Only
// async-signal-safe calls: the parent is multi-threaded.
#pragma once

namespace uffdpager {

// Makes `stdin_fd`, `stdout_fd` and `stderr_fd` the child's 0, 1 and 2, marks
// every other fd close-on-exec (nothing of the parent's, such as a lock or a
// listening socket, leaks into the program or a daemon it starts), and
// clears the signal mask the parent's threads may have set.
void PrepareChildForExec(int stdin_fd, int stdout_fd, int stderr_fd);

}  // namespace uffdpager
