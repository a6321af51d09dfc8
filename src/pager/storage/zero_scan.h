// Whether a page of memory is all zeros: how the pager finds zero pages in
// data it has read (holes it knows without reading).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace uffdpager {

// Word-wise scan; a page of data usually differs in its first word, so only
// zero pages cost a full pass.
inline bool IsAllZero(const uint8_t* bytes, size_t size) {
  size_t words = size / sizeof(uint64_t);
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, bytes + i * sizeof(uint64_t), sizeof(w));
    if (w != 0) return false;
  }
  for (size_t i = words * sizeof(uint64_t); i < size; ++i) {
    if (bytes[i] != 0) return false;
  }
  return true;
}

}  // namespace uffdpager
