#include "common/http_server.h"

#include <microhttpd.h>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <list>
#include <nlohmann/json.hpp>
#include <thread>

#include <fmt/format.h>

#include "common/logging.h"
#include "common/mutex.h"
#include "common/unix_socket.h"

namespace uffdpager {

// One connection as the table sees it. libmicrohttpd keeps a pointer to it
// as the connection's socket context.
struct HttpConnection {
  enum class Phase {
    kWaiting,   // for a request, or reading one: the deadline runs
    kHandling,  // a whole request is being handled and answered: never cut
    kRefused,   // answered 503 and shut for writing; cut at `deadline`
    kCut,       // shut both ways; libmicrohttpd closes it
  };
  int fd = -1;
  Phase phase = Phase::kWaiting;
  std::chrono::steady_clock::time_point deadline;
  std::list<HttpConnection*>::iterator position;
};

// The connections a server holds, for its request deadline and its
// connection limit. libmicrohttpd owns each socket; the table only ever
// shuts one down, never closes it, and only while libmicrohttpd has not
// reported it closed (it does so before it closes the fd), so the fd is
// always the connection's own.
class HttpConnectionTable {
 public:
  HttpConnectionTable(const std::string& name, const HttpServerOptions& options,
                      std::function<std::string(const std::string&)> error_body)
      : name_(name), options_(options), error_body_(std::move(error_body)) {
    watchdog_ = std::thread([this] { WatchDeadlines(); });
  }
  ~HttpConnectionTable() {
    {
      MutexLock lock(&mu_);
      stopping_ = true;
      wake_.SignalAll();
    }
    if (watchdog_.joinable()) watchdog_.join();
  }
  HttpConnectionTable(const HttpConnectionTable&) = delete;
  HttpConnectionTable& operator=(const HttpConnectionTable&) = delete;

  // A connection just accepted: makes room for it, or refuses it.
  void Add(HttpConnection* c) EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    const auto now = std::chrono::steady_clock::now();
    c->deadline = now + RequestDeadline();
    if (live_ >= options_.max_connections) {
      HttpConnection* longest = nullptr;
      for (HttpConnection* other : connections_) {
        if (other->phase == HttpConnection::Phase::kWaiting && (!longest || other->deadline < longest->deadline)) {
          longest = other;
        }
      }
      if (longest != nullptr) {
        std::string why = fmt::format(
            "connection closed to make room for a new one: the server is at its limit of {} connections and this one "
            "had waited longest without sending a whole request",
            options_.max_connections);
        Answer(longest, 503, why);
        Cut(longest);
        UFFD_LOG_RATE_LIMITED(spdlog::level::warn, "{}: {}", name_, why);
      } else {
        std::string why =
            fmt::format("connection refused: the server is handling {} requests, its limit of connections; retry later",
                        options_.max_connections);
        Answer(c, 503, why);
        // The client may still be sending its request: let it, so it reads
        // this answer rather than a reset, but not for long.
        ::shutdown(c->fd, SHUT_WR);
        c->phase = HttpConnection::Phase::kRefused;
        c->deadline = now + kRefusedGrace;
        UFFD_LOG_RATE_LIMITED(spdlog::level::warn, "{}: {}", name_, why);
      }
    }
    if (c->phase == HttpConnection::Phase::kWaiting) ++live_;
    c->position = connections_.insert(connections_.end(), c);
  }

