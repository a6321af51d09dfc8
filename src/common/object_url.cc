#include "common/object_url.h"

#include "common/url_path.h"

namespace uffdpager {

namespace {

constexpr std::string_view kScheme = "s3://";
constexpr size_t kMaxKeyBytes = 1024;

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// Bucket names shaped like an IPv4 address are refused by S3.
bool LooksLikeIpv4(std::string_view s) {
  int dots = 0;
  for (char c : s) {
    if (c == '.') {
      ++dots;
    } else if (c < '0' || c > '9') {
      return false;
    }
  }
  return dots == 3;
}

}  // namespace

std::string ObjectUrl::RequestPath() const { return "/" + bucket + "/" + PercentEncode(key, "/"); }

Status ValidateBucketName(std::string_view bucket) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("bucket name \"" + std::string(bucket) + "\" " + why);
  };
  if (bucket.size() < 3 || bucket.size() > 63) return bad("must be 3 to 63 characters long");
  for (char c : bucket) {
    if (!IsLowerAlnum(c) && c != '.' && c != '-') {
      return bad("may hold only lowercase letters, digits, '.' and '-'");
    }
  }
  if (!IsLowerAlnum(bucket.front()) || !IsLowerAlnum(bucket.back())) {
    return bad("must start and end with a lowercase letter or digit");
  }
  if (bucket.find("..") != std::string_view::npos) return bad("must not hold two '.' in a row");
  if (LooksLikeIpv4(bucket)) return bad("must not look like an IP address");
  return Status::Ok();
}

bool IsObjectUrl(std::string_view text) { return text.substr(0, kScheme.size()) == kScheme; }

Result<ObjectUrl> ParseObjectUrl(std::string_view url) {
  if (url.substr(0, kScheme.size()) != kScheme) {
    return Status::InvalidArgument("object URL \"" + std::string(url) + "\" must start with s3://");
  }
  std::string_view rest = url.substr(kScheme.size());
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos || slash + 1 == rest.size()) {
    return Status::InvalidArgument("object URL \"" + std::string(url) + "\" names no key (s3://BUCKET/KEY)");
  }
  ObjectUrl out{std::string(rest.substr(0, slash)), std::string(rest.substr(slash + 1))};
  Status bucket_ok = ValidateBucketName(out.bucket);
  if (!bucket_ok.ok()) return bucket_ok.WithContext("object URL \"" + std::string(url) + "\"");
  if (out.key.size() > kMaxKeyBytes) {
    return Status::InvalidArgument("object URL \"" + std::string(url).substr(0, 80) + "...\": key longer than " +
                                   std::to_string(kMaxKeyBytes) + " bytes");
  }
  for (unsigned char c : out.key) {
    if (c < 0x20 || c == 0x7f) {
      return Status::InvalidArgument("object URL: key of bucket \"" + out.bucket + "\" holds a control character");
    }
  }
  return out;
}

}  // namespace uffdpager
