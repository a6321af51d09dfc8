#include "vmm/firecracker_api.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/json_fields.h"

namespace uffdpager::vmm {

namespace {

using nlohmann::json;

HttpResponse Fault(int status, const std::string& message) {
  return HttpResponse{status, FirecrackerApi::FaultBody(message), "application/json"};
}

HttpResponse NoContent() { return HttpResponse{204, "", "application/json"}; }

HttpResponse Ok(const json& body) { return HttpResponse{200, body.dump(), "application/json"}; }

HttpResponse FromStatus(const Status& st) {
  if (st.ok()) return NoContent();
  return Fault(st.code() == ErrorCode::kInternal ? 500 : 400, st.message());
}

// Firecracker parses bodies with serde; its errors read
// "An error occurred when deserializing the json body of a request: <serde's message>."
class BodyError {
 public:
  explicit BodyError(std::string m) : message(std::move(m)) {}
  std::string message;
};

std::string Quoted(const std::vector<std::string>& names) {
  // serde: "`a`", "`a` or `b`", "one of `a`, `b`, `c`"
  std::string out;
  if (names.size() == 2) return "`" + names[0] + "` or `" + names[1] + "`";
  if (names.size() > 2) out = "one of ";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", `" : "`") + names[i] + "`";
  return out;
}

// A JSON object with exactly the fields a deny_unknown_fields struct takes.
// Its fields are read by JsonFields, in serde's wording.
class StrictObject {
 public:
  StrictObject(const json& j, const char* struct_name, std::vector<std::string> fields)
      : fields_(j, "", JsonWording::kSerde) {
    if (!j.is_object()) {
      throw BodyError("invalid type: " + std::string(j.type_name()) + ", expected struct " + struct_name);
    }
    for (const auto& [key, value] : j.items()) {
      if (std::find(fields.begin(), fields.end(), key) == fields.end()) {
        throw BodyError("unknown field `" + key + "`, expected " + Quoted(fields));
      }
    }
  }

  bool Has(const char* name) const { return fields_.Has(name); }

  // A nested value (a struct or a list), required.
  json Value(const char* name) const {
    json v;
    Check(fields_.Read(name, &v));
    return v;
  }

  std::string String(const char* name, bool required, const std::string& fallback = "") const {
    std::string v = fallback;
    Check(required ? fields_.Read(name, &v) : fields_.ReadOptional(name, &v));
    return v;
  }

  bool Bool(const char* name, bool fallback) const {
    bool v = fallback;
    Check(fields_.ReadOptional(name, &v));
    return v;
  }

  // A required integer of Rust's type T (u8: uint8_t), or at most `max`.
  template <JsonInteger T>
  T Integer(const char* name) const {
    T v = 0;
    Check(fields_.Read(name, &v));
    return v;
  }
  template <JsonInteger T>
  T Integer(const char* name, uint64_t max) const {
    T v = 0;
    Check(fields_.Read(name, &v, max));
    return v;
  }

  std::string Enum(const char* name, bool required, const std::vector<std::string>& variants,
                   const std::string& fallback) const {
    std::string v = String(name, required, fallback);
    if (std::find(variants.begin(), variants.end(), v) == variants.end()) {
      throw BodyError("unknown variant `" + v + "`, expected " + Quoted(variants));
    }
    return v;
  }

 private:
  static void Check(const Status& st) {
    if (!st.ok()) throw BodyError(st.message());
  }

