// The S3 client (src/common/object_*) against a real Ceph RGW, started once
// per ctest run by the fixture object_store_rgw_setup. No mock S3: every
// answer here is the store's own.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/object_range_fetcher.h"
#include "common/object_store_client.h"
#include "common/unique_fd.h"
#include "common/wait_for.h"
#include "support/tcp_relay.h"
#include "support/temp_dir.h"
#include "support/test_rgw.h"

namespace uffdpager {
namespace {

using testing::TcpRelay;
using testing::TestRgw;

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, std::min<size_t>(8, n - i));
  }
  return s;
}

// A port on 127.0.0.1 where nothing listens: bound, never listened on, so
// connecting is refused for as long as the socket lives.
class ClosedPort {
 public:
  ClosedPort() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  uint16_t port() const { return port_; }

 private:
  UniqueFd fd_;
  uint16_t port_ = 0;
};

class ObjectStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rgw_ = TestRgw::Load(UFFDPAGER_TEST_RGW_DIR);
    if (!rgw_.skip_reason.empty()) GTEST_SKIP() << "no Ceph RGW: " << rgw_.skip_reason;
    config_ = Config({});
    client_ = std::make_unique<ObjectStoreClient>(config_);
    // One bucket per test: tests run in parallel processes.
    bucket_ = testing::BucketForCurrentTest();
    ASSERT_TRUE(client_->CreateBucket(bucket_).ok());
  }

  ObjectStoreConfig Config(const ObjectStoreConfigOverrides& overrides) {
    Result<ObjectStoreConfig> c =
        LoadObjectStoreConfig(overrides, [this](const char* name) { return rgw_.Lookup(name); });
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? *c : ObjectStoreConfig{};
  }

  ObjectUrl Object(const std::string& key) const { return ObjectUrl{bucket_, key}; }

  // Every credential of the test user, which no message may hold.
  void ExpectNoSecrets(const Status& s) const {
    EXPECT_EQ(s.ToString().find(config_.credentials.secret_access_key), std::string::npos) << s.ToString();
    EXPECT_EQ(s.ToString().find(config_.credentials.access_key_id), std::string::npos) << s.ToString();
  }

  TestRgw rgw_;
  ObjectStoreConfig config_;
  std::unique_ptr<ObjectStoreClient> client_;
  std::string bucket_;
};

TEST_F(ObjectStoreTest, HeadAndManyRangesInFlightAreByteExact) {
  const size_t kSize = 5 * 1024 * 1024 + 12345;  // not a multiple of any range
  std::string data = RandomBytes(kSize, 1);
  Result<ObjectInfo> put = client_->Put(Object("snap/memory"), data);
  ASSERT_TRUE(put.ok()) << put.status().ToString();

  Result<ObjectInfo> head = client_->Head(Object("snap/memory"));
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->size, kSize);
  EXPECT_FALSE(head->etag.empty());
  EXPECT_EQ(head->etag, put->etag);

  // The whole object in ranges of mixed sizes, all submitted at once.
  std::string got(kSize, '\0');
  std::vector<RangeRequest> ranges;
  const size_t sizes[] = {65536, 4096, 262144, 1, 100000, 1048576};
  for (size_t off = 0, i = 0; off < kSize; ++i) {
    size_t len = std::min(sizes[i % std::size(sizes)], kSize - off);
    ranges.push_back({Object("snap/memory"), off, len, head->etag, reinterpret_cast<std::byte*>(&got[off])});
    off += len;
  }
  auto fetcher = ObjectRangeFetcher::Start(config_, {.max_in_flight = 8});
  ASSERT_TRUE(fetcher.ok());
  std::vector<Status> results = (*fetcher)->FetchAll(ranges);
  for (size_t i = 0; i < results.size(); ++i) ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].ToString();
  ASSERT_TRUE(got == data) << "fetched bytes differ from the object's";
  // Retries only on failures; on a healthy store each range took one attempt.
  EXPECT_EQ((*fetcher)->counters().attempts, ranges.size());
  EXPECT_EQ((*fetcher)->counters().bytes, kSize);

  // The synchronous GetRange reads the same bytes, the last one included.
  std::string tail(777, '\0');
  ASSERT_TRUE(
      client_->GetRange(Object("snap/memory"), kSize - 777, 777, head->etag, reinterpret_cast<std::byte*>(tail.data()))
          .ok());
  EXPECT_EQ(tail, data.substr(kSize - 777));
}

