// Attacks from outside on both doors of a real pager that the other suites
// (bad input, create, security, session life, control transport) do not
// make: ids and numbers that wrap, duplicate keys, dot segments and double
// escapes in a raw path, JSON nested as deep as a request may be, and
// handshakes whose regions overlap, are empty, wrap around the address
// space or are written as numbers no region can have. Each is refused with
// a clear answer, leaves no file, socket or userfaultfd behind, and a good
// client keeps being served byte-exact throughout.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <tuple>

#include "common/http_client.h"
#include "common/unix_socket.h"
#include "support/pager_fixture.h"
#include "support/raw_handshake.h"
#include "support/raw_http_request.h"

namespace uffdpager::testing::adversarial_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {8 * kMiB, 4 * kMiB};

class PagerAdversarialTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    StartPager();
    snap_ = MakeSnapshot("mem", 12 * kMiB, 91);
    auto vm = VmmStandIn::Restore(CreateSession("good", snap_), kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    good_ = std::move(*vm);
    ASSERT_TRUE(WaitFor([&] { return SessionState("good") == "serving"; }));
    file_ = ReadFileBytes(snap_);
  }

  HttpResponse Post(const std::string& path, const std::string& body) {
    auto r = HttpClient(ControlSocket()).Send("POST", path, body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : HttpResponse{};
  }

  // One request written by hand (no client library to normalize the path);
  // the answer's status.
  int RawRequest(const std::string& method, const std::string& path) {
    return RawHttpRequest(ControlSocket(), method, path).first;
  }

  // A create body for `snap_` with `extra` (JSON members) after the
  // required fields.
  std::string CreateBody(const std::string& extra) {
    return R"({"instance_id":"adv","backing_memory_path":")" + snap_ + "\"" + (extra.empty() ? "" : "," + extra) + "}";
  }

  // The files in the pager's directory outside sessions/, live/ and the
  // fixed ones: what a create that escaped its directory would leave.
  std::vector<std::string> StrayFiles() {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir_.path())) {
      std::string p = e.path().string();
      if (p.find("/sessions/") != std::string::npos || p.find("/live/") != std::string::npos) continue;
      std::string name = e.path().filename().string();
      if (e.is_directory() || name == "control.sock" || name == "handover.sock" || name == "pager.pid" ||
          name == "mem" || name.ends_with(".log")) {
        continue;
      }
      out.push_back(p);
    }
    return out;
  }

  // A fresh session, sent `payload` with a userfaultfd: the session's
  // description once the pager has judged it.
  nlohmann::json Handshake(const std::string& id, const std::string& payload) {
    SpareUffd spare = SpareUffd::Make();
    return SendRawHandshake(*pager_, id, CreateSession(id, snap_), payload, {spare.uffd.fd()});
  }

  // One region as Firecracker writes it, with any field as raw JSON text.
  static std::string Region(const std::string& addr, const std::string& size, const std::string& offset) {
    return R"({"base_host_virt_addr":)" + addr + R"(,"size":)" + size + R"(,"offset":)" + offset +
           R"(,"page_size":4096})";
  }

  // An address of the spare memory's, as JSON text.
  static std::string Addr(const SpareUffd& spare, uint64_t plus = 0) {
    return std::to_string(spare.memory.Mappings()[0].base_host_virt_addr + plus);
  }

  void ExpectFailedWith(const nlohmann::json& session, const std::string& words) {
    EXPECT_EQ(session.value("state", ""), "failed") << session.dump();
    EXPECT_NE(session.value("reason", "").find(words), std::string::npos) << session.dump();
    // The refused userfaultfd is closed: only the good client's is held.
    EXPECT_TRUE(WaitFor([&] { return pager_->CountUserfaultfds() == 1; })) << "a refused userfaultfd leaked";
  }

  // Faults in the next 64 pages of the good client and checks them.
  void ExpectGoodClientStillServed() {
    for (int i = 0; i < 64; ++i, ++next_page_) {
      uint64_t off = (next_page_ * 97 * 4096) % (12 * kMiB);
      ASSERT_EQ(0, std::memcmp(good_->memory.AtFileOffset(off), &file_[off], 4096)) << "page at " << off;
    }
    EXPECT_EQ(SessionState("good"), "serving");
    auto health = pager_->client().Health();
    ASSERT_TRUE(health.ok()) << health.status().ToString();
    EXPECT_FALSE(health->draining);
  }

  std::string snap_;
  std::vector<uint8_t> file_;
  std::unique_ptr<VmmStandIn> good_;
  uint64_t next_page_ = 0;
};

