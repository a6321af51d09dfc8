// ObjectUrl: an object in S3-compatible storage named as `s3://BUCKET/KEY`.
//
// The one parser of such names: every tool and the pager take an object's
// location in this form and nothing else, and every error names what is
// wrong with it. Bucket names follow S3's rules for new buckets (3 to 63
// characters, lowercase letters, digits, '.' and '-', starting and ending
// with a letter or digit); keys are 1 to 1024 bytes without control
// characters (S3 allows them; we refuse them so a key is always printable in
// a log line).
#pragma once

#include <string>
#include <string_view>

#include "uffdpager/status.h"

namespace uffdpager {

struct ObjectUrl {
  std::string bucket;
  std::string key;

  // "s3://bucket/key".
  std::string ToString() const { return "s3://" + bucket + "/" + key; }
  // The path of a path-style request ("/bucket/key"), the key
  // percent-encoded except its '/' (the canonical URI SigV4 signs).
  std::string RequestPath() const;

  bool operator==(const ObjectUrl&) const = default;
};

// True if `text` is meant as an object URL (it starts with "s3://");
// ParseObjectUrl says whether it is a valid one. Where a field takes a path
// or a URL, this tells which.
bool IsObjectUrl(std::string_view text);

// Parses "s3://BUCKET/KEY". kInvalidArgument, naming the part at fault, for
// another scheme, a bad bucket name, or a missing or bad key.
Result<ObjectUrl> ParseObjectUrl(std::string_view url);

// OK if `bucket` is a valid bucket name (the rules above), else
// kInvalidArgument saying which rule it breaks.
Status ValidateBucketName(std::string_view bucket);

}  // namespace uffdpager
