// The request and response values the HTTP server and client exchange.
#pragma once

#include <string>

namespace uffdpager {

struct HttpRequest {
  std::string method;  // "GET", "PUT", ...
  // "/sessions/abc/close" as the client sent it: without the query string,
  // percent escapes kept (DecodePathSegments in common/url_path.h splits it).
  std::string path;
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
};

}  // namespace uffdpager