// Owner and peer ids are 32-bit in the kernel: a value that a cast to
// uint32_t would wrap to 0 (root) or to -1 ("no change" to chown), or that
// does not fit 64 bits, is refused naming the field, never truncated.
TEST_F(PagerAdversarialTest, IdsThatWouldWrapOrOverflowAreRefusedNeverTruncated) {
  const std::vector<std::string> huge = {"4294967296",            // 2^32: 0 after a cast
                                         "4294967297",            // 1 after a cast
                                         "8589934591",            // 2^33 - 1: -1 after a cast
                                         "18446744073709551615",  // 2^64 - 1
                                         "18446744073709551616",  // 2^64: a double to the parser
                                         "-9223372036854775808",  // INT64_MIN
                                         "1e300",
                                         "-0.0"};
  for (std::string field : {"socket_uid", "socket_gid", "expected_uid", "expected_pid"}) {
    for (const auto& value : huge) {
      auto r = Post("/sessions", CreateBody("\"" + field + "\":" + value));
      EXPECT_EQ(r.status, 400) << field << "=" << value << ": " << r.body;
      EXPECT_NE(r.body.find(field), std::string::npos) << field << "=" << value << ": " << r.body;
    }
  }
  // The pid a cast to int32 would make 0 or negative.
  for (std::string value : {"2147483648", "4294967295"}) {
    auto r = Post("/sessions", CreateBody("\"expected_pid\":" + value));
    EXPECT_EQ(r.status, 400) << value << ": " << r.body;
  }
  // A bool field given as a number or a string.
  for (std::string value : {"1", "\"true\"", "0.0"}) {
    auto r = Post("/sessions", CreateBody("\"kill_client_on_failure\":" + value));
    EXPECT_EQ(r.status, 400) << value << ": " << r.body;
    EXPECT_NE(r.body.find("kill_client_on_failure"), std::string::npos) << r.body;
  }
  // A number too large for a double is no number at all.
  auto r = Post("/sessions", CreateBody("\"socket_uid\":1e400"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(pager_->client().ListSessions()->size(), 1u) << "a refused create left a session";
  EXPECT_TRUE(StrayFiles().empty());
  ExpectGoodClientStillServed();
}

// A key given twice is judged by the value the pager then uses: the session
// it creates (if any) is the valid id's, and the other id never names a
// socket, whichever of the two the JSON parser keeps.
TEST_F(PagerAdversarialTest, DuplicateKeysAreJudgedByTheValueThatIsUsed) {
  const std::string valid = "\"session_id\":\"dup-ok\"", hostile = "\"session_id\":\"../../escaped\"";
  for (const auto& [first, second] : {std::pair{valid, hostile}, std::pair{hostile, valid}}) {
    auto r = Post("/sessions", CreateBody(first + "," + second));
    if (r.status == 200) {
      auto body = nlohmann::json::parse(r.body, nullptr, false);
      ASSERT_TRUE(body.is_object()) << r.body;
      EXPECT_EQ(body.value("session_id", ""), "dup-ok") << r.body;
      EXPECT_EQ(std::filesystem::path(body.value("uffd_socket_path", "")).parent_path(),
                std::filesystem::path(pager_->root_dir()) / "sessions")
          << r.body;
      ASSERT_TRUE(pager_->client().CloseSession("dup-ok").ok());
    } else {
      EXPECT_EQ(r.status, 400) << r.body;
    }
    EXPECT_TRUE(StrayFiles().empty()) << first << "," << second;
    EXPECT_EQ(pager_->client().ListSessions()->size(), 1u);
  }
  // The same for the backing file: a FIFO is refused at once, never opened
  // for the good file's sake (or the other way round).
  std::string fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto r = Post("/sessions", CreateBody(R"("session_id":"dup-path","backing_memory_path":")" + fifo + "\""));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("FIFO"), std::string::npos) << r.body;
  EXPECT_FALSE(pager_->client().GetSession("dup-path").ok());
  ExpectGoodClientStillServed();
}