TEST_F(ObjectStoreTest, PutFromFileAndKeysThatNeedEscaping) {
  testing::TempDir dir;
  std::string data = RandomBytes(300000, 2);
  std::string path = dir / "memory";
  {
    UniqueFd fd(::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    ASSERT_EQ(::write(fd.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  // A key with spaces, '+', '%', unicode and nested '/' must sign and round-trip.
  ObjectUrl object = Object("dir/sub dir/a+b%20c=d&é~.bin");
  Result<ObjectInfo> put = client_->Put(object, fd.get(), data.size());
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->size, data.size());
  Result<ObjectInfo> head = client_->Head(object);
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->size, data.size());
  std::string got(1000, '\0');
  ASSERT_TRUE(client_->GetRange(object, 5000, 1000, "", reinterpret_cast<std::byte*>(got.data())).ok());
  EXPECT_EQ(got, data.substr(5000, 1000));
  ASSERT_TRUE(client_->Delete(object).ok());
  EXPECT_EQ(client_->Head(object).status().code(), ErrorCode::kNotFound);
}

TEST_F(ObjectStoreTest, RangePastTheEndIsRefused) {
  ASSERT_TRUE(client_->Put(Object("small"), std::string(100, 'x')).ok());
  std::string buf(200, '\0');
  auto* out = reinterpret_cast<std::byte*>(buf.data());
  // Starts inside, ends outside: S3 would shorten it; the client refuses.
  Status shortened = client_->GetRange(Object("small"), 50, 100, "", out);
  EXPECT_EQ(shortened.code(), ErrorCode::kProtocol) << shortened.ToString();
  // Starts outside: the store's InvalidRange.
  Status outside = client_->GetRange(Object("small"), 150, 10, "", out);
  EXPECT_EQ(outside.code(), ErrorCode::kInvalidArgument) << outside.ToString();
  EXPECT_NE(outside.message().find("InvalidRange"), std::string::npos) << outside.ToString();
}

TEST_F(ObjectStoreTest, MissingBucketIsNotFoundNamingIt) {
  ObjectUrl object{"no-such-bucket-" + std::to_string(::getpid()), "k"};
  Result<ObjectInfo> head = client_->Head(object);
  ASSERT_EQ(head.status().code(), ErrorCode::kNotFound) << head.status().ToString();
  EXPECT_NE(head.status().message().find("no bucket \"" + object.bucket + "\""), std::string::npos)
      << head.status().ToString();
  std::string buf(10, '\0');
  Status get = client_->GetRange(object, 0, 10, "", reinterpret_cast<std::byte*>(buf.data()));
  ASSERT_EQ(get.code(), ErrorCode::kNotFound) << get.ToString();
  EXPECT_NE(get.message().find("NoSuchBucket"), std::string::npos) << get.ToString();
  EXPECT_NE(get.message().find(object.bucket), std::string::npos) << get.ToString();
  ExpectNoSecrets(head.status());
  ExpectNoSecrets(get);
}

TEST_F(ObjectStoreTest, MissingKeyIsNotFoundNamingIt) {
  Result<ObjectInfo> head = client_->Head(Object("absent/key"));
  ASSERT_EQ(head.status().code(), ErrorCode::kNotFound) << head.status().ToString();
  EXPECT_NE(head.status().message().find("no object \"absent/key\" in bucket \"" + bucket_ + "\""), std::string::npos)
      << head.status().ToString();
  std::string buf(10, '\0');
  Status get = client_->GetRange(Object("absent/key"), 0, 10, "", reinterpret_cast<std::byte*>(buf.data()));
  ASSERT_EQ(get.code(), ErrorCode::kNotFound) << get.ToString();
  EXPECT_NE(get.message().find("NoSuchKey"), std::string::npos) << get.ToString();
  EXPECT_NE(get.message().find("absent/key"), std::string::npos) << get.ToString();
  // Not-found is final: no retry.
  EXPECT_EQ(client_->retries(), 0u);
}

TEST_F(ObjectStoreTest, WrongSecretOrKeyIsAccessDeniedWithTheStoresCode) {
  ASSERT_TRUE(client_->Put(Object("k"), "data").ok());
  ObjectStoreCredentials wrong_secret = config_.credentials;
  wrong_secret.secret_access_key = "not-the-secret-0123456789";
  ObjectStoreCredentials wrong_key = config_.credentials;
  wrong_key.access_key_id = "NOSUCHACCESSKEY00000";
  struct Case {
    ObjectStoreCredentials credentials;
    const char* store_code;
  } cases[] = {{wrong_secret, "SignatureDoesNotMatch"}, {wrong_key, "InvalidAccessKeyId"}};
  for (const Case& c : cases) {
    ObjectStoreClient client(Config({.credentials = c.credentials}));
    std::string buf(4, '\0');
    Status get = client.GetRange(Object("k"), 0, 4, "", reinterpret_cast<std::byte*>(buf.data()));
    EXPECT_EQ(get.code(), ErrorCode::kPermissionDenied) << get.ToString();
    EXPECT_NE(get.message().find(c.store_code), std::string::npos) << get.ToString();
    Result<ObjectInfo> put = client.Put(Object("k2"), "data");
    EXPECT_EQ(put.status().code(), ErrorCode::kPermissionDenied) << put.status().ToString();
    EXPECT_EQ(client.retries(), 0u) << "a 403 is never retried";
    // Neither the wrong nor the right credentials show.
    for (const Status& s : {get, put.status()}) {
      ExpectNoSecrets(s);
      EXPECT_EQ(s.ToString().find(c.credentials.secret_access_key), std::string::npos) << s.ToString();
      EXPECT_EQ(s.ToString().find(c.credentials.access_key_id), std::string::npos) << s.ToString();
    }
  }
}

TEST_F(ObjectStoreTest, ClosedPortIsUnreachableAfterTheRetryBudget) {
  ClosedPort closed;
  ObjectStoreConfig config = Config({.endpoint = "http://127.0.0.1:" + std::to_string(closed.port())});
  config.retry = {.max_attempts = 3, .initial_backoff = std::chrono::milliseconds(20)};
  ObjectStoreClient client(config);
  auto start = std::chrono::steady_clock::now();
  Result<ObjectInfo> head = client.Head(Object("k"));
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(head.status().code(), ErrorCode::kUnavailable) << head.status().ToString();
  EXPECT_NE(head.status().message().find("gave up after 3 attempts"), std::string::npos) << head.status().ToString();
  EXPECT_EQ(client.attempts(), 3u);
  // Backoff of 10-20 ms then 20-40 ms: the budget, not a timeout, ends it.
  EXPECT_LT(took, std::chrono::seconds(5));
  ExpectNoSecrets(head.status());

  auto fetcher = ObjectRangeFetcher::Start(config, {.max_in_flight = 2});
  ASSERT_TRUE(fetcher.ok());
  std::string buf(8, '\0');
  std::vector<RangeRequest> ranges(3, RangeRequest{Object("k"), 0, 8, "", reinterpret_cast<std::byte*>(buf.data())});
  for (const Status& s : (*fetcher)->FetchAll(ranges)) {
    EXPECT_EQ(s.code(), ErrorCode::kUnavailable) << s.ToString();
    ExpectNoSecrets(s);
  }
  EXPECT_EQ((*fetcher)->counters().attempts, 9u);
}

TEST_F(ObjectStoreTest, OverwrittenObjectIsObjectChanged) {
  ASSERT_TRUE(client_->Put(Object("mem"), RandomBytes(65536, 3)).ok());
  Result<ObjectInfo> before = client_->Head(Object("mem"));
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(client_->Put(Object("mem"), RandomBytes(65536, 4)).ok());
  Result<ObjectInfo> after = client_->Head(Object("mem"));
  ASSERT_TRUE(after.ok());
  ASSERT_NE(before->etag, after->etag);

  std::string buf(4096, '\0');
  auto* out = reinterpret_cast<std::byte*>(buf.data());
  Status stale = client_->GetRange(Object("mem"), 0, 4096, before->etag, out);
  EXPECT_EQ(stale.code(), ErrorCode::kConflict) << stale.ToString();
  EXPECT_NE(stale.message().find("object changed"), std::string::npos) << stale.ToString();
  EXPECT_NE(stale.message().find("PreconditionFailed"), std::string::npos) << stale.ToString();
  EXPECT_EQ(client_->retries(), 0u);
  EXPECT_TRUE(client_->GetRange(Object("mem"), 0, 4096, after->etag, out).ok());

  auto fetcher = ObjectRangeFetcher::Start(config_, {});
  ASSERT_TRUE(fetcher.ok());
  std::vector<Status> r = (*fetcher)->FetchAll(std::vector<RangeRequest>{{Object("mem"), 0, 4096, before->etag, out}});
  EXPECT_EQ(r[0].code(), ErrorCode::kConflict) << r[0].ToString();
}

// The store goes away while ranges are in flight (a relay in front of the
// shared RGW is cut: connections reset, then refused): every request is
// retried within the budget and then reported unreachable.
TEST_F(ObjectStoreTest, StoreGoneMidFetchRetriesThenUnreachable) {
  const size_t kSize = 4 * 1024 * 1024;
  ASSERT_TRUE(client_->Put(Object("mem"), RandomBytes(kSize, 5)).ok());
  Result<ObjectInfo> head = client_->Head(Object("mem"));
  ASSERT_TRUE(head.ok());
  const uint16_t rgw_port = rgw_.Port();
  // 30 ms a segment: the ranges are still in flight when the relay is cut.
  auto relay = TcpRelay::Start(rgw_port, std::chrono::milliseconds(30));
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  ObjectStoreConfig config = Config({.endpoint = (*relay)->endpoint()});
  config.retry = {.max_attempts = 3, .initial_backoff = std::chrono::milliseconds(20)};
  auto fetcher = ObjectRangeFetcher::Start(config, {.max_in_flight = 4});
  ASSERT_TRUE(fetcher.ok());

  std::string got(kSize, '\0');
  Mutex mu;
  CondVar cv(&mu);
  std::vector<Status> results;
  const size_t kRange = 256 * 1024;
  for (size_t off = 0; off < kSize; off += kRange) {
    (*fetcher)->Submit({Object("mem"), off, kRange, head->etag, reinterpret_cast<std::byte*>(&got[off])},
                       [&](const Status& s) {
                         MutexLock lock(&mu);
                         results.push_back(s);
                         cv.SignalAll();
                       });
  }
  ASSERT_TRUE(WaitFor([&] { return (*relay)->connections_accepted() > 0; }));
  auto cut_at = std::chrono::steady_clock::now();
  (*relay)->Cut();
  {
    MutexLock lock(&mu);
    while (results.size() < kSize / kRange) cv.Wait();
  }
  auto took = std::chrono::steady_clock::now() - cut_at;
  size_t unreachable = 0;
  for (const Status& s : results) {
    if (s.ok()) continue;  // finished before the cut
    EXPECT_EQ(s.code(), ErrorCode::kUnavailable) << s.ToString();
    EXPECT_NE(s.message().find("gave up after 3 attempts"), std::string::npos) << s.ToString();
    ExpectNoSecrets(s);
    ++unreachable;
  }
  EXPECT_GT(unreachable, 0u);
  EXPECT_GE((*fetcher)->counters().retries, 2 * unreachable);
  // The budget: three quick attempts and two pauses of at most 20 + 40 ms each,
  // nowhere near the 30 s request timeout.
  EXPECT_LT(took, std::chrono::seconds(10));
}

TEST_F(ObjectStoreTest, StoppingTheFetcherAnswersEveryRequest) {
  ASSERT_TRUE(client_->Put(Object("mem"), RandomBytes(1 << 20, 6)).ok());
  const uint16_t rgw_port = rgw_.Port();
  auto relay = TcpRelay::Start(rgw_port, std::chrono::milliseconds(50));
  ASSERT_TRUE(relay.ok());
  auto fetcher = ObjectRangeFetcher::Start(Config({.endpoint = (*relay)->endpoint()}), {.max_in_flight = 2});
  ASSERT_TRUE(fetcher.ok());
  std::string got(1 << 20, '\0');
  std::atomic<int> answered{0};
  for (size_t off = 0; off < got.size(); off += 65536) {
    (*fetcher)->Submit({Object("mem"), off, 65536, "", reinterpret_cast<std::byte*>(&got[off])},
                       [&](const Status&) { answered.fetch_add(1); });
  }
  fetcher->reset();  // stops with most requests queued or on the wire
  EXPECT_EQ(answered.load(), 16);
}

}  // namespace
}  // namespace uffdpager
