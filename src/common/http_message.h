// The request and response values the HTTP server and client exchange.
#pragma once

#include <string>

namespace uffdpager {

struct HttpRequest {
  std::string method;  // "GET", "PUT", ...
  std::string path;    // "/sessions/abc/close", without the query string
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
};

}  // namespace uffdpager
