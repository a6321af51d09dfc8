#include "support/test_snapshot.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "common/durable_file.h"

namespace uffdpager::testing {

namespace {
uint64_t SplitMix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}
}  // namespace

bool WriteTestSnapshot(const std::string& path, uint64_t size, uint64_t seed, uint64_t zero_every) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::vector<uint64_t> page(512);
  for (uint64_t off = 0; off < size; off += 4096) {
    uint64_t index = off / 4096;
    bool zero = zero_every != 0 && index % zero_every == zero_every - 1;
    for (size_t w = 0; w < page.size(); ++w) page[w] = zero ? 0 : SplitMix(seed * 0x100000001B3ULL ^ (index << 9 | w));
    out.write(reinterpret_cast<const char*>(page.data()),
              static_cast<std::streamsize>(std::min<uint64_t>(4096, size - off)));
  }
  return static_cast<bool>(out);
}

std::vector<uint8_t> ReadFileBytes(const std::string& path) {
  auto bytes = ReadWholeFileBytes(path);
  return bytes.ok() ? std::move(*bytes) : std::vector<uint8_t>{};
}

::testing::AssertionResult MatchesSnapshotFile(const GuestMemory& memory, const std::string& path,
                                               const std::vector<std::pair<uint64_t, uint64_t>>& zero_ranges) {
  std::vector<uint8_t> file = ReadFileBytes(path);
  static const std::vector<uint8_t> zeros(4096, 0);
  uint64_t file_offset = 0;
  for (size_t r = 0; r < memory.region_count(); ++r) {
    const uint8_t* data = memory.region_data(r);
    for (uint64_t off = 0; off < memory.region_size(r); off += 4096, file_offset += 4096) {
      bool zero = false;
      for (const auto& [s, e] : zero_ranges) zero |= file_offset >= s && file_offset < e;
      const uint8_t* expected =
          zero ? zeros.data() : (file_offset + 4096 <= file.size() ? &file[file_offset] : nullptr);
      if (expected == nullptr) {
        return ::testing::AssertionFailure() << "memory file " << path << " is shorter than guest memory";
      }
      if (std::memcmp(data + off, expected, 4096) != 0) {
        size_t i = 0;
        while (data[off + i] == expected[i]) ++i;
        return ::testing::AssertionFailure()
               << fmt::format("guest byte at file offset {:#x} (region {}, page {}) is {:#04x}, expected {:#04x}{}",
                              file_offset + i, r, off / 4096, data[off + i], expected[i],
                              zero ? " (removed range must read as zeros)" : " (snapshot content)");
      }
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace uffdpager::testing