  // libmicrohttpd closes it next.
  void Remove(HttpConnection* c) EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    if (IsLive(c)) --live_;
    connections_.erase(c->position);
  }

  // A whole request is to be handled and answered. False if the connection
  // was given up: its request must then not be handled at all.
  bool BeginHandling(HttpConnection* c) EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    if (c->phase == HttpConnection::Phase::kHandling) return true;  // answered early (413), then completed
    if (c->phase != HttpConnection::Phase::kWaiting) return false;
    c->phase = HttpConnection::Phase::kHandling;
    return true;
  }

  // The answer went out (or the request was abandoned): the next request's
  // deadline starts now.
  void EndHandling(HttpConnection* c) EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    if (c->phase != HttpConnection::Phase::kHandling) return;
    c->phase = HttpConnection::Phase::kWaiting;
    c->deadline = std::chrono::steady_clock::now() + RequestDeadline();
  }

 private:
  static constexpr std::chrono::seconds kRefusedGrace{1};

  std::chrono::steady_clock::duration RequestDeadline() const {
    // Without a deadline only the limit can move a waiting connection out.
    if (options_.request_deadline_seconds == 0) return std::chrono::hours(24 * 365);
    return std::chrono::seconds(options_.request_deadline_seconds);
  }

  static bool IsLive(const HttpConnection* c) {
    return c->phase == HttpConnection::Phase::kWaiting || c->phase == HttpConnection::Phase::kHandling;
  }

  // Writes a whole answer without blocking (the socket's buffer is empty:
  // nothing was answered on it yet, or its last answer has gone out).
  void Answer(HttpConnection* c, int status, const std::string& message) REQUIRES(mu_) {
    std::string body = error_body_(message);
    const char* reason = status == 408 ? "Request Timeout" : "Service Unavailable";
    std::string text = fmt::format(
        "HTTP/1.1 {} {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}", status,
        reason, body.size(), body);
    (void)!::send(c->fd, text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }

  // libmicrohttpd's thread sees the end of the stream and closes it.
  void Cut(HttpConnection* c) REQUIRES(mu_) {
    ::shutdown(c->fd, SHUT_RDWR);
    if (IsLive(c)) --live_;
    c->phase = HttpConnection::Phase::kCut;
  }

  void WatchDeadlines() EXCLUDES(mu_) {
    // A quarter of the deadline at most, so none is overrun by much.
    std::chrono::milliseconds period(250);
    if (options_.request_deadline_seconds > 0) {
      period = std::min<std::chrono::milliseconds>(period, std::chrono::seconds(options_.request_deadline_seconds) / 4);
    }
    MutexLock lock(&mu_);
    while (!stopping_) {
      wake_.WaitFor(period);
      const auto now = std::chrono::steady_clock::now();
      for (HttpConnection* c : connections_) {
        if (now < c->deadline) continue;
        if (c->phase == HttpConnection::Phase::kWaiting) {
          std::string why = fmt::format(
              "connection closed: no whole request arrived within {} s of connecting or of the previous answer",
              options_.request_deadline_seconds);
          Answer(c, 408, why);
          Cut(c);
          UFFD_LOG_RATE_LIMITED(spdlog::level::warn, "{}: {}", name_, why);
        } else if (c->phase == HttpConnection::Phase::kRefused) {
          Cut(c);
        }
      }
    }
  }

  const std::string name_;
  const HttpServerOptions options_;
  const std::function<std::string(const std::string&)> error_body_;
  Mutex mu_;
  CondVar wake_{&mu_};
  bool stopping_ GUARDED_BY(mu_) = false;
  std::list<HttpConnection*> connections_ GUARDED_BY(mu_);
  size_t live_ GUARDED_BY(mu_) = 0;  // waiting or handling: what the limit counts
  std::thread watchdog_;
};

namespace {

// Connections being refused or closed still hold a libmicrohttpd slot (and
// a thread) for a moment; past the limit plus this, it stops accepting.
unsigned ClosingHeadroom(unsigned max_connections) { return std::max(16u, max_connections / 8); }

// Per-request state, created on the first callback and freed in the
// completion callback.
struct PendingRequest {
  std::string body;
  bool too_large = false;
};

HttpConnection* ConnectionOf(MHD_Connection* connection) {
  const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return info != nullptr ? static_cast<HttpConnection*>(info->socket_context) : nullptr;
}

MHD_Result Queue(MHD_Connection* connection, const HttpResponse& response) {
  MHD_Response* r = MHD_create_response_from_buffer(response.body.size(), const_cast<char*>(response.body.data()),
                                                    MHD_RESPMEM_MUST_COPY);
  if (r == nullptr) return MHD_NO;
  if (!response.body.empty()) MHD_add_response_header(r, "Content-Type", response.content_type.c_str());
  MHD_Result rc = MHD_queue_response(connection, static_cast<unsigned>(response.status), r);
  MHD_destroy_response(r);
  return rc;
}

// Answers `connection` unless the table gave it up; `make` runs (and a
// request is handled) only if not.
template <typename MakeResponse>
MHD_Result Respond(HttpServer* server, MHD_Connection* connection, MakeResponse make) {
  HttpConnection* c = ConnectionOf(connection);
  if (c == nullptr || !server->connections().BeginHandling(c)) return MHD_NO;  // closes the connection
  return Queue(connection, make());
}

MHD_Result OnAccess(void* cls, MHD_Connection* connection, const char* url, const char* method, const char* /*version*/,
                    const char* upload_data, size_t* upload_data_size, void** con_cls) {
  auto* server = static_cast<HttpServer*>(cls);
  auto* pending = static_cast<PendingRequest*>(*con_cls);
  if (pending == nullptr) {
    pending = new PendingRequest();
    *con_cls = pending;
    // Refuse an announced oversized body before reading any of it.
    const char* length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length != nullptr && std::strtoull(length, nullptr, 10) > server->max_body_bytes()) {
      pending->too_large = true;
      return Respond(server, connection, [&] {
        return server->ErrorResponse(413, "request body of " + std::string(length) + " bytes exceeds the limit of " +
                                              std::to_string(server->max_body_bytes()) + " bytes");
      });
    }
    return MHD_YES;
  }
  if (*upload_data_size > 0) {
    if (!pending->too_large) {
      if (pending->body.size() + *upload_data_size > server->max_body_bytes()) {
        pending->too_large = true;
        pending->body.clear();
        pending->body.shrink_to_fit();
      } else {
        pending->body.append(upload_data, *upload_data_size);
      }
    }
    *upload_data_size = 0;  // consumed (or discarded, when too large)
    return MHD_YES;
  }
  if (pending->too_large) {
    return Respond(server, connection, [&] {
      return server->ErrorResponse(
          413, "request body exceeds the limit of " + std::to_string(server->max_body_bytes()) + " bytes");
    });
  }
  return Respond(server, connection, [&] { return server->Dispatch({method, url, std::move(pending->body)}); });
}

