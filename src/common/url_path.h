// URL paths, segment by segment: what a client puts in one segment arrives
// as exactly that segment, whatever bytes it holds ('/', '?', '%', "..").
// The client escapes each segment it builds from data; the server splits the
// path as sent at '/' and only then decodes each segment, so an escaped '/'
// never becomes a separator and nothing is decoded twice.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager {

// `bytes` percent-encoded: every byte outside the unreserved set
// [A-Za-z0-9._~-] and outside `keep` becomes %XX (uppercase hex, as SigV4's
// canonical URI wants it).
std::string PercentEncode(std::string_view bytes, std::string_view keep = {});

// `segment` percent-encoded: every byte outside the unreserved set
// [A-Za-z0-9._~-] becomes %XX. kInvalidArgument for "", "." and "..", which
// no escaping keeps a single segment of their own (HTTP clients and servers
// drop or resolve them).
Result<std::string> EscapePathSegment(std::string_view segment);

// `path` (as sent, without its query) split at '/', empty segments dropped,
// each segment percent-decoded. kInvalidArgument for a '%' not followed by
// two hex digits.
Result<std::vector<std::string>> DecodePathSegments(std::string_view path);

}  // namespace uffdpager
