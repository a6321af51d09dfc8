#include "common/object_store_client.h"

#include <thread>

namespace uffdpager {

namespace {

// Idle handles kept for reuse; more concurrent callers get fresh ones.
constexpr size_t kMaxIdleExchanges = 8;

Status CheckPutSize(const ObjectUrl& object, uint64_t size) {
  if (size <= kMaxSinglePutBytes) return Status::Ok();
  return Status::InvalidArgument("PUT " + object.ToString() + ": " + std::to_string(size) +
                                 " bytes is more than a single PUT takes (5 GiB)");
}

}  // namespace

ObjectStoreClient::ObjectStoreClient(ObjectStoreConfig config) : config_(std::move(config)) {}

ObjectStoreClient::~ObjectStoreClient() = default;

std::unique_ptr<ObjectExchange> ObjectStoreClient::TakeExchange() {
  {
    MutexLock lock(&mu_);
    if (!idle_.empty()) {
      auto e = std::move(idle_.back());
      idle_.pop_back();
      return e;
    }
  }
  return std::make_unique<ObjectExchange>(&config_);
}

void ObjectStoreClient::ReturnExchange(std::unique_ptr<ObjectExchange> exchange) {
  MutexLock lock(&mu_);
  if (idle_.size() < kMaxIdleExchanges) idle_.push_back(std::move(exchange));
}

Result<ObjectInfo> ObjectStoreClient::Execute(const ObjectRequest& request) {
  std::unique_ptr<ObjectExchange> exchange = TakeExchange();
  ExchangeOutcome outcome;
  for (int attempt = 1;; ++attempt) {
    Status prepared = exchange->Prepare(&request);
    if (!prepared.ok()) return prepared;
    attempts_.fetch_add(1, std::memory_order_relaxed);
    outcome = exchange->Finish(curl_easy_perform(exchange->handle()));
    if (outcome.status.ok() || !outcome.retriable || attempt >= config_.retry.max_attempts) break;
    retries_.fetch_add(1, std::memory_order_relaxed);
    std::this_thread::sleep_for(config_.retry.JitteredBackoffAfter(attempt));
  }
  if (!outcome.status.ok()) {
    ReturnExchange(std::move(exchange));
    return FinalStatus(outcome, config_.retry.max_attempts);
  }
  ObjectInfo info = exchange->info();
  ReturnExchange(std::move(exchange));
  return info;
}

Result<ObjectInfo> ObjectStoreClient::Head(const ObjectUrl& object) {
  ObjectRequest request{.kind = ObjectRequest::Kind::kHead, .object = object};
  Result<ObjectInfo> info = Execute(request);
  if (info.ok() || info.status().code() != ErrorCode::kNotFound) return info;
  // Which one is missing? Another HEAD, of the bucket, tells.
  ObjectRequest bucket{.kind = ObjectRequest::Kind::kHead, .object = {object.bucket, ""}};
  std::unique_ptr<ObjectExchange> exchange = TakeExchange();
  Status ok = exchange->Prepare(&bucket);
  if (!ok.ok()) return info;
  ExchangeOutcome outcome = exchange->Finish(curl_easy_perform(exchange->handle()));
  ReturnExchange(std::move(exchange));
  std::string where = "HEAD " + object.ToString() + " at " + config_.endpoint + ": ";
  if (outcome.status.ok()) {
    return Status::NotFound(config_.Redact(where + "no object \"" + object.key + "\" in bucket \"" + object.bucket +
                                           "\" (HTTP 404 NoSuchKey)"));
  }
  if (outcome.status.code() == ErrorCode::kNotFound) {
    return Status::NotFound(config_.Redact(where + "no bucket \"" + object.bucket + "\" (HTTP 404 NoSuchBucket)"));
  }
  return info;
}

Status ObjectStoreClient::GetRange(const ObjectUrl& object, uint64_t offset, size_t length,
                                   std::string_view if_match_etag, std::byte* buffer) {
  ObjectRequest request{.kind = ObjectRequest::Kind::kGetRange,
                        .object = object,
                        .offset = offset,
                        .length = length,
                        .if_match = std::string(if_match_etag),
                        .buffer = buffer};
  return Execute(request).status();
}

Result<ObjectInfo> ObjectStoreClient::Put(const ObjectUrl& object, std::string_view bytes) {
  UFFD_RETURN_IF_ERROR(CheckPutSize(object, bytes.size()));
  ObjectRequest request{.kind = ObjectRequest::Kind::kPut, .object = object, .body = bytes};
  return Execute(request);
}

Result<ObjectInfo> ObjectStoreClient::Put(const ObjectUrl& object, int fd, uint64_t size) {
  UFFD_RETURN_IF_ERROR(CheckPutSize(object, size));
  ObjectRequest request{.kind = ObjectRequest::Kind::kPut, .object = object, .body_fd = fd, .body_size = size};
  return Execute(request);
}

Status ObjectStoreClient::Delete(const ObjectUrl& object) {
  ObjectRequest request{.kind = ObjectRequest::Kind::kDelete, .object = object};
  return Execute(request).status();
}

Status ObjectStoreClient::CreateBucket(std::string_view bucket) {
  UFFD_RETURN_IF_ERROR(ValidateBucketName(bucket));
  ObjectRequest request{.kind = ObjectRequest::Kind::kCreateBucket, .object = {std::string(bucket), ""}};
  Result<ObjectInfo> done = Execute(request);
  if (!done.ok() && done.status().code() == ErrorCode::kAlreadyExists &&
      done.status().message().find("BucketAlreadyOwnedByYou") != std::string::npos) {
    return Status::Ok();
  }
  return done.status();
}

}  // namespace uffdpager
