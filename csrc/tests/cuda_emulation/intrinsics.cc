// What the synchronising intrinsics compute once their threads have met (the
// scheduler, cuda_emulation.cc, calls these with every participant's slot),
// and the inline PTX of the kernels.  transform.py turns every asm statement
// into a ptx() call that keeps the instruction text and operands; the text is
// decoded once per call site and executed here:
//   cp.async.{ca,cg}.shared.global [dst], [src], cp-size{, src-size};
//   cp.async.commit_group;   cp.async.wait_group N;   cp.async.wait_all;
//   ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16 {d..}, [addr];
//   mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32
//       {d0..d3}, {a0..a3}, {b0, b1}, {c0..c3};
// Fragment layouts are those of the PTX ISA; alignment and shared-memory
// bounds are checked.  Any other instruction aborts.
#include <cctype>
#include <string>
#include <unordered_map>

#include "cuda_emulation.h"

namespace cuda_emulation {
namespace {

struct Arg {
  int reg = -1;      // %N, or -1 for an immediate
  long long imm = 0;
};
struct Instruction {
  std::string opcode, text;
  std::vector<std::vector<Arg>> operands;  // a {list} gives several args; [addr] and plain operands one
};

// s without the leading / trailing characters in `strip`.
std::string trim(const std::string& s, const char* strip = " \t\n;{}[]") {
  const size_t b = s.find_first_not_of(strip), e = s.find_last_not_of(strip);
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

Arg parse_arg(const std::string& text, const char* code) {
  const std::string t = trim(text);
  Arg a;
  if (!t.empty() && t[0] == '%' && t.size() > 1 && std::isdigit((unsigned char)t[1])) a.reg = std::stoi(t.substr(1));
  else if (!t.empty() && std::isdigit((unsigned char)t[0])) a.imm = std::stoll(t, nullptr, 0);
  else fatal("PTX operand '%s' not emulated in: %s", t.c_str(), code);
  return a;
}

const Instruction& decode(const char* code) {
  static std::unordered_map<const char*, Instruction> cache;  // keyed by the literal's address
  auto it = cache.find(code);
  if (it != cache.end()) return it->second;
  Instruction in;
  in.text = trim(code, " \t\n;");
  if (in.text.find(';') != std::string::npos) fatal("one PTX instruction per asm statement is emulated: %s", code);
  const size_t sp = in.text.find_first_of(" \t\n");
  in.opcode = in.text.substr(0, sp);
  std::string rest = sp == std::string::npos ? "" : in.text.substr(sp);
  std::vector<std::string> items;
  int depth = 0;
  std::string cur;
  for (char c : rest + ",") {
    depth += (c == '{') - (c == '}');
    if (c == ',' && depth == 0) {
      if (!trim(cur).empty()) items.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  for (const std::string& item : items) {
    std::vector<Arg> list;
    size_t b = 0;
    for (size_t e; (e = item.find(',', b)) != std::string::npos; b = e + 1)
      list.push_back(parse_arg(item.substr(b, e - b), code));
    list.push_back(parse_arg(item.substr(b), code));
    in.operands.push_back(list);
  }
  return cache.emplace(code, std::move(in)).first->second;
}

struct Operands {
  const PtxOperand* ops;
  size_t n;
  const char* code;
  uint64_t get(const Arg& a) const {
    if (a.reg < 0) return uint64_t(a.imm);
    if (size_t(a.reg) >= n) fatal("PTX operand %%%d out of range in: %s", a.reg, code);
    return ops[a.reg].value;
  }
  void set(const Arg& a, uint64_t bits) const {
    if (a.reg < 0 || size_t(a.reg) >= n || !ops[a.reg].output)
      fatal("PTX result %%%d is not an output in: %s", a.reg, code);
    std::memcpy(ops[a.reg].ref, &bits, ops[a.reg].size);
  }
};

unsigned char* shared_at(uint64_t offset, uint64_t bytes, uint64_t align, const char* what) {
  if (offset % align != 0 || offset + bytes > shared_size)
    fatal("%s: shared address %llu (+%llu bytes) misaligned or outside the %zu bytes of shared memory", what,
          (unsigned long long)offset, (unsigned long long)bytes, shared_size);
  return shared_base + offset;
}

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

void retire_groups(size_t keep) {  // cp.async.wait_group keep
  AsyncCopies& q = async_copies();
  if (q.group_ends.size() <= keep) return;
  const size_t retire = q.group_ends.size() - keep, end = q.group_ends[retire - 1];
  for (size_t i = 0; i < end; ++i) {
    const AsyncCopy& c = q.pending[i];
    std::memcpy(c.dst, c.src, c.src_size);
    std::memset(c.dst + c.src_size, 0, c.size - c.src_size);
  }
  q.pending.erase(q.pending.begin(), q.pending.begin() + long(end));
  q.group_ends.erase(q.group_ends.begin(), q.group_ends.begin() + long(retire));
  for (size_t& g : q.group_ends) g -= end;
}

void ldmatrix_fn(Slot* lanes, int) {
  const int count = int(lanes[0].in[1]);
  const bool trans = lanes[0].in[2] != 0;
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int m = 0; m < count; ++m) {
      auto elem = [&](int row, int col) {  // row r of matrix m starts at the address of lane 8m + r
        uint16_t v;
        std::memcpy(&v, shared_at(lanes[8 * m + row].in[0], 16, 16, "ldmatrix") + 2 * col, 2);
        return uint64_t(v);
      };
      lanes[l].out[m] = trans ? elem(2 * t, g) | elem(2 * t + 1, g) << 16 : elem(g, 2 * t) | elem(g, 2 * t + 1) << 16;
    }
  }
}

float half_value(uint32_t bits, bool bf16) {
  return bf16 ? __uint_as_float(bits << 16) : __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}

void mma_fn(Slot* lanes, int) {
  const bool bf16 = std::strstr(lanes[0].op, ".bf16") != nullptr;
  float a[16][16], b[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 8; ++i) {  // a_i: row g (+8 for i % 4 >= 2), column 2t + i % 2 (+8 for i >= 4)
      const uint32_t reg = uint32_t(lanes[l].in[i / 2]) >> (16 * (i % 2));
      a[g + 8 * ((i / 2) % 2)][2 * t + i % 2 + 8 * (i / 4)] = half_value(reg & 0xffff, bf16);
    }
    for (int i = 0; i < 4; ++i) {  // b_i: row 2t + i % 2 (+8 for i >= 2), column g
      const uint32_t reg = uint32_t(lanes[l].in[4 + i / 2]) >> (16 * (i % 2));
      b[2 * t + i % 2 + 8 * (i / 2)][g] = half_value(reg & 0xffff, bf16);
    }
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) {  // c_i, d_i: row g (+8 for i >= 2), column 2t + i % 2
      const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
      float s = 0.f;
      for (int k = 0; k < 16; ++k) s += a[row][k] * b[k][col];
      lanes[l].out[i] = to_bits(from_bits<float>(lanes[l].in[6 + i]) + s);
    }
  }
}

}  // namespace

