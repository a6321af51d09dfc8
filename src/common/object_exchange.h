// ObjectExchange: one HTTP exchange with an S3-compatible store on a curl
// easy handle, and what its outcome means. The synchronous client and the
// asynchronous range fetcher both drive requests through this class, so a
// request is built, signed and classified in one place.
//
// Requests are path-style (`ENDPOINT/BUCKET/KEY`), signed by libcurl's SigV4
// (`CURLOPT_AWS_SIGV4`, "aws:amz:REGION:s3") with `x-amz-content-sha256:
// UNSIGNED-PAYLOAD` (RGW 16 refuses the signature without that header) and
// `x-amz-security-token` when the credentials carry a session token.
//
// Outcomes as Status codes (the store's <Code> and <Message> in the message):
//
//   kNotFound          404: NoSuchBucket, NoSuchKey (the bucket or key named)
//   kPermissionDenied  403: AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch
//   kUnavailable       the store cannot be reached: refused, DNS, timeout, connection broken
//   kConflict          412: the object changed (If-Match no longer holds)
//   kIoError           5xx: the store failed
//   kAlreadyExists     409 (a bucket owned by someone else)
//   kInvalidArgument   another 4xx (a bad bucket name, a range past the end)
//   kProtocol          an answer that does not fit the request (a 200 to a
//                      ranged GET, fewer or more bytes than asked for)
//
// Retriable (RetryPolicy): kUnavailable other than DNS, and 5xx. Nothing
// else: a 4xx is the same on every try.
//
// Thread-safety: an ObjectExchange is used by one thread at a time.
#pragma once

#include <curl/curl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/object_store_config.h"
#include "common/object_url.h"
#include "uffdpager/status.h"

namespace uffdpager {

// One request to the store. Buffers and fds are the caller's and must stay
// valid until the exchange is finished.
struct ObjectRequest {
  enum class Kind { kHead, kGetRange, kPut, kDelete, kCreateBucket };
  Kind kind = Kind::kHead;
  ObjectUrl object;  // kCreateBucket: only the bucket
  // kGetRange: bytes [offset, offset + length) into buffer, only if the
  // object's ETag is still if_match (empty: any).
  uint64_t offset = 0;
  size_t length = 0;
  std::string if_match;
  std::byte* buffer = nullptr;
  // kPut: the body, either bytes or `body_size` bytes of `body_fd` from offset 0.
  std::string_view body;
  int body_fd = -1;
  uint64_t body_size = 0;

  // "GET s3://b/k bytes 0-99": for messages.
  std::string Describe() const;
};

// What the store said about the object.
struct ObjectInfo {
  uint64_t size = 0;       // HEAD: the object's size; PUT: bytes sent
  std::string etag;        // exactly as sent, quotes included: what If-Match wants
  std::string version_id;  // empty when the bucket keeps no versions
};

struct ExchangeOutcome {
  Status status;
  bool retriable = false;
};

class ObjectExchange {
 public:
  // `config` must outlive the exchange.
  explicit ObjectExchange(const ObjectStoreConfig* config);
  ~ObjectExchange();
  ObjectExchange(const ObjectExchange&) = delete;
  ObjectExchange& operator=(const ObjectExchange&) = delete;

  // Sets the handle up for one attempt at `request` (which must outlive
  // it). The handle keeps its connection from earlier attempts.
  Status Prepare(const ObjectRequest* request);

  // For curl_easy_perform or a multi handle.
  CURL* handle() const { return handle_.get(); }

  // Classifies the attempt that ended with `code`.
  ExchangeOutcome Finish(CURLcode code);

  // After an OK Finish.
  const ObjectInfo& info() const { return info_; }

 private:
  struct CurlDeleter {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
  };
  struct HeaderListDeleter {
    void operator()(curl_slist* l) const { curl_slist_free_all(l); }
  };

  static size_t OnBody(char* data, size_t size, size_t count, void* self);
  static size_t OnReadBody(char* data, size_t size, size_t count, void* self);
  size_t WriteBody(const char* data, size_t n);
  size_t ReadBody(char* data, size_t n);
  ExchangeOutcome StoreError(long http_status) const;
  Status Error(ErrorCode code, const std::string& detail) const;
  std::optional<std::string> Header(const char* name) const;

  const ObjectStoreConfig* const config_;
  std::unique_ptr<CURL, CurlDeleter> handle_;
  std::unique_ptr<curl_slist, HeaderListDeleter> headers_;
  const ObjectRequest* request_ = nullptr;
  std::string url_;
  std::string userpwd_;
  std::string sigv4_;
  char error_buffer_[CURL_ERROR_SIZE] = {};
  // Per attempt.
  uint64_t body_received_ = 0;
  uint64_t body_sent_ = 0;
  bool body_overflow_ = false;
  int read_errno_ = 0;
  std::string error_body_;
  ObjectInfo info_;
};

// The Status a request ends with after `attempts` attempts, the last of
// which had `outcome`: a retriable failure says how many attempts it took.
Status FinalStatus(const ExchangeOutcome& outcome, int attempts);

// The store's <Code> and <Message> from an S3 error body, each at most 200
// printable characters; empty when absent.
struct StoreErrorText {
  std::string code;
  std::string message;
};
StoreErrorText ParseStoreError(std::string_view body);

}  // namespace uffdpager
