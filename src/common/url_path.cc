#include "common/url_path.h"

namespace uffdpager {

namespace {

bool IsUnreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string PercentEncode(std::string_view bytes, std::string_view keep) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(bytes.size());
  for (unsigned char c : bytes) {
    if (IsUnreserved(c) || keep.find(static_cast<char>(c)) != std::string_view::npos) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

Result<std::string> EscapePathSegment(std::string_view segment) {
  if (segment.empty() || segment == "." || segment == "..") {
    return Status::InvalidArgument("\"" + std::string(segment) + "\" cannot be one segment of a URL path");
  }
  return PercentEncode(segment);
}

Result<std::vector<std::string>> DecodePathSegments(std::string_view path) {
  std::vector<std::string> segments;
  size_t i = 0;
  while (i <= path.size()) {
    size_t end = path.find('/', i);
    if (end == std::string_view::npos) end = path.size();
    std::string decoded;
    for (size_t k = i; k < end; ++k) {
      if (path[k] != '%') {
        decoded += path[k];
        continue;
      }
      int hi = k + 2 < end ? HexValue(path[k + 1]) : -1;
      int lo = k + 2 < end ? HexValue(path[k + 2]) : -1;
      if (hi < 0 || lo < 0) {
        return Status::InvalidArgument("the path " + std::string(path) + " has a '%' not followed by two hex digits");
      }
      decoded += static_cast<char>(hi << 4 | lo);
      k += 2;
    }
    if (!decoded.empty()) segments.push_back(std::move(decoded));
    i = end + 1;
  }
  return segments;
}

}  // namespace uffdpager
