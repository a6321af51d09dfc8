#include "vmm/snapshot_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/durable_file.h"
#include "common/json_fields.h"
#include "common/unique_fd.h"

namespace uffdpager::vmm {

namespace {

constexpr char kMagic[8] = {'T', 'I', 'N', 'Y', 'V', 'M', 'M', '\0'};
constexpr size_t kHeaderSize = 24;

uint64_t Fnv1a64(const char* data, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < len; ++i) {
    h ^= static_cast<uint8_t>(data[i]);
    h *= 0x100000001b3ULL;
  }
  return h;
}

template <typename T>
void Put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}
template <typename T>
T Get(const std::string& in, size_t at) {
  T v;
  std::memcpy(&v, in.data() + at, sizeof(v));
  return v;
}

std::string ToHex(const void* data, size_t len) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < len; ++i) {
    out.push_back(digits[p[i] >> 4]);
    out.push_back(digits[p[i] & 15]);
  }
  return out;
}

bool FromHex(const std::string& hex, void* data, size_t len) {
  if (hex.size() != 2 * len) return false;
  auto* p = static_cast<uint8_t*>(data);
  for (size_t i = 0; i < len; ++i) {
    auto nib = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    p[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

// clang-format does not settle on one layout for this list.
// clang-format off
#define TINYVMM_REGS(X)                                                                                    \
  X(rax) X(rbx) X(rcx) X(rdx) X(rsi) X(rdi) X(rsp) X(rbp) X(r8) X(r9) X(r10) X(r11) X(r12) X(r13) X(r14) \
  X(r15) X(rip) X(rflags)
// clang-format on

nlohmann::json RegsToJson(const kvm_regs& r) {
  nlohmann::json j;
#define X(name) j[#name] = r.name;
  TINYVMM_REGS(X)
#undef X
  return j;
}

Status RegsFromJson(const nlohmann::json& j, std::string path, kvm_regs* r) {
  JsonFields fields(j, std::move(path));
#define X(name) UFFD_RETURN_IF_ERROR(fields.Read(#name, &r->name));
  TINYVMM_REGS(X)
#undef X
  return Status::Ok();
}

Status ReadVcpu(const nlohmann::json& j, const std::string& path, VcpuState* vcpu) {
  JsonFields fields(j, path);
  nlohmann::json regs;
  std::string sregs;
  nlohmann::json progress;
  UFFD_RETURN_IF_ERROR(fields.Read("regs", &regs));
  UFFD_RETURN_IF_ERROR(fields.Read("sregs", &sregs));
  UFFD_RETURN_IF_ERROR(fields.Read("progress", &progress));
  UFFD_RETURN_IF_ERROR(RegsFromJson(regs, path + ".regs", &vcpu->regs));
  if (!FromHex(sregs, &vcpu->sregs, sizeof(vcpu->sregs))) {
    return Status::InvalidArgument("\"" + path + ".sregs\" holds malformed special registers");
  }
  auto p = ProgressFromJson(progress);
  if (!p.ok()) return p.status();
  vcpu->progress = *p;
  return Status::Ok();
}

// The JSON payload; DecodeSnapshotState checks that its parts agree.
Status ReadPayload(const nlohmann::json& j, SnapshotState* s) {
  JsonFields fields(j);
  nlohmann::json machine;
  nlohmann::json memory;
  nlohmann::json program;
  std::vector<nlohmann::json> vcpus;
  UFFD_RETURN_IF_ERROR(fields.Read("machine", &machine));
  UFFD_RETURN_IF_ERROR(fields.Read("memory", &memory));
  UFFD_RETURN_IF_ERROR(fields.Read("guest_program", &program));
  UFFD_RETURN_IF_ERROR(fields.Read("generation", &s->generation));
  UFFD_RETURN_IF_ERROR(fields.Read("vcpus", &vcpus));
  JsonFields m(machine, "machine");
  UFFD_RETURN_IF_ERROR(m.Read("vcpu_count", &s->machine.vcpu_count));
  UFFD_RETURN_IF_ERROR(m.Read("mem_size_mib", &s->machine.mem_size_mib));
  UFFD_RETURN_IF_ERROR(m.Read("smt", &s->machine.smt));
  UFFD_RETURN_IF_ERROR(m.Read("track_dirty_pages", &s->machine.track_dirty_pages));
  UFFD_RETURN_IF_ERROR(m.Read("huge_pages", &s->machine.huge_pages));
  auto layout = GuestLayout::FromJson(memory);
  if (!layout.ok()) return layout.status();
  s->layout = *layout;
  JsonFields p(program, "guest_program");
  UFFD_RETURN_IF_ERROR(p.Read("seed", &s->program.seed));
  UFFD_RETURN_IF_ERROR(p.Read("write_every", &s->program.write_every));
  for (size_t i = 0; i < vcpus.size(); ++i) {
    VcpuState vcpu;
    UFFD_RETURN_IF_ERROR(ReadVcpu(vcpus[i], "vcpus[" + std::to_string(i) + "]", &vcpu));
    s->vcpus.push_back(vcpu);
  }
  return Status::Ok();
}

}  // namespace

std::string EncodeSnapshotState(const SnapshotState& s) {
  nlohmann::json vcpus = nlohmann::json::array();
  for (const auto& v : s.vcpus) {
    vcpus.push_back({{"regs", RegsToJson(v.regs)},
                     {"sregs", ToHex(&v.sregs, sizeof(v.sregs))},
                     {"progress", ProgressToJson(v.progress)}});
  }
  nlohmann::json payload = {
      {"machine",
       {{"vcpu_count", s.machine.vcpu_count},
        {"mem_size_mib", s.machine.mem_size_mib},
        {"smt", s.machine.smt},
        {"track_dirty_pages", s.machine.track_dirty_pages},
        {"huge_pages", s.machine.huge_pages}}},
      {"memory", s.layout.ToJson()},
      {"guest_program", {{"seed", s.program.seed}, {"write_every", s.program.write_every}}},
      {"generation", s.generation},
      {"vcpus", vcpus},
  };
  std::string body = payload.dump();
  std::string out(kMagic, sizeof(kMagic));
  Put<uint32_t>(out, kSnapshotFormatVersion);
  Put<uint32_t>(out, 0);
  Put<uint64_t>(out, body.size());
  out += body;
  Put<uint64_t>(out, Fnv1a64(out.data(), out.size()));
  return out;
}

Result<SnapshotState> DecodeSnapshotState(const std::string& bytes) {
  if (bytes.size() < kHeaderSize + 8) return Status::InvalidArgument("snapshot state file is truncated");
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return Status::InvalidArgument("not a tinyvmm snapshot state file (bad magic)");
  }
  uint32_t version = Get<uint32_t>(bytes, 8);
  if (version != kSnapshotFormatVersion) {
    return Status::InvalidArgument("unsupported snapshot state format version " + std::to_string(version));
  }
  uint64_t length = Get<uint64_t>(bytes, 16);
  if (length != bytes.size() - kHeaderSize - 8) {
    return Status::InvalidArgument("snapshot state file is truncated or has trailing bytes");
  }
  uint64_t stored = Get<uint64_t>(bytes, bytes.size() - 8);
  if (stored != Fnv1a64(bytes.data(), bytes.size() - 8)) {
    return Status::InvalidArgument("snapshot state file is corrupt (checksum mismatch)");
  }
  auto j = nlohmann::json::parse(bytes.begin() + kHeaderSize, bytes.end() - 8, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("snapshot state payload is malformed: not JSON");
  SnapshotState s;
  if (Status st = ReadPayload(j, &s); !st.ok()) return st.WithContext("snapshot state payload is malformed");
  if (s.vcpus.size() != s.machine.vcpu_count || s.vcpus.empty() || s.vcpus.size() > kMaxVcpus) {
    return Status::InvalidArgument("snapshot state has a vCPU count that does not match its vCPUs");
  }
  if (s.layout.total_size() != s.machine.mem_size_mib * kMiB) {
    return Status::InvalidArgument("snapshot state's memory layout does not match its memory size");
  }
  return s;
}

Status WriteSnapshotStateFile(const std::string& path, const SnapshotState& state) {
  return WriteFileAtomically(path, EncodeSnapshotState(state)).WithContext("write snapshot state file");
}

Result<SnapshotState> ReadSnapshotStateFile(const std::string& path) {
  // A state file is a few KiB; a huge one is not ours.
  auto bytes = ReadWholeFile(path, 64u << 20);
  if (!bytes.ok()) return bytes.status().WithContext("read snapshot state file");
  return DecodeSnapshotState(*bytes);
}

}  // namespace uffdpager::vmm
