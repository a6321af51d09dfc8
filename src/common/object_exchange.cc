#include "common/object_exchange.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "common/http_client.h"

namespace uffdpager {

namespace {

// Error bodies are small XML documents; more than this is not one.
constexpr size_t kMaxErrorBody = 16 * 1024;
constexpr size_t kMaxErrorField = 200;

std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, kMaxErrorField)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out;
}

std::string XmlElement(std::string_view body, std::string_view name) {
  std::string open = "<" + std::string(name) + ">";
  std::string close = "</" + std::string(name) + ">";
  size_t start = body.find(open);
  if (start == std::string_view::npos) return "";
  start += open.size();
  size_t end = body.find(close, start);
  if (end == std::string_view::npos) return "";
  return Printable(body.substr(start, end - start));
}

bool IsSuccess(ObjectRequest::Kind kind, long status) {
  switch (kind) {
    case ObjectRequest::Kind::kGetRange: return status == 206;
    case ObjectRequest::Kind::kDelete: return status == 204 || status == 200;
    default: return status == 200;
  }
}

// "bytes START-END/TOTAL" -> START, END.
bool ParseContentRange(std::string_view v, uint64_t* start, uint64_t* end) {
  if (!v.starts_with("bytes ")) return false;
  v.remove_prefix(6);
  size_t dash = v.find('-');
  size_t slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash) return false;
  auto num = [](std::string_view s, uint64_t* out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
    return ec == std::errc() && p == s.data() + s.size();
  };
  return num(v.substr(0, dash), start) && num(v.substr(dash + 1, slash - dash - 1), end);
}

}  // namespace

StoreErrorText ParseStoreError(std::string_view body) {
  return {XmlElement(body, "Code"), XmlElement(body, "Message")};
}

Status FinalStatus(const ExchangeOutcome& outcome, int attempts) {
  if (outcome.status.ok() || !outcome.retriable || attempts <= 1) return outcome.status;
  return Status::Error(outcome.status.code(),
                       outcome.status.message() + " (gave up after " + std::to_string(attempts) + " attempts)");
}

std::string ObjectRequest::Describe() const {
  switch (kind) {
    case Kind::kHead: return "HEAD " + object.ToString();
    case Kind::kGetRange:
      return "GET " + object.ToString() + " bytes " + std::to_string(offset) + "-" +
             std::to_string(offset + length - 1);
    case Kind::kPut: return "PUT " + object.ToString();
    case Kind::kDelete: return "DELETE " + object.ToString();
    case Kind::kCreateBucket: return "create bucket s3://" + object.bucket;
  }
  return "request";
}

ObjectExchange::ObjectExchange(const ObjectStoreConfig* config) : config_(config) {
  CurlGlobalInitOnce();
  handle_.reset(curl_easy_init());
}

ObjectExchange::~ObjectExchange() = default;

