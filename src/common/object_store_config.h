// ObjectStoreConfig: where an S3-compatible store is, how to sign for it,
// and how long to wait and how often to retry.
//
// Values come from the caller first, then from the environment variables
// the AWS tools use, then from defaults:
//
//   endpoint     AWS_ENDPOINT_URL        (required: "http[s]://HOST[:PORT]", no path)
//   region       AWS_REGION, then AWS_DEFAULT_REGION, else "us-east-1"
//   credentials  AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (both or neither;
//                neither: requests go unsigned), AWS_SESSION_TOKEN (optional,
//                only with a key pair)
//
// Credentials are secrets: nothing here or in the client puts them in a
// Status, a log line or an exception (`Redact` is the last line of defence
// for text that came from elsewhere, such as a store's error body).
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "uffdpager/status.h"

namespace uffdpager {

struct ObjectStoreCredentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // empty: none

  bool empty() const { return access_key_id.empty(); }
};

// Retries of one request: on timeouts, refused or reset connections and 5xx
// answers, never on another 4xx. Attempt n (1-based) that fails retriably
// waits a random time in [b/2, b] with b = min(max_backoff, initial_backoff *
// 2^(n-1)) before attempt n+1. With the defaults, a store that stays down
// costs at most 4 attempts and 50+100+200 ms of waiting (plus each attempt's
// own timeouts: a refused connection fails at once, a silent one after
// connect_timeout).
struct RetryPolicy {
  int max_attempts = 4;  // 1: no retry
  std::chrono::milliseconds initial_backoff{50};
  std::chrono::milliseconds max_backoff{2000};

  // The pause before attempt `failed_attempt + 1`; `unit_random` in [0, 1).
  std::chrono::milliseconds BackoffAfter(int failed_attempt, double unit_random) const;
  // The same with a random draw of the calling thread's own generator.
  std::chrono::milliseconds JitteredBackoffAfter(int failed_attempt) const;
};

struct ObjectStoreConfig {
  std::string endpoint;  // "http://127.0.0.1:7480", no trailing '/'
  std::string region = "us-east-1";
  ObjectStoreCredentials credentials;
  RetryPolicy retry;
  // Per attempt: to connect, and for the whole exchange. A transfer that
  // moves less than `stall_bytes_per_second` for `stall_seconds` is a timeout
  // too (a connection gone silent mid-body).
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds request_timeout{30000};
  long stall_bytes_per_second = 1024;
  long stall_seconds = 5;

  // "endpoint http://... region r, signed" without any credential.
  std::string Describe() const;
  // `text` with every credential in it replaced by "[redacted]".
  std::string Redact(std::string_view text) const;
};

// What a caller sets explicitly; each set field wins over the environment.
struct ObjectStoreConfigOverrides {
  std::optional<std::string> endpoint;
  std::optional<std::string> region;
  std::optional<ObjectStoreCredentials> credentials;
};

// Reads one environment variable (nullptr: unset). The default is getenv;
// tests pass their own.
using EnvironmentLookup = std::function<const char*(const char* name)>;

// The configuration from `overrides`, then the environment, then defaults
// (table above). kInvalidArgument naming the variable or field at fault for
// a missing or malformed endpoint, or half a key pair; the message never
// holds a credential.
Result<ObjectStoreConfig> LoadObjectStoreConfig(const ObjectStoreConfigOverrides& overrides = {},
                                                const EnvironmentLookup& lookup = nullptr);

// OK for "http://HOST[:PORT]" or "https://HOST[:PORT]" (one trailing '/'
// allowed), else kInvalidArgument.
Status ValidateEndpoint(std::string_view endpoint);

}  // namespace uffdpager
