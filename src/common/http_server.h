// HttpServer: HTTP/1.1 on a Unix socket (libmicrohttpd), one thread per
// connection so a slow request never holds up another. Bounds what a client
// can make it hold: bodies over `max_body_bytes` are refused with 413 without
// being stored; a connection idle for `idle_timeout_seconds` is closed, and
// so is one that has not delivered a whole request within
// `request_deadline_seconds`, however steadily it trickles bytes; at most
// `max_connections` are served at once.
//
// The request path reaches the handler as the client sent it (percent
// escapes kept, the query string cut off): the handler splits it before
// decoding (common/url_path.h), so an escaped '/' stays inside its segment.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/http_message.h"
#include "common/unique_fd.h"
#include "uffdpager/status.h"

struct MHD_Daemon;

namespace uffdpager {

class HttpConnectionTable;

struct HttpServerOptions {
  size_t max_body_bytes = 1 << 20;
  unsigned idle_timeout_seconds = 10;
  // Each request, headers and body, must have arrived whole this many
  // seconds after the connection was accepted or its previous answer sent;
  // otherwise it is answered 408 and closed. A request being handled (a
  // long `complete`) is never cut. 0: no deadline.
  unsigned request_deadline_seconds = 30;
  // Connections served at once. At the limit a new connection takes the
  // place of the one that has waited longest without a whole request (a
  // slow or idle client: answered 503 and closed); if every connection has
  // a request being handled, the new one is answered 503 and closed.
  unsigned max_connections = 512;
  mode_t socket_mode = 0600;
  // Renders the body of the server's own error answers (413, 500). The pager
  // answers {"error": ...}; tinyvmm answers Firecracker's {"fault_message": ...}.
  std::function<std::string(const std::string& message)> error_body;
  // Start() only: called with the socket's path once it is bound, before
  // any connection is accepted (to give it an owner or group, say).
  std::function<Status(const std::string& socket_path)> prepare_socket;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
 public:
  // Creates the socket at `socket_path` and starts serving `handler`.
  static Result<std::unique_ptr<HttpServer>> Start(const std::string& socket_path, HttpServerOptions options,
                                                   HttpHandler handler);
  // Serves on a socket the caller already listens on (a loopback TCP port,
  // say); `name` is how logs call it. No file is removed at shutdown.
  static Result<std::unique_ptr<HttpServer>> StartOnListener(UniqueFd listener, const std::string& name,
                                                             HttpServerOptions options, HttpHandler handler);
  ~HttpServer();  // Shutdown(1 s) if not done yet

  // Stops accepting connections, lets those in progress finish (so answers
  // already queued, like a drain's 204, reach their clients) for up to
  // `grace`, then stops the server and removes the socket file.
  void Shutdown(std::chrono::milliseconds grace);

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  const std::string& socket_path() const { return socket_path_; }

  // For the server's C callbacks: dispatches one complete request; renders
  // an error; the connections held.
  HttpResponse Dispatch(const HttpRequest& request) const;
  HttpResponse ErrorResponse(int status, const std::string& message) const;
  size_t max_body_bytes() const { return options_.max_body_bytes; }
  HttpConnectionTable& connections() { return *connections_; }

 private:
  HttpServer(std::string socket_path, HttpServerOptions options, HttpHandler handler);

  std::string socket_path_;  // the socket file (or the name of a listener passed in)
  bool owns_socket_file_ = false;
  HttpServerOptions options_;
  HttpHandler handler_;
  // Outlives daemon_: libmicrohttpd reports into it until it is stopped.
  std::unique_ptr<HttpConnectionTable> connections_;
  MHD_Daemon* daemon_ = nullptr;
};

}  // namespace uffdpager