Status ObjectExchange::Prepare(const ObjectRequest* request) {
  if (!handle_) return Status::Internal("curl_easy_init failed");
  using Kind = ObjectRequest::Kind;
  if (request->kind == Kind::kGetRange && (request->length == 0 || request->buffer == nullptr)) {
    return Status::InvalidArgument(request->Describe() + ": a ranged GET needs a length and a buffer");
  }
  request_ = request;
  body_received_ = 0;
  body_sent_ = 0;
  body_overflow_ = false;
  read_errno_ = 0;
  error_body_.clear();
  error_buffer_[0] = '\0';
  info_ = {};

  CURL* c = handle_.get();
  // Forgets the last request's options, keeps its connection and DNS cache.
  curl_easy_reset(c);
  url_ = config_->endpoint +
         (request->kind == Kind::kCreateBucket ? "/" + request->object.bucket : request->object.RequestPath());
  curl_easy_setopt(c, CURLOPT_URL, url_.c_str());
  // A key may hold "//" or "/../": send the path exactly as encoded.
  curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(c, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config_->connect_timeout.count()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(config_->request_timeout.count()));
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, config_->stall_bytes_per_second);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, config_->stall_seconds);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error_buffer_);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &ObjectExchange::OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, this);
  curl_easy_setopt(c, CURLOPT_PRIVATE, this);

  curl_slist* headers = curl_slist_append(nullptr, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
  if (!config_->credentials.empty()) {
    sigv4_ = "aws:amz:" + config_->region + ":s3";
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4_.c_str());
    curl_easy_setopt(c, CURLOPT_USERNAME, config_->credentials.access_key_id.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, config_->credentials.secret_access_key.c_str());
    if (!config_->credentials.session_token.empty()) {
      headers = curl_slist_append(headers, ("x-amz-security-token: " + config_->credentials.session_token).c_str());
    }
  }
  switch (request->kind) {
    case Kind::kHead: curl_easy_setopt(c, CURLOPT_NOBODY, 1L); break;
    case Kind::kGetRange: {
      headers = curl_slist_append(headers, ("Range: bytes=" + std::to_string(request->offset) + "-" +
                                            std::to_string(request->offset + request->length - 1))
                                               .c_str());
      if (!request->if_match.empty()) headers = curl_slist_append(headers, ("If-Match: " + request->if_match).c_str());
      break;
    }
    case Kind::kPut:
    case Kind::kCreateBucket: {
      uint64_t size = request->kind == Kind::kCreateBucket ? 0
                      : request->body_fd >= 0              ? request->body_size
                                                           : request->body.size();
      curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(size));
      curl_easy_setopt(c, CURLOPT_READFUNCTION, &ObjectExchange::OnReadBody);
      curl_easy_setopt(c, CURLOPT_READDATA, this);
      break;
    }
    case Kind::kDelete: curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE"); break;
  }
  headers_.reset(headers);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers_.get());
  return Status::Ok();
}

size_t ObjectExchange::OnBody(char* data, size_t size, size_t count, void* self) {
  return static_cast<ObjectExchange*>(self)->WriteBody(data, size * count);
}

size_t ObjectExchange::OnReadBody(char* data, size_t size, size_t count, void* self) {
  return static_cast<ObjectExchange*>(self)->ReadBody(data, size * count);
}

size_t ObjectExchange::WriteBody(const char* data, size_t n) {
  long status = 0;
  curl_easy_getinfo(handle_.get(), CURLINFO_RESPONSE_CODE, &status);
  if (request_->kind == ObjectRequest::Kind::kGetRange && status == 206) {
    if (body_received_ + n > request_->length) {
      body_overflow_ = true;
      return 0;  // aborts the transfer: CURLE_WRITE_ERROR
    }
    std::memcpy(request_->buffer + body_received_, data, n);
    body_received_ += n;
    return n;
  }
  // An error body (or a body nobody asked for): kept for its <Code>, bounded.
  if (error_body_.size() < kMaxErrorBody) error_body_.append(data, std::min(n, kMaxErrorBody - error_body_.size()));
  return n;
}

size_t ObjectExchange::ReadBody(char* data, size_t n) {
  if (request_->kind == ObjectRequest::Kind::kCreateBucket) return 0;
  uint64_t total = request_->body_fd >= 0 ? request_->body_size : request_->body.size();
  size_t want = static_cast<size_t>(std::min<uint64_t>(n, total - body_sent_));
  if (want == 0) return 0;
  if (request_->body_fd < 0) {
    std::memcpy(data, request_->body.data() + body_sent_, want);
  } else {
    ssize_t got = ::pread(request_->body_fd, data, want, static_cast<off_t>(body_sent_));
    if (got <= 0) {
      read_errno_ = got < 0 ? errno : EIO;  // a file shorter than it said
      return CURL_READFUNC_ABORT;
    }
    want = static_cast<size_t>(got);
  }
  body_sent_ += want;
  return want;
}

