#include "vmm/guest_program.h"

#include <cstring>
#include <string>

#include "common/json_fields.h"
#include "vmm/guest_ram.h"

namespace uffdpager::vmm {

namespace {

// The loop, assembled with `as --64` (Intel syntax) from:
//
//  top:  mov eax, ebx ; shl eax, 13 ; xor ebx, eax        xorshift32
//        mov eax, ebx ; shr eax, 17 ; xor ebx, eax
//        mov eax, ebx ; shl eax, 5  ; xor ebx, eax
//        mov eax, ebx ; xor edx, edx ; div dword [rsi+8]  edx = state % pages_per_vcpu
//        mov eax, edx ; mul dword [rsi+4]                 * vcpu_count
//        add eax, [rsi] ; add eax, [rsi+12]               + vcpu + first walk page
//        cmp eax, [rsi+16] ; jb 1f ; add eax, [rsi+20]    skip the hole
//  1:    shl eax, 12 ; mov edx, eax ; mov ecx, 1024
//  2:    rol ebp, 5 ; add ebp, [rax] ; add eax, 4 ; dec ecx ; jnz 2b
//        inc edi
//        mov eax, edi ; mov ecx, edx ; xor edx, edx ; div dword [rsi+24]
//        test edx, edx ; jnz 3f
//        mov [rcx], edi ; mov [rcx+4], ebp                every write_every-th step
//  3:    mov eax, [rsi+28] ; mov [rax], edi ; mov [rax+4], ebp ; mov [rax+8], ebx
//        out 0xe0, al
//        jmp top
// (32-bit operations zero-extend into the 64-bit registers used as addresses.)
constexpr uint8_t kCode[] = {0x89, 0xd8, 0xc1, 0xe0, 0x0d, 0x31, 0xc3, 0x89, 0xd8, 0xc1, 0xe8, 0x11, 0x31, 0xc3, 0x89,
                             0xd8, 0xc1, 0xe0, 0x05, 0x31, 0xc3, 0x89, 0xd8, 0x31, 0xd2, 0xf7, 0x76, 0x08, 0x89, 0xd0,
                             0xf7, 0x66, 0x04, 0x03, 0x06, 0x03, 0x46, 0x0c, 0x3b, 0x46, 0x10, 0x72, 0x03, 0x03, 0x46,
                             0x14, 0xc1, 0xe0, 0x0c, 0x89, 0xc2, 0xb9, 0x00, 0x04, 0x00, 0x00, 0xc1, 0xc5, 0x05, 0x03,
                             0x28, 0x83, 0xc0, 0x04, 0xff, 0xc9, 0x75, 0xf4, 0xff, 0xc7, 0x89, 0xf8, 0x89, 0xd1, 0x31,
                             0xd2, 0xf7, 0x76, 0x18, 0x85, 0xd2, 0x75, 0x05, 0x89, 0x39, 0x89, 0x69, 0x04, 0x8b, 0x46,
                             0x1c, 0x89, 0x38, 0x89, 0x68, 0x04, 0x89, 0x58, 0x08, 0xe6, 0xe0, 0xeb, 0x99};

// Identity-mapped page tables for the first 4 GiB with 2 MiB pages, user
// accessible, accessed and dirty bits preset (so the CPU never writes them).
constexpr uint64_t kPml4Gpa = 0x8000;
constexpr uint64_t kPdptGpa = 0x9000;
constexpr uint64_t kPdGpa = 0xA000;  // four of them, 0xA000..0xDFFF

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint32_t Load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void Store32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

}  // namespace

nlohmann::json ProgressToJson(const VcpuProgress& p) {
  return {{"step", p.step}, {"checksum", p.checksum}, {"prng", p.prng}};
}

Result<VcpuProgress> ProgressFromJson(const nlohmann::json& j) {
  JsonFields fields(j);
  VcpuProgress p;
  Status st = fields.Read("step", &p.step);
  if (st.ok()) st = fields.Read("checksum", &p.checksum);
  if (st.ok()) st = fields.Read("prng", &p.prng);
  if (!st.ok()) return st.WithContext("guest progress");
  return p;
}

Result<GuestWalk> GuestWalk::Create(const GuestLayout& layout, uint32_t vcpu_count, const GuestProgramConfig& config) {
  if (vcpu_count == 0 || vcpu_count > kMaxVcpus) return Status::InvalidArgument("vCPU count out of range");
  if (config.write_every == 0) return Status::InvalidArgument("write_every must be at least 1");
  GuestWalk walk;
  walk.layout_ = layout;
  walk.config_ = config;
  walk.vcpu_count_ = vcpu_count;
  uint64_t total_pages = layout.total_size() / kGuestPageSize;
  if (total_pages <= kReservedPages + vcpu_count) return Status::InvalidArgument("guest memory too small");
  walk.pages_per_vcpu_ = static_cast<uint32_t>((total_pages - kReservedPages) / vcpu_count);
  walk.region0_end_page_ = static_cast<uint32_t>(layout.regions[0].size / kGuestPageSize);
  walk.hole_pages_ = layout.regions.size() > 1
                         ? static_cast<uint32_t>((layout.regions[1].gpa - layout.regions[0].size) / kGuestPageSize)
                         : 0;
  return walk;
}

VcpuProgress GuestWalk::InitialProgress(uint32_t vcpu) const {
  uint32_t prng = static_cast<uint32_t>(SplitMix64(config_.seed * 1000003ULL + vcpu));
  if (prng == 0) prng = 0x9e3779b9u;  // xorshift's one fixed point
  return {0, 0, prng};
}

Status GuestWalk::Install(GuestRam& ram) const {
  uint8_t* code = ram.HostAddress(kCodeGpa, sizeof(kCode));
  uint8_t* params = ram.HostAddress(kParamsGpa, kGuestPageSize);
  if (code == nullptr || params == nullptr) return Status::InvalidArgument("guest memory too small for the program");
  std::memcpy(code, kCode, sizeof(kCode));
  uint8_t* tables = ram.HostAddress(kPml4Gpa, 6 * kGuestPageSize);
  if (tables == nullptr) return Status::InvalidArgument("guest memory too small for the page tables");
  auto* pml4 = reinterpret_cast<uint64_t*>(tables);
  auto* pdpt = reinterpret_cast<uint64_t*>(tables + kGuestPageSize);
  constexpr uint64_t kTable = 0x27;  // present, writable, user, accessed
  constexpr uint64_t kLarge = 0xe7;  // + dirty, 2 MiB page
  pml4[0] = kPdptGpa | kTable;
  for (uint64_t i = 0; i < 4; ++i) {
    pdpt[i] = (kPdGpa + i * kGuestPageSize) | kTable;
    auto* pd = reinterpret_cast<uint64_t*>(tables + (2 + i) * kGuestPageSize);
    for (uint64_t j = 0; j < 512; ++j) pd[j] = ((i * 512 + j) << 21) | kLarge;
  }
  for (uint32_t v = 0; v < vcpu_count_; ++v) {
    uint8_t* p = params + 32 * v;
    Store32(p + 0, v);
    Store32(p + 4, vcpu_count_);
    Store32(p + 8, pages_per_vcpu_);
    Store32(p + 12, kReservedPages);
    Store32(p + 16, region0_end_page_);
    Store32(p + 20, hole_pages_);
    Store32(p + 24, config_.write_every);
    Store32(p + 28, static_cast<uint32_t>(kStatusGpa + 16 * v));
  }
  for (size_t i = 0; i < layout_.regions.size(); ++i) {
    const auto& r = layout_.regions[i];
    for (uint64_t off = 0; off < r.size; off += kGuestPageSize) {
      uint64_t gpa = r.gpa + off;
      if (!IsWalkedPage(gpa)) continue;
      uint64_t x = SplitMix64(config_.seed ^ (gpa << 8));
      auto* words = reinterpret_cast<uint64_t*>(ram.region_host(i) + off);
      for (size_t w = 0; w < kGuestPageSize / 8; ++w) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        words[w] = x;
      }
    }
  }
  return Status::Ok();
}

