#include "pager/continuity/session_record.h"

#include <gtest/gtest.h>

namespace uffdpager {
namespace {

SessionCheckpoint FullRecord() {
  SessionCheckpoint r;
  r.spec.id = "vm-1";
  r.spec.instance_id = "instance";
  r.spec.backing_path = "/snapshots/mem";
  r.spec.cache_key = "key";
  r.spec.kill_client_on_failure = true;
  r.spec.socket_ownership.uid = 1000;
  r.spec.socket_ownership.gid = 1001;
  r.spec.expected_peer.uid = 1002;
  r.spec.expected_peer.pid = 4242;
  r.socket_path = "/data/uffd/v1/sessions/vm-1.sock";
  r.incarnation = 1'790'000'000'000'000'123ULL;
  r.phase = SessionPhase::kServing;
  r.backing_identity = "2049:77:1048576:1700000000000000000";
  r.regions = {{0x7f0000000000, 1 << 20, 0, 4096}, {0x7f1000000000, 2 << 20, 1 << 20, 2 << 20}};
  r.removed = {{0x7f0000001000, 0x7f0000003000}, {0xffff'ffff'f000, 0xffff'ffff'ffff}};
  r.client_pid = 31337;
  return r;
}

TEST(SessionRecordTest, EveryFieldSurvivesTheRoundTrip) {
  SessionCheckpoint in = FullRecord();
  auto out = ParseSessionRecord(nlohmann::json::parse(SessionRecordJson(in).dump()));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->spec.id, in.spec.id);
  EXPECT_EQ(out->spec.instance_id, in.spec.instance_id);
  EXPECT_EQ(out->spec.backing_path, in.spec.backing_path);
  EXPECT_EQ(out->spec.cache_key, in.spec.cache_key);
  EXPECT_TRUE(out->spec.kill_client_on_failure);
  EXPECT_EQ(out->spec.socket_ownership.uid, in.spec.socket_ownership.uid);
  EXPECT_EQ(out->spec.socket_ownership.gid, in.spec.socket_ownership.gid);
  EXPECT_EQ(out->spec.expected_peer.uid, in.spec.expected_peer.uid);
  EXPECT_EQ(out->spec.expected_peer.pid, in.spec.expected_peer.pid);
  EXPECT_EQ(out->socket_path, in.socket_path);
  EXPECT_EQ(out->incarnation, in.incarnation);
  EXPECT_EQ(out->phase, SessionPhase::kServing);
  EXPECT_EQ(out->backing_identity, in.backing_identity);
  EXPECT_EQ(out->regions, in.regions);
  EXPECT_EQ(out->removed, in.removed);
  EXPECT_EQ(out->client_pid, in.client_pid);
}

TEST(SessionRecordTest, AnObjectSessionKeepsItsUrlAndPinnedEtag) {
  SessionCheckpoint in = FullRecord();
  in.spec.backing_path.clear();
  in.spec.backing_url = "s3://snapshots/vm-1/mem";
  in.spec.backing_etag = "\"9b2cf535f27731c974343645a3985328\"";
  auto out = ParseSessionRecord(nlohmann::json::parse(SessionRecordJson(in).dump()));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->spec.backing_url, in.spec.backing_url);
  EXPECT_EQ(out->spec.backing_etag, in.spec.backing_etag);
  EXPECT_TRUE(out->spec.backing_path.empty());
  // A URL without the version it was bound to could serve another one.
  nlohmann::json j = SessionRecordJson(in);
  j.erase("backing_etag");
  auto unpinned = ParseSessionRecord(j);
  ASSERT_FALSE(unpinned.ok());
  EXPECT_NE(unpinned.status().message().find("backing_etag"), std::string::npos);
}

TEST(SessionRecordTest, AChainSessionKeepsItsLayersInOrder) {
  SessionCheckpoint in = FullRecord();
  in.spec.backing_path.clear();
  in.spec.backing_layers = {"/snapshots/base.mem", "/snapshots/diff-1.mem", "/snapshots/diff-2.mem"};
  auto out = ParseSessionRecord(nlohmann::json::parse(SessionRecordJson(in).dump()));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->spec.backing_layers, in.spec.backing_layers);
  EXPECT_TRUE(out->spec.backing_path.empty());
  // A record's layers obey the rules of a create: none relative, no
  // control character, the field named.
  for (const std::string& bad : {std::string("relative/diff.mem"), std::string("/snapshots/diff\n[info] forged")}) {
    nlohmann::json j = SessionRecordJson(in);
    j["backing_layers"][1] = bad;
    auto refused = ParseSessionRecord(j);
    ASSERT_FALSE(refused.ok()) << bad << " was accepted";
    EXPECT_NE(refused.status().message().find("backing_layers[1]"), std::string::npos) << refused.status().ToString();
  }
}