// A raw path with dot segments or escapes of escapes is never resolved into
// another endpoint: "/sessions/x/../../drain" is no way to /drain, and an id
// escaped twice is decoded once.
TEST_F(PagerAdversarialTest, DotSegmentsAndDoubleEscapesInARawPathReachNoOtherEndpoint) {
  EXPECT_EQ(RawRequest("POST", "/sessions/good/../../drain"), 404);
  EXPECT_EQ(RawRequest("POST", "/sessions/../drain"), 404);
  EXPECT_EQ(RawRequest("POST", "/sessions/./good/close/.."), 404);
  EXPECT_EQ(RawRequest("POST", "/sessions/%252E%252E%252Fdrain/close"), 404);
  EXPECT_EQ(RawRequest("POST", "/sessions/good%252Fclose"), 405);  // one segment: no close
  EXPECT_EQ(RawRequest("GET", "/sessions/%2567ood"), 404);         // "%67ood", not "good"
  EXPECT_EQ(RawRequest("POST", "/./drain"), 404);
  EXPECT_EQ(SessionState("good"), "serving");
  ExpectGoodClientStillServed();
}

// JSON nested as deep as a request body may be: refused as not JSON (cut
// short) or not an object (whole), without the pager's parser or the
// freeing of the parsed tree overflowing its stack.
TEST_F(PagerAdversarialTest, JsonNestedAsDeepAsTheBodyAllowsIsRefused) {
  constexpr size_t kDepth = 400 * 1024;  // two bytes a level: within the 1 MiB limit
  auto r = Post("/sessions", std::string(kDepth, '['));
  EXPECT_EQ(r.status, 400) << r.body.substr(0, 200);
  EXPECT_NE(r.body.find("not valid JSON"), std::string::npos) << r.body.substr(0, 200);
  r = Post("/sessions", std::string(kDepth, '[') + std::string(kDepth, ']'));
  EXPECT_EQ(r.status, 400) << r.body.substr(0, 200);
  r = Post("/sessions", CreateBody("\"cache_key\":" + std::string(kDepth, '[') + std::string(kDepth, ']')));
  EXPECT_EQ(r.status, 400) << r.body.substr(0, 200);
  EXPECT_NE(r.body.find("cache_key"), std::string::npos) << r.body.substr(0, 200);
  // And on the other door, as deep as a handshake message may be.
  constexpr size_t kHandshakeDepth = 30 * 1024;
  ExpectFailedWith(Handshake("deep", std::string(kHandshakeDepth, '[') + std::string(kHandshakeDepth, ']')),
                   "region 0");
  ExpectFailedWith(Handshake("deep-cut", std::string(2 * kHandshakeDepth, '[')), "not valid JSON");
  ExpectGoodClientStillServed();
}

// Two regions over the same guest addresses would let one fault be served
// from two places in the file; two over the same file range would make one
// page of the snapshot two pages of the guest. Both are refused.
TEST_F(PagerAdversarialTest, OverlappingRegionsAreRefused) {
  SpareUffd spare = SpareUffd::Make();
  ExpectFailedWith(Handshake("overlap-addr", "[" + Region(Addr(spare), "8388608", "0") + "," +
                                                 Region(Addr(spare, 4 * kMiB), "4194304", "8388608") + "]"),
                   "regions overlap in guest addresses");
  ExpectFailedWith(Handshake("overlap-file", "[" + Region(Addr(spare), "4194304", "0") + "," +
                                                 Region(Addr(spare, 8 * kMiB), "4194304", "2097152") + "]"),
                   "regions overlap in memory file offsets");
  // The same region twice.
  std::string one = Region(Addr(spare), "4194304", "0");
  ExpectFailedWith(Handshake("overlap-same", "[" + one + "," + one + "]"), "regions overlap");
  ExpectGoodClientStillServed();
}