void OnCompleted(void* cls, MHD_Connection* connection, void** con_cls, MHD_RequestTerminationCode /*code*/) {
  delete static_cast<PendingRequest*>(*con_cls);
  *con_cls = nullptr;
  if (HttpConnection* c = ConnectionOf(connection)) static_cast<HttpServer*>(cls)->connections().EndHandling(c);
}

void OnConnection(void* cls, MHD_Connection* connection, void** socket_context, MHD_ConnectionNotificationCode code) {
  auto& table = static_cast<HttpServer*>(cls)->connections();
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    auto* c = new HttpConnection();
    const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    c->fd = info != nullptr ? info->connect_fd : -1;
    *socket_context = c;
    table.Add(c);
  } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
    auto* c = static_cast<HttpConnection*>(*socket_context);
    if (c == nullptr) return;
    table.Remove(c);
    delete c;
    *socket_context = nullptr;
  }
}

// Keeps the path as sent: the handler splits it before decoding.
size_t KeepEscapes(void* /*cls*/, MHD_Connection* /*connection*/, char* s) { return std::strlen(s); }

}  // namespace

HttpServer::HttpServer(std::string socket_path, HttpServerOptions options, HttpHandler handler)
    : socket_path_(std::move(socket_path)), options_(std::move(options)), handler_(std::move(handler)) {
  if (!options_.error_body) {
    options_.error_body = [](const std::string& m) { return nlohmann::json{{"error", m}}.dump(); };
  }
  connections_ = std::make_unique<HttpConnectionTable>(socket_path_, options_, options_.error_body);
}

Result<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& socket_path, HttpServerOptions options,
                                                      HttpHandler handler) {
  // A deep backlog: a burst of connections waits to be accepted (and to
  // make room under the limit) rather than turning a normal client away.
  auto listener = ListenUnixSocket(socket_path, options.socket_mode, SOMAXCONN);
  if (!listener.ok()) return listener.status();
  if (options.prepare_socket) {
    Status prepared = options.prepare_socket(socket_path);
    if (!prepared.ok()) {
      (void)RemoveSocketFile(socket_path);
      return prepared;
    }
  }
  auto server = StartOnListener(std::move(*listener), socket_path, std::move(options), std::move(handler));
  if (server.ok()) (*server)->owns_socket_file_ = true;
  return server;
}

Result<std::unique_ptr<HttpServer>> HttpServer::StartOnListener(UniqueFd listener, const std::string& name,
                                                                HttpServerOptions options, HttpHandler handler) {
  std::unique_ptr<HttpServer> server(new HttpServer(name, std::move(options), std::move(handler)));
  int listen_fd = listener.get();
  const unsigned max_connections = server->options_.max_connections;
  server->daemon_ =
      MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL | MHD_USE_ITC, 0,
                       nullptr, nullptr, &OnAccess, server.get(), MHD_OPTION_LISTEN_SOCKET, listen_fd,
                       MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(server->options_.idle_timeout_seconds),
                       MHD_OPTION_CONNECTION_LIMIT, max_connections + ClosingHeadroom(max_connections),
                       MHD_OPTION_NOTIFY_CONNECTION, &OnConnection, server.get(), MHD_OPTION_NOTIFY_COMPLETED,
                       &OnCompleted, server.get(), MHD_OPTION_UNESCAPE_CALLBACK, &KeepEscapes, nullptr, MHD_OPTION_END);
  if (server->daemon_ == nullptr) return Status::Internal("libmicrohttpd failed to start on " + name);
  listener.release();  // the daemon owns and closes the listening socket now
  return server;
}

HttpServer::~HttpServer() { Shutdown(std::chrono::seconds(1)); }

void HttpServer::Shutdown(std::chrono::milliseconds grace) {
  if (daemon_ == nullptr) return;
  MHD_socket listener = MHD_quiesce_daemon(daemon_);
  if (listener != MHD_INVALID_SOCKET) ::close(listener);
  if (owns_socket_file_) (void)RemoveSocketFile(socket_path_);
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < deadline) {
    const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    if (info == nullptr || info->num_connections == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  MHD_stop_daemon(daemon_);
  daemon_ = nullptr;
}

HttpResponse HttpServer::Dispatch(const HttpRequest& request) const {
  try {
    return handler_(request);
  } catch (const std::exception& e) {
    return ErrorResponse(500, std::string("internal error: ") + e.what());
  }
}

HttpResponse HttpServer::ErrorResponse(int status, const std::string& message) const {
  return HttpResponse{status, options_.error_body(message), "application/json"};
}

}  // namespace uffdpager