std::optional<std::string> ObjectExchange::Header(const char* name) const {
  curl_header* h = nullptr;
  if (curl_easy_header(handle_.get(), name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || h == nullptr) {
    return std::nullopt;
  }
  return std::string(h->value);
}

Status ObjectExchange::Error(ErrorCode code, const std::string& detail) const {
  // Nothing we build holds a credential; the redaction covers text the store
  // or libcurl wrote.
  return Status::Error(code, config_->Redact(request_->Describe() + " at " + config_->endpoint + ": " + detail));
}

ExchangeOutcome ObjectExchange::StoreError(long http_status) const {
  StoreErrorText text = ParseStoreError(error_body_);
  std::string detail = "HTTP " + std::to_string(http_status);
  if (!text.code.empty()) detail += " " + text.code;
  if (!text.message.empty()) detail += ": " + text.message;
  const std::string& bucket = request_->object.bucket;
  switch (http_status) {
    case 404:
      if (text.code == "NoSuchBucket") {
        detail = "no bucket \"" + bucket + "\" (" + detail + ")";
      } else if (text.code == "NoSuchKey") {
        detail = "no object \"" + request_->object.key + "\" in bucket \"" + bucket + "\" (" + detail + ")";
      } else if (text.code.empty()) {
        detail = "no bucket \"" + bucket + "\" or no object \"" + request_->object.key + "\" in it (" + detail + ")";
      }
      return {Error(ErrorCode::kNotFound, detail), false};
    case 403: return {Error(ErrorCode::kPermissionDenied, "access denied (" + detail + ")"), false};
    case 412:
      return {Error(ErrorCode::kConflict,
                    "object changed: it no longer has ETag " + request_->if_match + " (" + detail + ")"),
              false};
    case 409: return {Error(ErrorCode::kAlreadyExists, detail), false};
    default: break;
  }
  if (http_status >= 500) return {Error(ErrorCode::kIoError, "store error (" + detail + ")"), true};
  if (http_status >= 400) return {Error(ErrorCode::kInvalidArgument, "refused (" + detail + ")"), false};
  return {Error(ErrorCode::kProtocol, "unexpected answer (" + detail + ")"), false};
}

ExchangeOutcome ObjectExchange::Finish(CURLcode code) {
  long status = 0;
  curl_easy_getinfo(handle_.get(), CURLINFO_RESPONSE_CODE, &status);
  std::string transport = error_buffer_[0] != '\0' ? std::string(error_buffer_) : curl_easy_strerror(code);
  switch (code) {
    case CURLE_OK: break;
    case CURLE_WRITE_ERROR:
      if (body_overflow_) {
        return {Error(ErrorCode::kProtocol,
                      "the store sent more than the " + std::to_string(request_->length) + " bytes asked for"),
                false};
      }
      return {Error(ErrorCode::kInternal, transport), false};
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_READ_ERROR:
      return {Status::FromErrno(read_errno_ ? read_errno_ : EIO,
                                config_->Redact(request_->Describe() + ": reading the body to send")),
              false};
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return {Error(ErrorCode::kUnavailable, "unreachable: " + transport), false};
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR: return {Error(ErrorCode::kUnavailable, "unreachable: " + transport), true};
    default: return {Error(ErrorCode::kProtocol, transport), false};
  }
  if (!IsSuccess(request_->kind, status)) return StoreError(status);

  info_.etag = Header("ETag").value_or("");
  info_.version_id = Header("x-amz-version-id").value_or("");
  switch (request_->kind) {
    case ObjectRequest::Kind::kHead: {
      curl_off_t length = -1;
      curl_easy_getinfo(handle_.get(), CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
      if (length < 0) return {Error(ErrorCode::kProtocol, "HEAD answered without a Content-Length"), false};
      info_.size = static_cast<uint64_t>(length);
      break;
    }
    case ObjectRequest::Kind::kGetRange: {
      uint64_t start = 0, end = 0;
      std::string range = Header("Content-Range").value_or("");
      if (!ParseContentRange(range, &start, &end) || start != request_->offset ||
          end + 1 != request_->offset + request_->length || body_received_ != request_->length) {
        // S3 shortens a range that runs past the end of the object.
        return {Error(ErrorCode::kProtocol, "answered " + std::to_string(body_received_) + " bytes, Content-Range \"" +
                                                Printable(range) + "\": the object ends before the range does"),
                false};
      }
      info_.size = body_received_;
      break;
    }
    case ObjectRequest::Kind::kPut: info_.size = body_sent_; break;
    default: break;
  }
  return {Status::Ok(), false};
}

}  // namespace uffdpager
