// Bad API input is answered the way Firecracker answers it: 400 with
// {"fault_message": ...}, unknown fields refused, pre-boot-only and
// post-boot-only requests refused in the wrong phase, missing files and
// corrupt state files reported by the load.
#include "tinyvmm_fixture.h"

namespace uffdpager::vmm::testing {
namespace {

class TinyVmmApiTest : public TinyVmmTest {
 protected:
  void ExpectFault(VmmInstance& vm, const std::string& method, const std::string& path, const json& body,
                   const std::string& fault_part) {
    Answer a = Call(vm, method, path, body);
    EXPECT_EQ(a.status, 400) << method << " " << path << " " << body.dump() << " -> " << a.body.dump();
    EXPECT_NE(a.fault().find(fault_part), std::string::npos)
        << method << " " << path << ": expected a fault containing \"" << fault_part << "\", got " << a.body.dump();
  }
};

TEST_F(TinyVmmApiTest, DescribesTheInstanceLikeFirecracker) {
  VmmInstance& vm = StartVmm("api");
  Answer info = Call(vm, "GET", "/");
  EXPECT_EQ(info.status, 200);
  EXPECT_EQ(info.body["id"], "api");
  EXPECT_EQ(info.body["state"], "Not started");
  EXPECT_TRUE(info.body.contains("vmm_version"));
  EXPECT_TRUE(info.body.contains("app_name"));
  Answer config = Call(vm, "GET", "/machine-config");
  EXPECT_EQ(config.status, 200);
  EXPECT_EQ(config.body, json({{"vcpu_count", 1},
                               {"mem_size_mib", 128},
                               {"smt", false},
                               {"track_dirty_pages", false},
                               {"huge_pages", "None"}}));
  ExpectNoContent(vm, "PUT", "/machine-config", {{"vcpu_count", 2}, {"mem_size_mib", 32}});
  EXPECT_EQ(Call(vm, "GET", "/machine-config").body["vcpu_count"], 2);
  EXPECT_EQ(Call(vm, "GET", "/version").body["firecracker_version"], "1.16.1");
}

TEST_F(TinyVmmApiTest, RefusesUnknownFieldsAndMalformedBodies) {
  VmmInstance& vm = StartVmm("api");
  ExpectFault(vm, "PUT", "/machine-config", {{"vcpu_count", 1}, {"mem_size_mib", 32}, {"foo", 1}},
              "unknown field `foo`");
  ExpectFault(vm, "PUT", "/machine-config", {{"mem_size_mib", 32}}, "missing field `vcpu_count`");
  ExpectFault(vm, "PUT", "/machine-config", {{"vcpu_count", "two"}, {"mem_size_mib", 32}}, "invalid type");
  ExpectFault(vm, "PUT", "/machine-config", {{"vcpu_count", 1}, {"mem_size_mib", 32}, {"huge_pages", "1G"}},
              "unknown variant `1G`, expected `None` or `2M`");
  ExpectFault(vm, "PUT", "/machine-config", {{"vcpu_count", 0}, {"mem_size_mib", 32}}, "vCPU number is invalid");
  ExpectFault(vm, "PUT", "/machine-config", {{"vcpu_count", 1}, {"mem_size_mib", 0}}, "memory size");
  ExpectFault(vm, "PUT", "/actions", {{"action_type", "Reboot"}}, "unknown variant `Reboot`");
  ExpectFault(vm, "PUT", "/actions", {{"action_type", "InstanceStart"}, {"extra", true}}, "unknown field `extra`");
  ExpectFault(vm, "PATCH", "/vm", {{"state", "Stopped"}}, "unknown variant `Stopped`, expected `Paused` or `Resumed`");
  ExpectFault(
      vm, "PUT", "/snapshot/load",
      {{"snapshot_path", "/x"}, {"mem_backend", {{"backend_type", "File"}, {"backend_path", "/y"}}}, {"bogus", 1}},
      "unknown field `bogus`");
  ExpectFault(vm, "PUT", "/snapshot/load",
              {{"snapshot_path", "/x"}, {"mem_backend", {{"backend_type", "Tape"}, {"backend_path", "/y"}}}},
              "unknown variant `Tape`");
  ExpectFault(vm, "PUT", "/snapshot/load",
              {{"snapshot_path", "/x"}, {"mem_backend", {{"backend_type", "File"}, {"backend_path", "/y"}, {"z", 1}}}},
              "unknown field `z`");
  ExpectFault(vm, "PUT", "/snapshot/load",
              {{"snapshot_path", "/x"},
               {"mem_file_path", "/y"},
               {"mem_backend", {{"backend_type", "File"}, {"backend_path", "/y"}}}},
              "too many fields");
  ExpectFault(vm, "PUT", "/snapshot/load", {{"snapshot_path", "/x"}}, "missing field");
  ExpectFault(vm, "PUT", "/snapshot/create", {{"snapshot_path", "/x"}, {"mem_file_path", "/y"}, {"version", "1"}},
              "unknown field `version`");
  Answer garbage = Call(vm, "PUT", "/machine-config", json("not an object"));
  EXPECT_EQ(garbage.status, 400);
  auto raw = vm.api->Send("PUT", "/machine-config", "{not json", 5s);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->status, 400);
  EXPECT_NE(raw->body.find("fault_message"), std::string::npos);
  ExpectFault(vm, "GET", "/no-such-thing", nullptr, "Invalid request method and/or path: GET /no-such-thing.");
  ExpectFault(vm, "DELETE", "/vm", nullptr, "Invalid request method and/or path");
  // None of that changed anything.
  EXPECT_EQ(Call(vm, "GET", "/machine-config").body["vcpu_count"], 1);
}

TEST_F(TinyVmmApiTest, RefusesRequestsInTheWrongPhase) {
  VmmInstance& vm = StartVmm("api");
  ExpectFault(vm, "PATCH", "/vm", {{"state", "Paused"}}, "not supported before starting the microVM");
  ExpectFault(vm, "PUT", "/snapshot/create", {{"snapshot_path", Path("a")}, {"mem_file_path", Path("b")}},
              "not supported before starting the microVM");
  Boot(vm, 1, 32, false);
  ExpectFault(vm, "PUT", "/actions", {{"action_type", "InstanceStart"}}, "not supported after starting the microVM");
  ExpectFault(vm, "PUT", "/machine-config", {{"vcpu_count", 1}, {"mem_size_mib", 64}},
              "not supported after starting the microVM");
  ExpectFault(vm, "PUT", "/snapshot/create", {{"snapshot_path", Path("a")}, {"mem_file_path", Path("b")}},
              "not paused");
  Pause(vm);
  ExpectFault(vm, "PUT", "/snapshot/create",
              {{"snapshot_type", "Diff"}, {"snapshot_path", Path("a")}, {"mem_file_path", Path("b")}},
              "Diff snapshots are not allowed on uVMs with dirty page tracking disabled.");
  Snapshot(vm, "s1.state", "s1.mem");
  // Load after start.
  ExpectFault(vm, "PUT", "/snapshot/load",
              {{"snapshot_path", Path("s1.state")},
               {"mem_backend", {{"backend_type", "File"}, {"backend_path", Path("s1.mem")}}}},
              "not supported after starting the microVM");
  // Load after configuring boot resources.
  VmmInstance& configured = StartVmm("configured");
  ExpectNoContent(configured, "PUT", "/machine-config", {{"vcpu_count", 1}, {"mem_size_mib", 32}});
  ExpectFault(configured, "PUT", "/snapshot/load",
              {{"snapshot_path", Path("s1.state")},
               {"mem_backend", {{"backend_type", "File"}, {"backend_path", Path("s1.mem")}}}},
              "Loading a microVM snapshot not allowed after configuring boot-specific resources.");
}

TEST_F(TinyVmmApiTest, LoadReportsMissingFilesAndCorruptState) {
  VmmInstance& src = StartVmm("src");
  Boot(src, 1, 32, false);
  WaitForSteps(src, 10);
  Pause(src);
  Snapshot(src, "s1.state", "s1.mem");

  VmmInstance& vm = StartVmm("api");
  auto load = [&](const std::string& state, const std::string& type, const std::string& backend) {
    return json{{"snapshot_path", state}, {"mem_backend", {{"backend_type", type}, {"backend_path", backend}}}};
  };
  ExpectFault(vm, "PUT", "/snapshot/load", load(Path("missing.state"), "File", Path("s1.mem")),
              "Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file");
  ExpectFault(vm, "PUT", "/snapshot/load", load(Path("missing.state"), "File", Path("s1.mem")),
              "No such file or directory");
  ExpectFault(vm, "PUT", "/snapshot/load", load(Path("s1.state"), "File", Path("missing.mem")),
              "No such file or directory");
  ExpectFault(vm, "PUT", "/snapshot/load", load(Path("s1.state"), "Uffd", Path("missing.sock")),
              "No such file or directory");
  // A state file with one byte flipped, one cut short, one of another kind.
  std::vector<uint8_t> bytes = ReadBytes(Path("s1.state"));
  bytes[bytes.size() / 2] ^= 0x20;
  std::ofstream(Path("flipped.state"), std::ios::binary).write(reinterpret_cast<char*>(bytes.data()), bytes.size());
  ExpectFault(vm, "PUT", "/snapshot/load", load(Path("flipped.state"), "File", Path("s1.mem")), "corrupt");
  std::ofstream(Path("short.state"), std::ios::binary).write(reinterpret_cast<char*>(bytes.data()), 30);
  ExpectFault(vm, "PUT", "/snapshot/load", load(Path("short.state"), "File", Path("s1.mem")), "truncated");
  ExpectFault(vm, "PUT", "/snapshot/load", load(Path("s1.mem"), "File", Path("s1.mem")), "bad magic");
  // A memory file too small for the snapshot.
  std::ofstream(Path("small.mem"), std::ios::binary).write("x", 1);
  ExpectFault(vm, "PUT", "/snapshot/load", load(Path("s1.state"), "File", Path("small.mem")), "holds 1 bytes");
  // After all that, a good load still works.
  LoadFile(vm, "s1.state", "s1.mem", /*resume=*/true);
  EXPECT_EQ(Call(vm, "GET", "/").body["state"], "Running");
}

// Firecracker 1.12+ takes per-restore host devices on /snapshot/load; tinyvmm
// parses them as strictly and records them (GET /tinyvmm/load, which the
// lifecycle tests read).
TEST_F(TinyVmmApiTest, TakesDeviceOverridesAsFirecrackerParsesThem) {
  VmmInstance& vm = StartVmm("api");
  auto load = [&](const std::string& field, const json& value) {
    return json{{"snapshot_path", Path("missing.state")}, {"mem_file_path", Path("m")}, {field, value}};
  };
  ExpectFault(vm, "PUT", "/snapshot/load", load("network_overrides", json::array({json{{"iface_id", "eth0"}}})),
              "missing field `host_dev_name`");
  ExpectFault(vm, "PUT", "/snapshot/load",
              load("network_overrides",
                   json::array({json{{"iface_id", "eth0"}, {"host_dev_name", "tap0"}, {"guest_mac", "x"}}})),
              "unknown field `guest_mac`, expected `iface_id` or `host_dev_name`");
  ExpectFault(vm, "PUT", "/snapshot/load", load("network_overrides", "eth0"), "expected a sequence");
  ExpectFault(vm, "PUT", "/snapshot/load", load("vsock_override", json{{"path", "/v"}}),
              "unknown field `path`, expected `uds_path`");
  // Well-formed ones get past the body: the load fails on the missing file.
  json good = load("network_overrides", json::array({json{{"iface_id", "eth0"}, {"host_dev_name", "tap0"}}}));
  good["vsock_override"] = {{"uds_path", Path("v.sock")}};
  ExpectFault(vm, "PUT", "/snapshot/load", good, "Failed to get snapshot state from file");
  EXPECT_TRUE(Call(vm, "GET", "/tinyvmm/load").body.is_null()) << "nothing loaded yet";
}

// The README's client-library example ends with the body of Firecracker's
// PUT /snapshot/load; Firecracker's strict parser must take it.
TEST_F(TinyVmmApiTest, TheReadmeLoadExampleIsABodyFirecrackerTakes) {
  std::ifstream in(UFFDPAGER_README);
  ASSERT_TRUE(in) << UFFDPAGER_README;
  const std::string prefix = "// PUT /snapshot/load ";
  json body;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) == 0) body = json::parse(line.substr(prefix.size()), nullptr, false);
  }
  ASSERT_TRUE(body.is_object()) << "no \"" << prefix << "{...}\" line in the README";
  body["snapshot_path"] = Path("missing.state");  // the rest as the README has it
  VmmInstance& vm = StartVmm("api");
  ExpectFault(vm, "PUT", "/snapshot/load", body, "Failed to get snapshot state from file");
}

}  // namespace
}  // namespace uffdpager::vmm::testing
