#include "uffdpager/status.h"

#include <cstring>

namespace uffdpager {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "ok";
    case ErrorCode::kInvalidArgument: return "invalid_argument";
    case ErrorCode::kNotFound: return "not_found";
    case ErrorCode::kPermissionDenied: return "permission_denied";
    case ErrorCode::kAlreadyExists: return "already_exists";
    case ErrorCode::kIoError: return "io_error";
    case ErrorCode::kProtocol: return "protocol_error";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kConflict: return "conflict";
    case ErrorCode::kTimeout: return "timeout";
    case ErrorCode::kInternal: return "internal";
  }
  return "unknown";
}

Status Status::FromErrno(int error_number, std::string context) {
  ErrorCode code = ErrorCode::kIoError;
  switch (error_number) {
    case ENOENT: code = ErrorCode::kNotFound; break;
    case EEXIST: code = ErrorCode::kAlreadyExists; break;
    case EINVAL: code = ErrorCode::kInvalidArgument; break;
    // The kernel refused for lack of permission (file mode, a chown only root
    // may do, a capability): a refusal, answered 403, not an I/O failure.
    case EACCES:
    case EPERM: code = ErrorCode::kPermissionDenied; break;
    case ETIMEDOUT: code = ErrorCode::kTimeout; break;
    case ECONNREFUSED:
    case ESRCH: code = ErrorCode::kUnavailable; break;
    default: break;
  }
  return Status(code, error_number, std::move(context));
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  if (errno_ == 0) return message_;
  return message_ + ": " + std::strerror(errno_) + " (errno " + std::to_string(errno_) + ")";
}

Status Status::WithContext(const std::string& context) const {
  if (ok()) return *this;
  return Status(code_, errno_, context + ": " + message_);
}

}  // namespace uffdpager
