#include "common/http_client.h"

#include <curl/curl.h>

#include <memory>
#include <mutex>

namespace uffdpager {

namespace {

size_t AppendToString(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct HeaderListDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

void CurlGlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

Result<HttpResponse> HttpClient::Send(std::string_view method, std::string_view path, std::string_view body,
                                      std::chrono::milliseconds timeout) const {
  CurlGlobalInitOnce();
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return Status::Internal("curl_easy_init failed");
  std::string url = "http://localhost" + std::string(path);
  std::string method_str(method);
  HttpResponse response;
  std::unique_ptr<curl_slist, HeaderListDeleter> headers;
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_path_.c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method_str.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &AppendToString);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &response.body);
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    headers.reset(curl_slist_append(nullptr, "Content-Type: application/json"));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (rc != CURLE_OK && status == 0) {
    std::string what = method_str + " " + std::string(path) + " on " + socket_path_ + ": " + curl_easy_strerror(rc);
    if (rc == CURLE_COULDNT_CONNECT) return Status::Unavailable(what);
    if (rc == CURLE_OPERATION_TIMEDOUT) return Status::Timeout(what);
    return Status::Protocol(what);
  }
  response.status = static_cast<int>(status);
  char* content_type = nullptr;
  curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &content_type);
  response.content_type = content_type != nullptr ? content_type : "";
  return response;
}

}  // namespace uffdpager
