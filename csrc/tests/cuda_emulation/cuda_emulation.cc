// Scheduler of the CUDA emulation (see cuda_emulation.h): one fiber (ucontext)
// per CUDA thread, block barriers, warp collectives, launches, and the few
// CUDA runtime calls the kernels make.
#include "cuda_emulation.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>

namespace cuda_emulation {

uint3 thread_idx, block_idx;
dim3 block_dim, grid_dim;
unsigned char* shared_base = nullptr;
size_t shared_size = 0;

namespace {

constexpr size_t kStackBytes = 256 * 1024;  // per fiber, plus a guard page
constexpr size_t kMaxDynamicShared = 227 * 1024;  // sm_90 opt-in limit
constexpr int kArchMajor = CUDA_EMULATION_ARCH / 100, kArchMinor = CUDA_EMULATION_ARCH / 10 % 10;

enum class Wait { kRunning, kWarp, kBlock, kExited };

struct Thread {
  ucontext_t context;
  Wait wait = Wait::kRunning;
  AsyncCopies copies;
};

// The running block.
struct Block {
  std::vector<Thread> threads;
  std::vector<Slot> slots;     // per thread; a warp's lanes are contiguous
  std::vector<int> at_warp;    // lanes waiting at a collective, per warp
  std::vector<int> runnable;
  int live = 0, at_barrier = 0, current = -1;
  CollectiveFn barrier_fn = nullptr;  // of the block barrier being gathered
  ucontext_t scheduler;
};

Block* block = nullptr;
const LaunchConfig* config = nullptr;
const std::function<void()>* body = nullptr;
std::vector<char*> stacks;   // reused by every launch
uint64_t seed = 0x9e3779b97f4a7c15ull, rng = 0;
cudaError_t last_error = cudaSuccess;
std::map<const void*, int> smem_optin;  // cudaFuncAttributeMaxDynamicSharedMemorySize per kernel
struct SiteStats {
  long launches = 0, blocks = 0;
  std::set<std::string> variants;
};
std::map<std::string, SiteStats> sites;

uint64_t next_random() {  // splitmix64
  uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

char* stack(size_t i) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  while (stacks.size() <= i) {
    void* m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) fatal("cannot map a fiber stack");
    mprotect(m, page, PROT_NONE);  // overflow faults instead of corrupting the next stack
    stacks.push_back(static_cast<char*>(m) + page);
  }
  return stacks[i];
}

void suspend(Wait wait) {
  Thread& t = block->threads[block->current];
  t.wait = wait;
  swapcontext(&t.context, &block->scheduler);
}

void make_runnable(int first, int count, Wait from) {
  for (int i = first; i < first + count; ++i)
    if (block->threads[i].wait == from) {
      block->threads[i].wait = Wait::kRunning;
      if (i != block->current) block->runnable.push_back(i);
    }
}

// Releases the block barrier once every live thread has arrived.
bool try_release_barrier() {
  Block& b = *block;
  if (b.at_barrier == 0 || b.at_barrier != b.live) return false;
  const char* op = nullptr;
  for (size_t i = 0; i < b.threads.size(); ++i) {
    const Wait w = b.threads[i].wait;
    if (w != Wait::kBlock && !(w == Wait::kRunning && int(i) == b.current)) continue;
    if (op && std::strcmp(op, b.slots[i].op) != 0)
      fatal("threads meet at different block barriers: %s and, in thread %d, %s", op, int(i), b.slots[i].op);
    op = b.slots[i].op;
  }
  b.at_barrier = 0;
  if (b.barrier_fn) b.barrier_fn(b.slots.data(), int(b.slots.size()));
  make_runnable(0, int(b.threads.size()), Wait::kBlock);
  return true;
}

void thread_entry() {
  (*body)();
  Block& b = *block;
  Thread& t = b.threads[b.current];
  t.copies = AsyncCopies();  // copies never waited for are dropped
  b.slots[b.current] = Slot();
  t.wait = Wait::kExited;
  --b.live;
  try_release_barrier();
  swapcontext(&t.context, &b.scheduler);
}

[[noreturn]] void deadlock() {
  std::string why;
  Block& b = *block;
  for (size_t w = 0; w * 32 < b.threads.size(); ++w) {
    std::map<std::string, int> where;
    for (size_t i = w * 32; i < w * 32 + 32; ++i) {
      const Wait s = b.threads[i].wait;
      if (s == Wait::kExited) where["exited"]++;
      else where["at " + std::string(b.slots[i].op) + (s == Wait::kBlock ? " (block)" : "")]++;
    }
    why += "\n  warp " + std::to_string(w) + ":";
    for (auto& [what, n] : where) why += " " + std::to_string(n) + " " + what + ";";
  }
  b.current = -1;
  fatal("deadlock: the waiting threads can never be released%s", why.c_str());
}

void init_context(ucontext_t& c, char* stack_base) {
  getcontext(&c);
  c.uc_stack.ss_sp = stack_base;
  c.uc_stack.ss_size = kStackBytes;
  c.uc_link = nullptr;
  makecontext(&c, thread_entry, 0);
}

void run_block(unsigned index, unsigned nthreads) {
  Block b;
  block = &b;
  block_idx = make_uint3(index, 0, 0);
  b.threads.resize(nthreads);
  b.slots.resize(nthreads);
  b.at_warp.assign(nthreads / 32, 0);
  b.live = int(nthreads);
  std::memset(shared_base, 0xff, shared_size);
  for (unsigned i = 0; i < nthreads; ++i) {
    init_context(b.threads[i].context, stack(i));
    b.runnable.push_back(int(i));
  }
  while (b.live > 0) {
    if (b.runnable.empty()) deadlock();
    const size_t k = next_random() % b.runnable.size();
    b.current = b.runnable[k];
    b.runnable[k] = b.runnable.back();
    b.runnable.pop_back();
    thread_idx = make_uint3(unsigned(b.current), 0, 0);
    swapcontext(&b.scheduler, &b.threads[b.current].context);
  }
  block = nullptr;
}

}  // namespace