TEST(SessionRecordTest, AChainKeepsTheVersionOfEachObjectLayer) {
  SessionCheckpoint in = FullRecord();
  in.spec.backing_path.clear();
  in.spec.backing_layers = {"s3://snapshots/base", "/snapshots/diff-1.mem", "s3://snapshots/diff-2"};
  in.spec.backing_layer_etags = {"\"e-base\"", "", "\"e-diff-2\""};
  auto out = ParseSessionRecord(nlohmann::json::parse(SessionRecordJson(in).dump()));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->spec.backing_layers, in.spec.backing_layers);
  EXPECT_EQ(out->spec.backing_layer_etags, in.spec.backing_layer_etags);
  // An object layer without the version it was bound to could serve another
  // one after a restart: refused, naming the layer.
  nlohmann::json j = SessionRecordJson(in);
  j["backing_layer_etags"][2] = "";
  auto unpinned = ParseSessionRecord(j);
  ASSERT_FALSE(unpinned.ok());
  EXPECT_NE(unpinned.status().message().find("layer 2 (s3://snapshots/diff-2) has no pinned ETag"), std::string::npos)
      << unpinned.status().ToString();
  j.erase("backing_layer_etags");
  EXPECT_FALSE(ParseSessionRecord(j).ok());
  j["backing_layer_etags"] = {"\"e-base\""};
  auto short_list = ParseSessionRecord(j);
  ASSERT_FALSE(short_list.ok());
  EXPECT_NE(short_list.status().message().find("1 entries for 3 layers"), std::string::npos)
      << short_list.status().ToString();
}

TEST(SessionRecordTest, OptionalSecurityFieldsStayUnset) {
  SessionCheckpoint in = FullRecord();
  in.spec.socket_ownership = {};
  in.spec.expected_peer = {};
  auto out = ParseSessionRecord(SessionRecordJson(in));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_FALSE(out->spec.socket_ownership.uid.has_value());
  EXPECT_FALSE(out->spec.expected_peer.pid.has_value());
}

TEST(SessionRecordTest, BadRecordsAreErrorsNamingTheField) {
  auto j = SessionRecordJson(FullRecord());
  j.erase("backing_identity");
  auto missing = ParseSessionRecord(j);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("backing_identity"), std::string::npos);

  j = SessionRecordJson(FullRecord());
  j["phase"] = "dancing";
  EXPECT_FALSE(ParseSessionRecord(j).ok());

  j = SessionRecordJson(FullRecord());
  j["regions"] = nlohmann::json::array();
  EXPECT_FALSE(ParseSessionRecord(j).ok());  // serving with no regions

  j = SessionRecordJson(FullRecord());
  j["format"] = 2;
  EXPECT_FALSE(ParseSessionRecord(j).ok());

  j = SessionRecordJson(FullRecord());
  j["removed"] = nlohmann::json::array({nlohmann::json::array({1})});
  EXPECT_FALSE(ParseSessionRecord(j).ok());

  j = SessionRecordJson(FullRecord());
  j["incarnation"] = "soon";
  EXPECT_FALSE(ParseSessionRecord(j).ok());

  EXPECT_FALSE(ParseSessionRecord(nlohmann::json::array()).ok());
}

// A record read back is held to the rules a create is: no control character
// in an id, a path or a cache key (it would forge log lines, or a NUL would
// open one file while naming another), ids of the id syntax.
TEST(SessionRecordTest, ControlCharactersAndBadIdsInARecordAreRefusedNamingTheField) {
  struct Case {
    const char* field;
    std::string value;
  };
  for (const Case& c : {Case{"backing_memory_path", "/snapshots/mem\n[info] forged"},
                        Case{"backing_memory_path", std::string("/snapshots/mem\0/etc/shadow", 26)},
                        Case{"cache_key", "key\x7f"}, Case{"instance_id", "i\x1b[2J"}, Case{"session_id", "vm-1\r"},
                        Case{"session_id", "../vm-1"}, Case{"backing_memory_path", "relative/mem"}}) {
    auto j = SessionRecordJson(FullRecord());
    j[c.field] = c.value;
    auto out = ParseSessionRecord(j);
    ASSERT_FALSE(out.ok()) << c.field << " = " << nlohmann::json(c.value).dump() << " was accepted";
    EXPECT_EQ(out.status().code(), ErrorCode::kInvalidArgument) << out.status().ToString();
    EXPECT_NE(out.status().message().find(c.field), std::string::npos) << out.status().ToString();
    for (char ch : out.status().message()) {
      EXPECT_FALSE(static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) << "the error repeats a control character";
    }
  }
}

TEST(SessionRecordTest, IncarnationsOnlyGrow) {
  uint64_t last = NextSessionIncarnation();
  for (int i = 0; i < 10000; ++i) {
    uint64_t next = NextSessionIncarnation();
    ASSERT_GT(next, last);
    last = next;
  }
}

}  // namespace
}  // namespace uffdpager