void shuffle_fn(Slot* lanes, int) {
  for (int l = 0; l < 32; ++l) {
    const int a = int(lanes[l].in[1]);
    int src = l;
    switch (ShuffleMode(lanes[l].in[2])) {
      case kIdx: src = a & 31; break;
      case kUp: src = l - a >= 0 ? l - a : l; break;
      case kDown: src = l + a < 32 ? l + a : l; break;
      case kXor: src = (l ^ a) & 31; break;
    }
    lanes[l].out[0] = lanes[src].in[0];
  }
}
void ballot_fn(Slot* lanes, int) {
  unsigned bits = 0;
  for (int l = 0; l < 32; ++l) bits |= unsigned(lanes[l].in[0] != 0) << l;
  for (int l = 0; l < 32; ++l) lanes[l].out[0] = bits;
}
void match_any_fn(Slot* lanes, int) {
  for (int l = 0; l < 32; ++l) {
    unsigned bits = 0;
    for (int m = 0; m < 32; ++m) bits |= unsigned(lanes[m].in[0] == lanes[l].in[0]) << m;
    lanes[l].out[0] = bits;
  }
}
void reduce_add_fn(Slot* lanes, int) {  // lane groups: every lane of a mask passes that mask
  for (int l = 0; l < 32; ++l) {
    const unsigned mask = lanes[l].mask;
    if (!(mask >> l & 1)) fatal("__reduce_add_sync: lane %d is not in its mask 0x%08x", l, mask);
    uint32_t sum = 0;
    for (int m = 0; m < 32; ++m) {
      if (!(mask >> m & 1)) continue;
      if (lanes[m].mask != mask)
        fatal("__reduce_add_sync: lane %d passes mask 0x%08x, lane %d 0x%08x", l, mask, m, lanes[m].mask);
      sum += uint32_t(lanes[m].in[0]);
    }
    lanes[l].out[0] = sum;
  }
}
void block_or_fn(Slot* threads, int n) {
  uint64_t any = 0;
  for (int i = 0; i < n; ++i) any |= threads[i].in[0];  // exited threads have cleared slots
  for (int i = 0; i < n; ++i) threads[i].out[0] = any;
}