void GuestWalk::InitialRegisters(uint32_t vcpu, kvm_regs* regs, kvm_sregs* sregs) const {
  // 64-bit long mode, identity-mapped, running at CPL 3 with IOPL 3: the
  // program needs no kernel (no interrupts, no exceptions, no segment
  // loads), `out` is allowed at IOPL 3, and user-mode code runs natively
  // even under KVM backends that emulate guest-kernel code (such as PVM on
  // the nested machines this project is tested on).
  kvm_segment code{};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = 0x1b;  // GDT entry 3, RPL 3
  code.type = 11;        // execute/read, accessed
  code.present = 1;
  code.dpl = 3;
  code.db = 0;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  kvm_segment data = code;
  data.selector = 0x23;  // GDT entry 4, RPL 3
  data.type = 3;         // read/write, accessed
  data.l = 0;
  data.db = 1;
  sregs->cs = code;
  sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
  sregs->cr0 = 0x80000011;  // PG | ET | PE
  sregs->cr3 = kPml4Gpa;
  sregs->cr4 = 0x20;    // PAE
  sregs->efer = 0x500;  // LME | LMA

  VcpuProgress p = InitialProgress(vcpu);
  *regs = kvm_regs{};
  regs->rflags = 0x3002;  // IOPL 3
  regs->rip = kCodeGpa;
  regs->rsi = kParamsGpa + 32 * vcpu;
  regs->rbx = p.prng;
  regs->rbp = p.checksum;
  regs->rdi = p.step;
  regs->rsp = kCodeGpa;  // unused: the loop has no calls
}

