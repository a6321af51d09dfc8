// HttpClient: HTTP/1.1 requests to a server on a Unix socket (libcurl).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "common/http_message.h"
#include "uffdpager/status.h"

namespace uffdpager {

// libcurl's process-wide initialization, once, before the first handle
// (curl_global_init is not thread-safe; every curl user here calls this).
void CurlGlobalInitOnce();

class HttpClient {
 public:
  explicit HttpClient(std::string socket_path) : socket_path_(std::move(socket_path)) {}

  // Sends one request; any HTTP status is a successful exchange. Fails only
  // when no answer came (no socket, refused, timed out, broken connection).
  Result<HttpResponse> Send(std::string_view method, std::string_view path, std::string_view body = {},
                            std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;

  const std::string& socket_path() const { return socket_path_; }

 private:
  std::string socket_path_;
};

}  // namespace uffdpager
