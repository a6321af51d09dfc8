#include "common/http_server.h"

#include <microhttpd.h>

#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/unix_socket.h"

namespace uffdpager {

namespace {

// Per-connection request state, created on the first callback and freed in
// the completion callback.
struct PendingRequest {
  std::string body;
  bool too_large = false;
};

MHD_Result Queue(MHD_Connection* connection, const HttpResponse& response) {
  MHD_Response* r = MHD_create_response_from_buffer(response.body.size(), const_cast<char*>(response.body.data()),
                                                    MHD_RESPMEM_MUST_COPY);
  if (r == nullptr) return MHD_NO;
  if (!response.body.empty()) MHD_add_response_header(r, "Content-Type", response.content_type.c_str());
  MHD_Result rc = MHD_queue_response(connection, static_cast<unsigned>(response.status), r);
  MHD_destroy_response(r);
  return rc;
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
      return Queue(connection, server->ErrorResponse(413, "request body of " + std::string(length) +
                                                              " bytes exceeds the limit of " +
                                                              std::to_string(server->max_body_bytes()) + " bytes"));
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
    return Queue(connection, server->ErrorResponse(413, "request body exceeds the limit of " +
                                                            std::to_string(server->max_body_bytes()) + " bytes"));
  }
  HttpRequest request{method, url, std::move(pending->body)};
  return Queue(connection, server->Dispatch(request));
}

void OnCompleted(void* /*cls*/, MHD_Connection* /*connection*/, void** con_cls, MHD_RequestTerminationCode /*code*/) {
  delete static_cast<PendingRequest*>(*con_cls);
  *con_cls = nullptr;
}

}  // namespace

HttpServer::HttpServer(std::string socket_path, HttpServerOptions options, HttpHandler handler)
    : socket_path_(std::move(socket_path)), options_(std::move(options)), handler_(std::move(handler)) {
  if (!options_.error_body) {
    options_.error_body = [](const std::string& m) { return nlohmann::json{{"error", m}}.dump(); };
  }
}

Result<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& socket_path, HttpServerOptions options,
                                                      HttpHandler handler) {
  auto listener = ListenUnixSocket(socket_path, options.socket_mode);
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
  server->daemon_ =
      MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL | MHD_USE_ITC, 0,
                       nullptr, nullptr, &OnAccess, server.get(), MHD_OPTION_LISTEN_SOCKET, listen_fd,
                       MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(server->options_.idle_timeout_seconds),
                       MHD_OPTION_NOTIFY_COMPLETED, &OnCompleted, nullptr, MHD_OPTION_END);
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
