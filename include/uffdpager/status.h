// Status and Result<T>: errors as values.
//
// Every fallible operation in uffdpager returns a Status (or a Result<T>
// carrying either a value or a Status). A Status records what kind of
// failure happened, the errno that caused it (0 when none did), and the
// context: which operation on which object. Nothing returns -1 upward.
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace uffdpager {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,   // the caller's input is wrong (bad body, bad handshake)
  kNotFound,          // a named thing does not exist
  kPermissionDenied,  // refused: the caller (or the pager on its behalf) may not do this
  kAlreadyExists,
  kIoError,      // a system call failed for another reason
  kProtocol,     // a peer broke the protocol (HTTP, handshake)
  kUnavailable,  // refused for now (draining, peer gone)
  kConflict,     // the object is in the wrong state for this operation
  kTimeout,
  kInternal,
};

const char* ErrorCodeName(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK

  static Status Ok() { return Status(); }
  static Status Error(ErrorCode code, std::string message) { return Status(code, 0, std::move(message)); }
  // An error caused by a failed system call; the code is derived from errno.
  static Status FromErrno(int error_number, std::string context);
  static Status InvalidArgument(std::string m) { return Error(ErrorCode::kInvalidArgument, std::move(m)); }
  static Status NotFound(std::string m) { return Error(ErrorCode::kNotFound, std::move(m)); }
  static Status PermissionDenied(std::string m) { return Error(ErrorCode::kPermissionDenied, std::move(m)); }
  static Status Protocol(std::string m) { return Error(ErrorCode::kProtocol, std::move(m)); }
  static Status Conflict(std::string m) { return Error(ErrorCode::kConflict, std::move(m)); }
  static Status Unavailable(std::string m) { return Error(ErrorCode::kUnavailable, std::move(m)); }
  static Status Timeout(std::string m) { return Error(ErrorCode::kTimeout, std::move(m)); }
  static Status Internal(std::string m) { return Error(ErrorCode::kInternal, std::move(m)); }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  int error_number() const { return errno_; }
  const std::string& message() const { return message_; }

  // "context: strerror (errno N)" or just the message; "OK" when ok.
  std::string ToString() const;

  // Prefixes the message with more context, keeping code and errno.
  Status WithContext(const std::string& context) const;
  // The same error, message and errno as another kind: for a caller that
  // knows better what an errno-derived code means where it happened (an
  // ENOENT that is a damaged directory, not an unknown name).
  Status WithCode(ErrorCode code) const { return ok() ? *this : Status(code, errno_, message_); }

 private:
  Status(ErrorCode code, int error_number, std::string message)
      : code_(code), errno_(error_number), message_(std::move(message)) {}

  ErrorCode code_ = ErrorCode::kOk;
  int errno_ = 0;
  std::string message_;
};

// Either a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = Status::Internal("Result built from an OK status without a value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace uffdpager

// Returns early from the enclosing function when a Status is not OK.
#define UFFD_RETURN_IF_ERROR(expr)    \
  do {                                \
    ::uffdpager::Status _st = (expr); \
    if (!_st.ok()) return _st;        \
  } while (0)