  JsonFields fields_;
};

json ParseBody(const std::string& body) {
  if (body.empty()) throw BodyError("EOF while parsing a value at line 1 column 0");
  try {
    return json::parse(body);
  } catch (const json::parse_error& e) {
    throw BodyError(e.what());
  }
}

HttpResponse PutMachineConfig(VmmController& c, const std::string& body) {
  json j = ParseBody(body);
  StrictObject o(j, "MachineConfig",
                 {"vcpu_count", "mem_size_mib", "smt", "cpu_template", "track_dirty_pages", "huge_pages"});
  MachineConfig config;
  config.vcpu_count = o.Integer<uint8_t>("vcpu_count");
  // At most what fits in bytes.
  config.mem_size_mib = o.Integer<uint64_t>("mem_size_mib", UINT64_MAX >> 20);
  config.smt = o.Bool("smt", false);
  config.track_dirty_pages = o.Bool("track_dirty_pages", false);
  config.huge_pages = o.Enum("huge_pages", false, {"None", "2M"}, "None");
  if (o.Has("cpu_template")) {
    std::string t = o.String("cpu_template", false);
    if (t != "None") return Fault(400, "CPU templates are not supported by tinyvmm.");
  }
  return FromStatus(c.PutMachineConfig(config));
}

HttpResponse PutActions(VmmController& c, const std::string& body) {
  json j = ParseBody(body);
  StrictObject o(j, "ActionBody", {"action_type"});
  std::string action = o.Enum("action_type", true, {"FlushMetrics", "InstanceStart", "SendCtrlAltDel"}, "");
  if (action == "InstanceStart") return FromStatus(c.StartInstance());
  if (action == "FlushMetrics") return NoContent();
  return Fault(400, "SendCtrlAltDel is not supported by tinyvmm: its guest has no keyboard controller.");
}

HttpResponse PatchVm(VmmController& c, const std::string& body) {
  json j = ParseBody(body);
  StrictObject o(j, "Vm", {"state"});
  std::string state = o.Enum("state", true, {"Paused", "Resumed"}, "");
  return FromStatus(state == "Paused" ? c.Pause() : c.Resume());
}

HttpResponse PutSnapshotCreate(VmmController& c, const std::string& body) {
  json j = ParseBody(body);
  StrictObject o(j, "CreateSnapshotParams", {"snapshot_type", "snapshot_path", "mem_file_path"});
  SnapshotCreateRequest r;
  r.diff = o.Enum("snapshot_type", false, {"Full", "Diff"}, "Full") == "Diff";
  r.snapshot_path = o.String("snapshot_path", true);
  r.mem_file_path = o.String("mem_file_path", true);
  return FromStatus(c.CreateSnapshot(r));
}

HttpResponse PutSnapshotLoad(VmmController& c, const std::string& body) {
  json j = ParseBody(body);
  StrictObject o(j, "LoadSnapshotConfig",
                 {"snapshot_path", "mem_file_path", "mem_backend", "enable_diff_snapshots", "track_dirty_pages",
                  "resume_vm", "network_overrides", "vsock_override", "clock_realtime"});
  SnapshotLoadRequest r;
  r.snapshot_path = o.String("snapshot_path", true);
  bool has_file = o.Has("mem_file_path"), has_backend = o.Has("mem_backend");
  if (has_file && has_backend) {
    return Fault(400, "too many fields: either `mem_backend` or `mem_file_path` exclusively is required.");
  }
  if (!has_file && !has_backend) {
    return Fault(400, "missing field: either `mem_backend` or `mem_file_path` is required.");
  }
  if (has_file) {
    r.backend_path = o.String("mem_file_path", true);
  } else {
    json backend = o.Value("mem_backend");
    StrictObject b(backend, "MemBackendConfig", {"backend_type", "backend_path"});
    r.uffd = b.Enum("backend_type", true, {"File", "Uffd"}, "") == "Uffd";
    r.backend_path = b.String("backend_path", true);
  }
  r.track_dirty_pages = o.Bool("track_dirty_pages", false) || o.Bool("enable_diff_snapshots", false);
  r.resume_vm = o.Bool("resume_vm", false);
  // Firecracker 1.12+: per-restore host devices. tinyvmm has no devices; it
  // takes them as Firecracker parses them and records them (GET /tinyvmm/load).
  if (o.Has("network_overrides")) {
    json overrides = o.Value("network_overrides");
    if (!overrides.is_array()) {
      throw BodyError("invalid type: " + std::string(overrides.type_name()) + ", expected a sequence");
    }
    for (const json& one : overrides) {
      StrictObject n(one, "NetworkOverride", {"iface_id", "host_dev_name"});
      r.network_overrides.push_back({n.String("iface_id", true), n.String("host_dev_name", true)});
    }
  }
  if (o.Has("vsock_override")) {
    json vsock = o.Value("vsock_override");
    StrictObject v(vsock, "VsockOverride", {"uds_path"});
    r.vsock_uds_path = v.String("uds_path", true);
  }
  return FromStatus(c.LoadSnapshot(r));
}

json MachineConfigJson(const MachineConfig& m) {
  return {{"vcpu_count", m.vcpu_count},
          {"mem_size_mib", m.mem_size_mib},
          {"smt", m.smt},
          {"track_dirty_pages", m.track_dirty_pages},
          {"huge_pages", m.huge_pages}};
}

}  // namespace

std::string FirecrackerApi::FaultBody(const std::string& message) { return json{{"fault_message", message}}.dump(); }

HttpResponse FirecrackerApi::Handle(const HttpRequest& request) {
  const std::string& m = request.method;
  const std::string& p = request.path;
  HttpResponse response;
  try {
    if (m == "GET" && p == "/") {
      response = Ok(controller_.InstanceInfo());
    } else if (m == "GET" && p == "/version") {
      response = Ok({{"firecracker_version", "1.16.1"}});
    } else if (m == "GET" && p == "/machine-config") {
      response = Ok(MachineConfigJson(controller_.GetMachineConfig()));
    } else if (m == "PUT" && p == "/machine-config") {
      response = PutMachineConfig(controller_, request.body);
    } else if (m == "PUT" && p == "/actions") {
      response = PutActions(controller_, request.body);
    } else if (m == "PATCH" && p == "/vm") {
      response = PatchVm(controller_, request.body);
    } else if (m == "PUT" && p == "/snapshot/create") {
      response = PutSnapshotCreate(controller_, request.body);
    } else if (m == "PUT" && p == "/snapshot/load") {
      response = PutSnapshotLoad(controller_, request.body);
    } else if (m == "GET" && p == "/tinyvmm/guest") {
      response = Ok(controller_.GuestReport());
    } else if (m == "GET" && p == "/tinyvmm/load") {
      response = Ok(controller_.LoadReport());
    } else {
      response = Fault(400, "Invalid request method and/or path: " + m + " " + p + ".");
    }
  } catch (const BodyError& e) {
    response = Fault(400, "An error occurred when deserializing the json body of a request: " + e.message + ".");
  }
  if (response.status >= 400) {
    spdlog::warn("{} {} -> {} {}", m, p, response.status, response.body);
  } else if (m != "GET") {
    spdlog::info("{} {} -> {}", m, p, response.status);
  }
  return response;
}

}  // namespace uffdpager::vmm