// Not instrumented by TSan: the walk is single-threaded over a private
// image, and a race check on each of a page's 1024 loads made one replay of a
// lifecycle test's guest take minutes.
__attribute__((no_sanitize("thread"))) VcpuProgress GuestWalk::Step(
    uint32_t vcpu, const VcpuProgress& in, const std::function<uint8_t*(uint64_t)>& page_at) const {
  VcpuProgress p = in;
  uint32_t x = p.prng;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  p.prng = x;
  uint32_t page = (x % pages_per_vcpu_) * vcpu_count_ + vcpu + kReservedPages;
  if (page >= region0_end_page_) page += hole_pages_;
  uint8_t* bytes = page_at(uint64_t{page} * kGuestPageSize);
  uint32_t csum = p.checksum;
  for (size_t w = 0; w < kGuestPageSize / 4; ++w) csum = ((csum << 5) | (csum >> 27)) + Load32(bytes + 4 * w);
  p.checksum = csum;
  p.step += 1;
  if (p.step % config_.write_every == 0) {
    Store32(bytes, p.step);
    Store32(bytes + 4, p.checksum);
  }
  return p;
}

Result<std::vector<VcpuProgress>> GuestWalk::Replay(std::vector<uint8_t>& image, const std::vector<VcpuProgress>& from,
                                                    const std::vector<uint32_t>& to_steps) const {
  if (from.size() != vcpu_count_ || to_steps.size() != vcpu_count_) {
    return Status::InvalidArgument("replay needs one start and one target per vCPU");
  }
  if (image.size() < layout_.total_size()) return Status::InvalidArgument("memory image is smaller than the layout");
  auto page_at = [&](uint64_t gpa) -> uint8_t* {
    auto off = layout_.FileOffsetOf(gpa);
    return off ? image.data() + *off : nullptr;
  };
  std::vector<VcpuProgress> out;
  for (uint32_t v = 0; v < vcpu_count_; ++v) {
    if (to_steps[v] < from[v].step) return Status::InvalidArgument("replay target lies before the start");
    VcpuProgress p = from[v];
    while (p.step < to_steps[v]) p = Step(v, p, page_at);
    out.push_back(p);
  }
  return out;
}

}  // namespace uffdpager::vmm
