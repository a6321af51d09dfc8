// SigbusGuard: reads of a file mapping that fail instead of killing the pager.
//
// A shared mapping of a backing file turns a read past the file's current end
// (the file was truncated after it was opened) into SIGBUS, which would take
// every session down with the pager. A guarded read runs with a per-thread
// handler armed over one address range: a SIGBUS inside it jumps back and the
// read reports failure; a SIGBUS anywhere else still kills the process, as it
// should.
#pragma once

#include <cstddef>

namespace uffdpager {

// Runs read(context) with SIGBUS on [range, range+length) caught. Returns
// false if that range raised it (read did not finish). `read` must own
// nothing that needs destroying: a caught SIGBUS leaves its frames by
// siglongjmp, without unwinding.
bool RunWithSigbusGuard(const void* range, size_t length, void (*read)(void* context), void* context);

}  // namespace uffdpager