TEST_F(PagerAdversarialTest, AnEmptyRegionIsRefused) {
  SpareUffd spare = SpareUffd::Make();
  ExpectFailedWith(Handshake("empty", "[" + Region(Addr(spare), "8388608", "0") + "," +
                                          Region(Addr(spare, 8 * kMiB), "0", "8388608") + "]"),
                   "size is zero");
  ExpectFailedWith(Handshake("no-regions", "[]"), "no regions");
  ExpectFailedWith(Handshake("no-mappings", R"({"mappings":[]})"), "no regions");
  ExpectGoodClientStillServed();
}

// An offset or address range that wraps past 2^64 would pass a naive
// "offset + size <= file size" check; it is refused as overflowing.
TEST_F(PagerAdversarialTest, RangesThatWrapAroundAreRefused) {
  SpareUffd spare = SpareUffd::Make();
  const std::string wrap_offset = std::to_string(0ULL - 4 * kMiB);  // + 8 MiB wraps to 4 MiB
  ExpectFailedWith(Handshake("wrap-offset", "[" + Region(Addr(spare), "8388608", wrap_offset) + "]"), "overflows");
  const std::string wrap_addr = std::to_string(0ULL - 4096);
  ExpectFailedWith(Handshake("wrap-addr", "[" + Region(wrap_addr, "8388608", "0") + "]"), "overflows");
  ExpectGoodClientStillServed();
}

// Numbers no region can have: negative, fractional, beyond 64 bits, as
// strings, or null. Each is refused naming the region and the field.
TEST_F(PagerAdversarialTest, NumbersNoRegionCanHaveAreRefused) {
  SpareUffd spare = SpareUffd::Make();
  const std::string addr = Addr(spare);
  const std::vector<std::tuple<std::string, std::string, std::string, std::string>> cases = {
      {"neg-addr", "-4096", "8388608", "0"},    {"neg-size", addr, "-8388608", "0"},
      {"neg-offset", addr, "8388608", "-4096"}, {"frac-size", addr, "8388608.0", "0"},
      {"exp-size", addr, "8.388608e6", "0"},    {"huge-size", addr, "18446744073709551616", "0"},
      {"vast-size", addr, "1e400", "0"},        {"str-offset", addr, "8388608", "\"0\""},
      {"null-size", addr, "null", "0"},
  };
  int n = 0;
  for (const auto& [id, a, size, offset] : cases) {
    auto s = Handshake(id, "[" + Region(a, size, offset) + "]");
    EXPECT_EQ(s.value("state", ""), "failed") << id << ": " << s.dump();
    std::string reason = s.value("reason", "");
    // 1e400 is not JSON a parser keeps as a number; the rest name the region.
    EXPECT_TRUE(reason.find("region 0") != std::string::npos || reason.find("not valid JSON") != std::string::npos)
        << id << ": " << s.dump();
    ++n;
  }
  EXPECT_EQ(Stat("failed_sessions"), static_cast<uint64_t>(n));
  EXPECT_TRUE(WaitFor([&] { return pager_->CountUserfaultfds() == 1; })) << "a refused userfaultfd leaked";
  ExpectGoodClientStillServed();
}

// A region whose "offset" comes twice, the second beyond the file: the value
// the parser keeps (the last) is the one checked against the file.
TEST_F(PagerAdversarialTest, DuplicateKeysInAHandshakeAreJudgedByTheValueThatIsUsed) {
  SpareUffd spare = SpareUffd::Make();
  std::string payload =
      R"([{"base_host_virt_addr":)" + Addr(spare) + R"(,"size":8388608,"offset":0,"page_size":4096,"offset":8388608}])";
  ExpectFailedWith(Handshake("dup-offset", payload), "past the end");
  // And the page size: a valid one, then one the pager cannot serve.
  payload =
      R"([{"base_host_virt_addr":)" + Addr(spare) + R"(,"size":8388608,"offset":0,"page_size":4096,"page_size":3}])";
  ExpectFailedWith(Handshake("dup-page-size", payload), "power of two");
  ExpectGoodClientStillServed();
}

}  // namespace
}  // namespace uffdpager::testing::adversarial_test
