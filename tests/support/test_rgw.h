// TestRgw: the Ceph RGW the ctest fixture started for this run
// (tests/support/rgw_fixture.sh): its environment (AWS_ENDPOINT_URL, the test
// user's keys), or why there is none.
#pragma once

#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "common/object_store_client.h"
#include "common/object_store_config.h"
#include "uffdpager/status.h"

namespace uffdpager::testing {

struct TestRgw {
  std::map<std::string, std::string> env;  // from the fixture's `export K=V` lines
  std::string skip_reason;                 // non-empty: no RGW, the test skips saying this

  // Reads the fixture's directory.
  static TestRgw Load(const std::string& dir) {
    TestRgw rgw;
    std::ifstream skip(dir + "/skip-reason");
    if (skip) {
      std::getline(skip, rgw.skip_reason);
      return rgw;
    }
    std::ifstream in(dir + "/env");
    if (!in) {
      rgw.skip_reason =
          "no RGW environment in " + dir + "/env: run through ctest, whose fixture object_store_rgw_setup starts it";
      return rgw;
    }
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("export ", 0) != 0) continue;
      size_t eq = line.find('=');
      if (eq == std::string::npos) continue;
      rgw.env[line.substr(7, eq - 7)] = line.substr(eq + 1);
    }
    return rgw;
  }

  // The port of the fixture's endpoint (http://127.0.0.1:PORT), for a relay
  // in front of it.
  uint16_t Port() const {
    auto it = env.find("AWS_ENDPOINT_URL");
    if (it == env.end()) return 0;
    return static_cast<uint16_t>(std::stoi(it->second.substr(it->second.rfind(':') + 1)));
  }

  // For LoadObjectStoreConfig: the fixture's variables, nothing from the
  // test process's own environment.
  const char* Lookup(const char* name) const {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  }
};

// A bucket name of the running test's own (valid by S3's rules): tests run
// in parallel processes against one RGW, each in its bucket.
inline std::string BucketForCurrentTest() {
  std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  std::string bucket = "t-" + std::to_string(::getpid()) + "-";
  for (char c : name) bucket += std::isalnum(static_cast<unsigned char>(c)) ? std::tolower(c) : '-';
  bucket = bucket.substr(0, 60);
  while (!bucket.empty() && !std::isalnum(static_cast<unsigned char>(bucket.back()))) bucket.pop_back();
  return bucket;
}

// A client of the fixture's store and a bucket of the running test's own,
// created: where every object store test starts. REQUIRES: rgw has no
// skip_reason.
struct TestBucket {
  std::unique_ptr<ObjectStoreClient> store;
  std::string name;
};
inline Result<TestBucket> CreateTestBucket(const TestRgw& rgw) {
  auto config = LoadObjectStoreConfig({}, [&rgw](const char* name) { return rgw.Lookup(name); });
  if (!config.ok()) return config.status();
  TestBucket bucket{std::make_unique<ObjectStoreClient>(*config), BucketForCurrentTest()};
  UFFD_RETURN_IF_ERROR(bucket.store->CreateBucket(bucket.name));
  return bucket;
}

}  // namespace uffdpager::testing