void ptx(const char* code, std::initializer_list<PtxOperand> operands) {
  const Instruction& in = decode(code);
  const Operands ops{operands.begin(), operands.size(), code};
  for (const PtxOperand& o : operands)
    if (!(o.constraint == 'n' || ((o.constraint == 'r' || o.constraint == 'f') && o.size == 4) ||
          (o.constraint == 'l' && o.size == 8)))
      fatal("PTX operand constraint '%c' does not fit a %zu-byte value in: %s", o.constraint, o.size, code);
  const std::string& op = in.opcode;
  auto operand_count = [&](size_t n) {
    if (in.operands.size() != n)
      fatal("PTX instruction with %zu operands (expected %zu): %s", in.operands.size(), n, code);
  };
  if (op.rfind("cp.async.commit_group", 0) == 0) {
    async_copies().group_ends.push_back(async_copies().pending.size());
  } else if (op.rfind("cp.async.wait_group", 0) == 0) {
    operand_count(1);
    retire_groups(size_t(ops.get(in.operands[0][0])));
  } else if (op.rfind("cp.async.wait_all", 0) == 0) {
    async_copies().group_ends.push_back(async_copies().pending.size());
    retire_groups(0);
  } else if (op == "cp.async.cg.shared.global" || op == "cp.async.ca.shared.global") {
    if (in.operands.size() != 3 && in.operands.size() != 4) operand_count(4);
    const uint32_t size = uint32_t(ops.get(in.operands[2][0]));
    const uint32_t src_size = in.operands.size() == 4 ? uint32_t(ops.get(in.operands[3][0])) : size;
    const uint64_t src = ops.get(in.operands[1][0]);
    if ((size != 4 && size != 8 && size != 16) || (has(op, ".cg") && size != 16) || src_size > size || src % size)
      fatal("cp.async with cp-size %u, src-size %u, source %p: %s", size, src_size, (void*)src, code);
    unsigned char* dst = shared_at(ops.get(in.operands[0][0]), size, size, "cp.async");
    async_copies().pending.push_back({dst, reinterpret_cast<const unsigned char*>(src), size, src_size});
  } else if (op.rfind("ldmatrix.sync.aligned.m8n8.", 0) == 0 && has(op, ".shared.b16")) {
    operand_count(2);
    const int count = has(op, ".x4") ? 4 : has(op, ".x2") ? 2 : has(op, ".x1") ? 1 : 0;
    if (count == 0 || in.operands[0].size() != size_t(count)) fatal("ldmatrix form not emulated: %s", code);
    Slot& s = slot(op.c_str(), ~0u);
    s.in[0] = ops.get(in.operands[1][0]);
    s.in[1] = uint64_t(count);
    s.in[2] = has(op, ".trans");
    warp_collective(s, ldmatrix_fn);
    for (int m = 0; m < count; ++m) ops.set(in.operands[0][m], s.out[m]);
  } else if (op == "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" ||
             op == "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32") {
    operand_count(4);
    const auto& d = in.operands[0];
    const auto& a = in.operands[1];
    const auto& b = in.operands[2];
    const auto& c = in.operands[3];
    if (d.size() != 4 || a.size() != 4 || b.size() != 2 || c.size() != 4) fatal("mma operand lists: %s", code);
    Slot& s = slot(op.c_str(), ~0u);
    for (int i = 0; i < 4; ++i) s.in[i] = ops.get(a[i]), s.in[6 + i] = ops.get(c[i]);
    s.in[4] = ops.get(b[0]);
    s.in[5] = ops.get(b[1]);
    warp_collective(s, mma_fn);
    for (int i = 0; i < 4; ++i) ops.set(d[i], s.out[i]);
  } else {
    fatal("PTX instruction not emulated: %s", code);
  }
}

}  // namespace cuda_emulation