void fatal(const char* fmt, ...) {
  std::fflush(stdout);
  std::fprintf(stderr, "cuda emulation error: ");
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
  if (config) {
    std::fprintf(stderr, "\n  in the launch at %s:%d (%s), block %u", config->file, config->line, config->function,
                 block_idx.x);
    if (block && block->current >= 0) std::fprintf(stderr, ", thread %d", block->current);
  }
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
  std::_Exit(3);
}

Slot& slot(const char* op, unsigned mask, bool grouped) {
  if (!block) fatal("%s called outside a kernel", op);
  if (!grouped && mask != 0xffffffffu) fatal("%s: mask 0x%08x (only the full mask is emulated)", op, mask);
  Slot& s = block->slots[block->current];
  s.op = op;
  s.mask = mask;
  return s;
}

void warp_collective(Slot& s, CollectiveFn fn) {
  Block& b = *block;
  const int warp = b.current / 32;
  if (++b.at_warp[warp] < 32) {
    suspend(Wait::kWarp);
    return;
  }
  Slot* lanes = &b.slots[32 * warp];
  for (int l = 0; l < 32; ++l)
    if (std::strcmp(lanes[l].op, s.op) != 0)
      fatal("lanes of warp %d meet at different collectives: lane %d at %s, lane %d at %s", warp, l, lanes[l].op,
            b.current % 32, s.op);
  b.at_warp[warp] = 0;
  if (fn) fn(lanes, 32);
  make_runnable(32 * warp, 32, Wait::kWarp);
}

void block_barrier(Slot&, CollectiveFn fn) {  // the slot holds the op (and the inputs of fn)
  block->barrier_fn = fn;
  ++block->at_barrier;
  if (!try_release_barrier()) suspend(Wait::kBlock);
}

AsyncCopies& async_copies() {
  if (!block) fatal("cp.async outside a kernel");
  return block->threads[block->current].copies;
}

void launch(const void* kernel, const LaunchConfig& cfg, const std::function<void()>& fn) {
  if (block) fatal("a kernel launch from device code is not emulated");
  SiteStats& st = sites[std::string(cfg.file) + ":" + std::to_string(cfg.line)];
  const char* with = std::strstr(cfg.function, "[with ");
  st.variants.insert(with ? with : cfg.function);
  const unsigned nthreads = cfg.block.x * cfg.block.y * cfg.block.z;
  if (cfg.grid.x == 0 || cfg.grid.y == 0 || cfg.grid.z == 0 || nthreads == 0 || nthreads > 1024) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  auto optin = smem_optin.find(kernel);
  if (cfg.smem > 48 * 1024 && (optin == smem_optin.end() || cfg.smem > size_t(optin->second))) {
    last_error = cudaErrorInvalidValue;  // more than 48 KB needs cudaFuncSetAttribute first
    return;
  }
  if (cfg.grid.y * cfg.grid.z != 1 || cfg.block.y * cfg.block.z != 1 || nthreads % 32 != 0)
    fatal("only one-dimensional launches of whole warps are emulated");
  ++st.launches;
  st.blocks += cfg.grid.x;
  config = &cfg;
  body = &fn;
  grid_dim = cfg.grid;
  block_dim = cfg.block;
  rng = seed ^ (uint64_t(st.launches) << 32) ^ uint64_t(cfg.line);
  shared_size = cfg.smem;
  shared_base = static_cast<unsigned char*>(std::aligned_alloc(128, (cfg.smem + 128) & ~size_t(127)));
  for (unsigned b = 0; b < cfg.grid.x; ++b) run_block(b, nthreads);
  std::free(shared_base);
  shared_base = nullptr;
  config = nullptr;
}

void set_schedule_seed(uint64_t s) { seed = s * 0x9e3779b97f4a7c15ull + 1; }

void print_launch_summary() {
  for (auto& [site, st] : sites) {
    std::printf("launch-site %s launches %ld blocks %ld\n", site.c_str(), st.launches, st.blocks);
    for (auto& v : st.variants) std::printf("    %s\n", v.c_str());
  }
}

}  // namespace cuda_emulation

// ---- the CUDA runtime calls made by the kernels' host code ---------------------
using cuda_emulation::last_error;

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument (emulated)";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument (emulated)";
    default: return "unknown error (emulated)";
  }
}
cudaError_t cudaGetDevice(int* device) { return *device = 0, cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = cuda_emulation::kArchMajor; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = cuda_emulation::kArchMinor; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(cuda_emulation::kMaxDynamicShared); return cudaSuccess;
    default: cuda_emulation::fatal("cudaDeviceGetAttribute(%d) is not emulated", int(attr));
  }
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
    cuda_emulation::fatal("cudaFuncSetAttribute(%d) is not emulated", int(attr));
  if (value < 0 || size_t(value) > cuda_emulation::kMaxDynamicShared) return cudaErrorInvalidValue;
  cuda_emulation::smem_optin[func] = value;
  return cudaSuccess;
}
