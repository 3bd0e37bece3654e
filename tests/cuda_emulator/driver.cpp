// A CPU stand-in for the CUDA driver (libcuda), for the tests of cnnlab's CUDA backend on
// machines without a GPU (see emulator.md). It implements the driver calls cudarc makes for
// cnnlab, and runs the real kernels of src/core/cuda/kernels/ (compiled as C++ beside this
// file: program.cu and registry.inc are written by tests/cuda_emulator/mod.rs) one emulated
// thread at a time, at launch, on the calling thread (one launch at a time in the process).
//
// It checks what a GPU checks, and a little more: launch shapes, kernel argument counts,
// copies within allocations, a current context, memory limits (16 GiB), the PTX holding
// each kernel that is looked up. Fresh allocations are filled with NaN bytes and end at a
// guard page, so reads of unset memory and overruns past an allocation show up.
// A launch runs twice, its blocks and threads first to last and last to first, and must leave
// the same bytes both ways (the order check, below): a race between its threads shows.
// Each allocation's uses are kept by stream, and an op that conflicts with another stream's
// that nothing orders before it ends the process (the stream check, below).
// What it cannot show: a GPU's timing, and the hardware's own arithmetic (glibc's expf/erff
// stand in for CUDA's).
#include "device.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#define API extern "C" __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void* CUcontext;
typedef void* CUstream;
typedef void* CUmodule;
typedef void* CUfunction;
typedef void* CUevent;

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

static void fatal(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "CUDA emulator: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

// ---------------------------------------------------------------- the kernels

namespace emu {
dim3 thread_idx, block_idx, block_dim, grid_dim;
}

#include "program.cu"

struct Pointer {
    int position;
    uintptr_t address;
    bool writes;
};

struct Kernel {
    const char* name;
    void (*invoke)(void** params);
    int arity;
    // uses __syncthreads, warp shuffles or the tensor-core instruction (directly or through a
    // __device__ function): its threads run as fibers; the others run one after another on the
    // caller's stack
    bool barriers;
    // its pointer arguments: the order checks copy what they point into, and the stream check
    // counts a pointer to const as a read, any other as a write
    void (*pointers)(void** params, std::vector<Pointer>* out);
};

template <class... A>
constexpr int arity_of(void (*)(A...)) {
    return sizeof...(A);
}
template <class T>
static T arg(void* p) {
    T v;
    memcpy(&v, p, sizeof(T));  // the launcher's words need not be aligned for T
    return v;
}
template <class... A, size_t... I>
static void call_with(void (*k)(A...), void** p, std::index_sequence<I...>) {
    k(arg<typename std::decay<A>::type>(p[I])...);
}
template <class... A>
static void invoke_with(void (*k)(A...), void** p) {
    call_with(k, p, std::index_sequence_for<A...>{});
}
template <class T>
static void add_pointer(void* p, int position, std::vector<Pointer>* out) {
    if constexpr (std::is_pointer<T>::value)
        out->push_back(Pointer{position, (uintptr_t)arg<T>(p), !std::is_const<std::remove_pointer_t<T>>::value});
}
template <class... A, size_t... I>
static void pointers_in(void (*)(A...), void** p, std::vector<Pointer>* out, std::index_sequence<I...>) {
    (add_pointer<typename std::decay<A>::type>(p[I], I, out), ...);
}
template <class... A>
static void pointers_with(void (*k)(A...), void** p, std::vector<Pointer>* out) {
    pointers_in(k, p, out, std::index_sequence_for<A...>{});
}

#define KERNEL(name, barriers)                                                                       \
    {#name, [](void** p) { invoke_with(name, p); }, arity_of(name), barriers,                       \
     [](void** p, std::vector<Pointer>* out) { pointers_with(name, p, out); }},
static const Kernel KERNELS[] = {
#include "registry.inc"
};

// ---------------------------------------------------------------- fibers

#if defined(__x86_64__)
// Saves the callee-saved registers on the current stack, stores the stack pointer in *save
// and continues on the stack `to` (saved by an earlier switch, or made by new_fiber_stack).
// The SSE and x87 control words are not switched: no kernel changes them.
extern "C" void emu_switch(void** save, void* to);
asm(R"(
.text
.globl emu_switch
.hidden emu_switch
.type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch,.-emu_switch
.section .note.GNU-stack,"",@progbits
.text
)");
#else
#error "the CUDA emulator's fibers are written for x86-64"
#endif

enum State { RUNNABLE, AT_WARP_BARRIER, AT_BLOCK_BARRIER, DONE };

struct Fiber {
    void* sp;
    State state;
    dim3 tid;
};

static const size_t STACK = 16 << 10;  // kernels call little (expf, the shuffles)

struct Block {
    const Kernel* kernel = nullptr;
    void** params = nullptr;
    std::vector<Fiber> fibers;
    std::vector<uint64_t> slots[2];  // each thread's shuffle value, by the shuffle's parity
    std::vector<float> wide[2];      // each thread's values of a warp-wide exchange (8 a thread), likewise
    std::vector<unsigned> shuffles;  // shuffles each thread has made
    void* scheduler_sp = nullptr;
    int current = -1;  // the running fiber; -1: threads run without fibers
};

// the running launch (one at a time: `launches` below)
static Block block;
// The order the running launch takes its blocks, its warps and the threads of each warp in:
// first to last, or last to first (the order check, below, runs a launch both ways).
static bool reversed = false;
// blocks begun since the process started: the block a __shared__ array was last filled for
static uint64_t blocks_begun = 0;
static std::map<void*, uint64_t> shared_filled;

void emu::shared_fill(void* array, size_t bytes) {
    uint64_t& filled = shared_filled[array];
    if (filled == blocks_begun) return;
    memset(array, 0xff, bytes);
    filled = blocks_begun;
}
static std::vector<char*> stacks;  // one per fiber, kept for the process's life
static std::mutex launches;

static void yield_from(int me, void** save);

static void fiber_main() {
    Block& b = block;
    b.kernel->invoke(b.params);
    int me = b.current;
    b.fibers[me].state = DONE;
    void* dead;
    yield_from(me, &dead);
    fatal("a finished thread was resumed");
}

static void* new_fiber_stack(int i) {
    while ((int)stacks.size() <= i) {
        // a guard page below each stack turns an overflow into a fault
        char* m = (char*)mmap(nullptr, STACK + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                              -1, 0);
        if (m == MAP_FAILED) fatal("no memory for fiber stacks");
        mprotect(m, 4096, PROT_NONE);
        stacks.push_back(m + 4096);
    }
    uintptr_t top = ((uintptr_t)stacks[i] + STACK) & ~(uintptr_t)15;
    uint64_t* sp = (uint64_t*)top;
    *--sp = 0;                      // fiber_main's return address: it never returns
    *--sp = (uint64_t)&fiber_main;  // where emu_switch's `ret` goes
    for (int r = 0; r < 6; r++) *--sp = 0;  // the callee-saved registers emu_switch pops
    return sp;
}

// Continues thread i of the running block, saving the current stack pointer in *save (if i
// is the current thread, it just goes on).
static void switch_to(int i, void** save) {
    Block& b = block;
    if (save == &b.fibers[i].sp) return;
    b.current = i;
    emu::thread_idx = b.fibers[i].tid;
    emu_switch(save, b.fibers[i].sp);
}

// Thread `me` has stopped (at a barrier, or finished): continue with the next runnable
// thread of its warp; if there is none and the warp's live threads all wait at a shuffle,
// release them and continue with the first; else (all finished or at __syncthreads) return
// to the scheduler. Threads switch to one another directly, one switch per thread a shuffle.
static void yield_from(int me, void** save) {
    Block& b = block;
    int w = me & ~31, end = std::min(w + 32, (int)b.fibers.size());
    // "next" and "first" in the launch's order
    if (!reversed) {
        for (int i = me + 1; i < end; i++)
            if (b.fibers[i].state == RUNNABLE) return switch_to(i, save);
    } else {
        for (int i = me - 1; i >= w; i--)
            if (b.fibers[i].state == RUNNABLE) return switch_to(i, save);
    }
    int live = 0, at_warp = 0, first = -1;
    for (int i = w; i < end; i++) {
        live += b.fibers[i].state != DONE;
        if (b.fibers[i].state == AT_WARP_BARRIER) {
            at_warp++;
            if (first < 0 || reversed) first = i;
        }
    }
    if (at_warp > 0) {
        if (at_warp != live)
            fatal("kernel %s: some threads of a warp shuffle while others wait at __syncthreads or have finished",
                  b.kernel->name);
        for (int i = w; i < end; i++)
            if (b.fibers[i].state == AT_WARP_BARRIER) b.fibers[i].state = RUNNABLE;
        return switch_to(first, save);
    }
    b.current = -1;
    emu_switch(save, b.scheduler_sp);
}

static void wait_at(State s) {
    Block& b = block;
    if (b.current < 0)
        fatal("kernel %s reached a barrier, but its threads do not run as fibers (tests/cuda_emulator/mod.rs finds "
              "the kernels that need them)",
              b.kernel->name);
    int me = b.current;
    b.fibers[me].state = s;
    yield_from(me, &b.fibers[me].sp);
}

void emu::sync_block() {
    wait_at(AT_BLOCK_BARRIER);
}

uint64_t emu::shfl_xor_bits(uint64_t bits, int mask) {
    Block& b = block;
    int me = b.current;
    if (me < 0) wait_at(AT_WARP_BARRIER);  // reports the missing fibers
    // alternate slots: a lane writes slot p again only after the next barrier, which every
    // lane reaches after reading slot p, so one barrier a shuffle suffices
    std::vector<uint64_t>& slot = b.slots[b.shuffles[me]++ & 1];
    slot[me] = bits;
    wait_at(AT_WARP_BARRIER);
    int partner = (me & ~31) | ((me & 31) ^ (mask & 31));
    // the partner made this shuffle (it may since have gone on, or finished)
    if (partner >= (int)b.fibers.size() || b.shuffles[partner] < b.shuffles[me])
        fatal("kernel %s: thread %d shuffles with thread %d, which does not take part", b.kernel->name, me, partner);
    return slot[partner];
}

void emu::warp_gather(const float* mine, int count, float* all) {
    Block& b = block;
    int me = b.current;
    if (me < 0) wait_at(AT_WARP_BARRIER);  // reports the missing fibers
    if (count > 8) fatal("kernel %s: a warp-wide exchange of %d values a lane", b.kernel->name, count);
    // alternate slots, as the shuffles' (one count of warp-wide steps for both)
    std::vector<float>& slot = b.wide[b.shuffles[me]++ & 1];
    memcpy(&slot[8 * me], mine, count * sizeof(float));
    wait_at(AT_WARP_BARRIER);
    int w = me & ~31;
    for (int l = 0; l < 32; l++) {
        int p = w + l;
        if (p >= (int)b.fibers.size() || b.shuffles[p] < b.shuffles[me])
            fatal("kernel %s: thread %d runs a warp-wide instruction without thread %d", b.kernel->name, me, p);
        memcpy(all + l * count, &slot[8 * p], count * sizeof(float));
    }
}

int emu::lane() {
    return block.current & 31;
}

static void run_fibers(int n) {
    Block& b = block;
    b.fibers.resize(n);
    b.slots[0].assign(n, 0);
    b.slots[1].assign(n, 0);
    b.wide[0].assign(8 * n, 0.0f);
    b.wide[1].assign(8 * n, 0.0f);
    b.shuffles.assign(n, 0);
    for (int i = 0; i < n; i++) {
        unsigned bx = emu::block_dim.x, by = emu::block_dim.y;
        b.fibers[i] = Fiber{new_fiber_stack(i), RUNNABLE, dim3{i % bx, (i / bx) % by, i / (bx * by)}};
    }
    // warp by warp (the stacks of one warp stay in cache), then the block's barrier
    const int warps = (n + 31) / 32;
    for (;;) {
        for (int k = 0; k < warps; k++) {
            const int w = 32 * (reversed ? warps - 1 - k : k), end = std::min(w + 32, n);
            // runs the warp until its threads have finished or wait at __syncthreads, from its
            // first runnable thread in the launch's order
            int first = -1;
            for (int i = w; i < end; i++)
                if (b.fibers[i].state == RUNNABLE && (first < 0 || reversed)) first = i;
            if (first >= 0) {
                b.current = first;
                emu::thread_idx = b.fibers[first].tid;
                emu_switch(&b.scheduler_sp, b.fibers[first].sp);
            }
        }
        int live = 0;
        for (auto& f : b.fibers) live += f.state != DONE;
        if (live == 0) return;
        for (auto& f : b.fibers) f.state = f.state == AT_BLOCK_BARRIER ? RUNNABLE : f.state;
    }
}

static void run_grid(const Kernel* k, void** params, dim3 grid, dim3 threads) {
    Block& b = block;
    b.kernel = k;
    b.params = params;
    b.current = -1;
    emu::grid_dim = grid;
    emu::block_dim = threads;
    const int n = threads.x * threads.y * threads.z;
    const uint64_t blocks = (uint64_t)grid.x * grid.y * grid.z;
    for (uint64_t i = 0; i < blocks; i++) {
        const uint64_t at = reversed ? blocks - 1 - i : i;
        emu::block_idx = dim3{unsigned(at % grid.x), unsigned(at / grid.x % grid.y), unsigned(at / grid.x / grid.y)};
        blocks_begun++;
        if (k->barriers) {
            run_fibers(n);
            continue;
        }
        for (int t = 0; t < n; t++) {
            const int j = reversed ? n - 1 - t : t;
            emu::thread_idx = dim3{j % threads.x, j / threads.x % threads.y, j / (threads.x * threads.y)};
            k->invoke(params);
        }
    }
}

// ---------------------------------------------------------------- memory

// The emulated GPU's memory: 16 GiB, or CNNLAB_EMULATOR_MEMORY bytes (the tests of runs that
// run out of memory beside others). With CNNLAB_EMULATOR_PEAK set, the most ever in use is
// printed to stderr when the process exits.
static size_t total_memory() {
    static const size_t total = [] {
        const char* v = getenv("CNNLAB_EMULATOR_MEMORY");
        size_t n = v ? strtoull(v, nullptr, 10) : 0;
        return n > 0 ? n : 16ull << 30;
    }();
    return total;
}
// The largest allocation that succeeds: any size, or CNNLAB_EMULATOR_MAX_ALLOCATION bytes (a
// GPU whose free memory is in pieces: the tests of scratch that does not fit).
static size_t max_allocation() {
    static const size_t most = [] {
        const char* v = getenv("CNNLAB_EMULATOR_MAX_ALLOCATION");
        size_t n = v ? strtoull(v, nullptr, 10) : 0;
        return n > 0 ? n : SIZE_MAX;
    }();
    return most;
}
static size_t peak = 0;
static struct PeakReport {
    ~PeakReport() {
        if (getenv("CNNLAB_EMULATOR_PEAK")) fprintf(stderr, "emulator: peak device memory %zu bytes\n", peak);
    }
} peak_report;
static const size_t PAGE = 4096;

// What the process asked of the driver, printed to stderr at exit with CNNLAB_EMULATOR_CALLS
// set (a_training_step_stays_on_the_gpu counts a run's steps with it): kernel launches; waits,
// the calls after which the host has waited for the GPU (stream, event and context
// synchronisations, the synchronous copies, fills and frees); allocations; and the copies
// each way with their bytes.
static struct Calls {
    std::atomic<unsigned long> launches{0}, waits{0}, allocations{0}, uploads{0}, upload_bytes{0}, downloads{0},
        download_bytes{0};
    ~Calls() {
        if (getenv("CNNLAB_EMULATOR_CALLS"))
            fprintf(stderr,
                    "emulator: calls launches %lu waits %lu allocations %lu uploads %lu upload_bytes %lu downloads %lu "
                    "download_bytes %lu\n",
                    launches.load(), waits.load(), allocations.load(), uploads.load(), upload_bytes.load(),
                    downloads.load(), download_bytes.load());
    }
} calls;

struct Allocation {
    char* map;
    size_t map_len;
    size_t size;
};

static std::mutex memory_lock;
static std::map<uintptr_t, Allocation> allocations;  // by device address
static size_t used = 0;

static CUresult allocate(CUdeviceptr* out, size_t size) {
    if (!out || size == 0) return CUDA_ERROR_INVALID_VALUE;
    calls.allocations++;
    std::lock_guard<std::mutex> g(memory_lock);
    if (size > total_memory() - used || size > max_allocation()) return CUDA_ERROR_OUT_OF_MEMORY;
    size_t body = (size + 15) & ~(size_t)15;
    size_t map_len = ((body + PAGE - 1) & ~(PAGE - 1)) + PAGE;
    char* m = (char*)mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    mprotect(m + map_len - PAGE, PAGE, PROT_NONE);  // the allocation ends at this guard page
    char* data = m + map_len - PAGE - body;
    memset(data, 0xff, body);  // NaN in every float: a read of an unset value shows
    allocations[(uintptr_t)data] = Allocation{m, map_len, size};
    used += size;
    peak = std::max(peak, used);
    *out = (CUdeviceptr)(uintptr_t)data;
    return CUDA_SUCCESS;
}

static CUresult release(CUdeviceptr p) {
    if (p == 0) return CUDA_SUCCESS;
    std::lock_guard<std::mutex> g(memory_lock);
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end()) return CUDA_ERROR_INVALID_VALUE;
    munmap(it->second.map, it->second.map_len);
    used -= it->second.size;
    allocations.erase(it);
    return CUDA_SUCCESS;
}

// The allocation holding address p (its device address and its record), or null (under
// memory_lock).
static const std::pair<const uintptr_t, Allocation>* allocation_at(uintptr_t p) {
    auto it = allocations.upper_bound(p);
    if (it == allocations.begin()) return nullptr;
    --it;
    return p < it->first + it->second.size ? &*it : nullptr;
}

// Whether [p, p + len) lies inside one allocation.
static bool on_device(CUdeviceptr p, size_t len) {
    std::lock_guard<std::mutex> g(memory_lock);
    auto a = allocation_at((uintptr_t)p);
    return a && (uintptr_t)p + len <= a->first + a->second.size;
}

// ---------------------------------------------------------------- contexts and streams

struct Context {
    int device;
};
static Context primary{0};
static thread_local CUcontext current = nullptr;

struct Stream {
    unsigned flags;
    int id;  // 1, 2, …: its row in the stream check's clocks (0: the null stream)
};

// ---------------------------------------------------------------- the stream check
//
// The emulator runs every call as it is made, but a GPU runs each stream's work in the
// stream's order only: work on two streams is ordered only by an event one waits for, or by the
// host having waited for the first (a stream or event synchronisation, or a context's). So the
// emulator keeps, for each allocation, the last write and the reads since, each as (stream,
// its op's number), and each op on a stream that touches an allocation another stream wrote
// (or, writing, one another stream read) must be ordered after that op; else a GPU may run
// the two at once, and the process ends saying which streams, op and allocation. Kernel
// arguments count as reads where they point to const, else as writes; a free and an
// allocation count as writes. cuBLAS's and cuDNN's calls count too: the emulator's other two
// libraries report theirs through cnnlab_emulator_stream_op (library.h).

struct Event {
    double ms = -1.0;  // the host's clock when recorded (see cuEventRecord)
    int stream = 0;
    uint64_t op = 0;  // ops issued on `stream` when recorded
};

static std::mutex clocks_lock;
static int streams_made = 0;
static std::vector<uint64_t> issued(1);                  // ops issued, by stream
static std::vector<uint64_t> host_knows(1);              // ops the host has seen finish, by stream
static std::vector<std::vector<uint64_t>> waits_for(1);  // [s][t]: t's ops ordered before s's next
struct Use {
    int stream;
    uint64_t op;
};
struct Uses {
    Use write{-1, 0};
    std::vector<Use> reads;
};
static std::map<uintptr_t, Uses> uses;  // by allocation

static int stream_id(CUstream s) {
    return s ? ((Stream*)s)->id : 0;
}
static int new_stream_id() {
    std::lock_guard<std::mutex> g(clocks_lock);
    int id = ++streams_made;
    issued.resize(id + 1);
    host_knows.resize(id + 1);
    waits_for.resize(id + 1);
    for (auto& w : waits_for) w.resize(id + 1);
    return id;
}
// whether op `op` of stream t comes before stream s's next op (under clocks_lock)
static bool ordered(int s, int t, uint64_t op) {
    return s == t || host_knows[t] >= op || waits_for[s][t] >= op;
}
static void host_waited_all() {
    std::lock_guard<std::mutex> g(clocks_lock);
    host_knows = issued;
}
static void host_waited(int s, uint64_t op) {
    std::lock_guard<std::mutex> g(clocks_lock);
    host_knows[s] = std::max(host_knows[s], op);
}
static void host_waited_for(CUstream stream) {
    std::lock_guard<std::mutex> g(clocks_lock);
    int s = stream_id(stream);
    host_knows[s] = issued[s];
}
static void forget(CUdeviceptr p) {
    std::lock_guard<std::mutex> g(clocks_lock);
    uses.erase((uintptr_t)p);
}

// One op on stream s touching the allocations in `touched` ((address, writes, what) each).
struct Touch {
    uintptr_t address;
    bool writes;
    const char* what;
};
static void stream_op(CUstream stream, const char* op, std::vector<Touch> all,
                      const std::vector<Pointer>* arguments = nullptr) {
    if (arguments)
        for (const Pointer& a : *arguments) all.push_back(Touch{a.address, a.writes, "an argument"});
    std::vector<std::pair<uintptr_t, Touch>> found;
    {
        std::lock_guard<std::mutex> g(memory_lock);
        for (const Touch& t : all)
            if (auto a = allocation_at(t.address)) found.emplace_back(a->first, t);
    }
    const int s = stream_id(stream);
    std::lock_guard<std::mutex> g(clocks_lock);
    const uint64_t now = ++issued[s];
    auto race = [&](const char* mine, const char* theirs, const Use& u, const Touch& t) {
        fatal("%s on stream %d %s %s (the allocation at %p) that stream %d %s in its op %llu, with nothing ordering "
              "the two (no event waited for, no synchronisation since): a GPU may run them at once",
              op, s, mine, t.what, (void*)t.address, u.stream, theirs, (unsigned long long)u.op);
    };
    for (auto& [base, t] : found) {
        Uses& u = uses[base];
        if (u.write.stream >= 0 && !ordered(s, u.write.stream, u.write.op))
            race(t.writes ? "writes" : "reads", "wrote", u.write, t);
        if (t.writes) {
            for (const Use& r : u.reads)
                if (!ordered(s, r.stream, r.op)) race("writes", "read", r, t);
            u.write = Use{s, now};
            u.reads.clear();
        } else {
            bool mine = false;
            for (Use& r : u.reads)
                if (r.stream == s) r.op = now, mine = true;
            if (!mine) u.reads.push_back(Use{s, now});
        }
    }
}

static bool bound() {
    return current != nullptr;
}

// An op of cuBLAS's or cuDNN's stand-in (library.h) on `stream`: the device memory it reads and writes.
API void cnnlab_emulator_stream_op(CUstream stream, const char* op, const void* const* reads, int n_reads,
                                   const void* const* writes, int n_writes) {
    std::vector<Touch> touched;
    for (int i = 0; i < n_reads; i++) touched.push_back(Touch{(uintptr_t)reads[i], false, "an input"});
    for (int i = 0; i < n_writes; i++) touched.push_back(Touch{(uintptr_t)writes[i], true, "an output"});
    stream_op(stream, op, touched);
}

// ---------------------------------------------------------------- the driver API

API CUresult cuInit(unsigned) {
    return CUDA_SUCCESS;
}
API CUresult cuDriverGetVersion(int* v) {
    *v = 13000;
    return CUDA_SUCCESS;
}
API CUresult cuDeviceGetCount(int* n) {
    *n = 1;
    return CUDA_SUCCESS;
}
API CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}
API CUresult cuDeviceGetAttribute(int* v, int attribute, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    switch (attribute) {
        case 75: *v = 9; break;    // compute capability major: Hopper, as the lent machines
        case 76: *v = 0; break;    // minor
        case 115: *v = 1; break;   // memory pools (stream-ordered allocation)
        case 16: *v = 16; break;   // multiprocessors
        case 1: *v = 1024; break;  // threads per block
        case 10: *v = 32; break;   // warp size
        default: *v = 0;
    }
    return CUDA_SUCCESS;
}
API CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, len, "CUDA emulator on the CPU (cnnlab tests)");
    return CUDA_SUCCESS;
}
API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = total_memory();
    return CUDA_SUCCESS;
}
API CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *c = &primary;
    return CUDA_SUCCESS;
}
API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    return d == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}
API CUresult cuCtxSetCurrent(CUcontext c) {
    if (c != nullptr && c != &primary) return CUDA_ERROR_INVALID_CONTEXT;
    current = c;
    return CUDA_SUCCESS;
}
API CUresult cuCtxGetCurrent(CUcontext* c) {
    *c = current;
    return CUDA_SUCCESS;
}
API CUresult cuCtxGetDevice(CUdevice* d) {
    if (!bound()) return CUDA_ERROR_INVALID_CONTEXT;
    *d = 0;
    return CUDA_SUCCESS;
}
API CUresult cuCtxSynchronize() {
    calls.waits++;
    host_waited_all();
    return bound() ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
}
API CUresult cuStreamCreate(CUstream* s, unsigned flags) {
    if (!bound()) return CUDA_ERROR_INVALID_CONTEXT;
    *s = new Stream{flags, new_stream_id()};
    return CUDA_SUCCESS;
}
API CUresult cuStreamCreateWithPriority(CUstream* s, unsigned flags, int) {
    return cuStreamCreate(s, flags);
}
API CUresult cuStreamDestroy_v2(CUstream s) {
    delete (Stream*)s;
    return CUDA_SUCCESS;
}
API CUresult cuStreamSynchronize(CUstream s) {
    calls.waits++;
    host_waited_for(s);
    return bound() ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
}
API CUresult cuStreamQuery(CUstream s) {
    host_waited_for(s);  // finished: everything runs as it is called
    return CUDA_SUCCESS;
}
API CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned) {
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    const Event* ev = (const Event*)e;
    std::lock_guard<std::mutex> g(clocks_lock);
    uint64_t& w = waits_for[stream_id(s)][ev->stream];
    w = std::max(w, ev->op);
    return CUDA_SUCCESS;
}
// An event holds the host's clock when it was recorded: every call runs to its end before
// returning, so that is when the stream's earlier work finished (timings of the emulator,
// not of a GPU: cnnlab's convolution tuning compares its candidates with them).
API CUresult cuEventCreate(CUevent* e, unsigned) {
    *e = new Event;
    return CUDA_SUCCESS;
}
API CUresult cuEventDestroy_v2(CUevent e) {
    delete (Event*)e;
    return CUDA_SUCCESS;
}
API CUresult cuEventRecord(CUevent e, CUstream s) {
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    Event* ev = (Event*)e;
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    ev->ms = t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
    std::lock_guard<std::mutex> g(clocks_lock);
    ev->stream = stream_id(s);
    ev->op = issued[ev->stream];
    return CUDA_SUCCESS;
}
API CUresult cuEventSynchronize(CUevent e) {
    calls.waits++;
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    host_waited(((Event*)e)->stream, ((Event*)e)->op);
    return CUDA_SUCCESS;
}
API CUresult cuEventElapsedTime_v2(float* ms, CUevent start, CUevent end) {
    if (!ms || !start || !end) return CUDA_ERROR_INVALID_HANDLE;
    double a = ((Event*)start)->ms, b = ((Event*)end)->ms;
    if (a < 0 || b < 0) return CUDA_ERROR_INVALID_HANDLE;  // not recorded (CUDA: not ready)
    *ms = (float)(b - a);
    return CUDA_SUCCESS;
}
API CUresult cuEventQuery(CUevent e) {
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    host_waited(((Event*)e)->stream, ((Event*)e)->op);  // finished: everything runs as it is called
    return CUDA_SUCCESS;
}
API CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    if (!bound()) return CUDA_ERROR_INVALID_CONTEXT;
    std::lock_guard<std::mutex> g(memory_lock);
    *free_bytes = total_memory() - used;
    *total = total_memory();
    return CUDA_SUCCESS;
}
API CUresult cuMemAllocAsync(CUdeviceptr* p, size_t size, CUstream s) {
    if (!bound()) return CUDA_ERROR_INVALID_CONTEXT;
    CUresult r = allocate(p, size);
    if (r == CUDA_SUCCESS) {
        forget(*p);
        stream_op(s, "cuMemAllocAsync", {{*p, true, "the new allocation"}});
    }
    return r;
}
API CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t size) {
    calls.waits++;
    return bound() ? allocate(p, size) : CUDA_ERROR_INVALID_CONTEXT;
}
API CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) {
    if (!bound()) return CUDA_ERROR_INVALID_CONTEXT;
    stream_op(s, "cuMemFreeAsync", {{p, true, "the allocation it frees"}});
    forget(p);
    return release(p);
}
API CUresult cuMemFree_v2(CUdeviceptr p) {
    calls.waits++;
    host_waited_all();  // a synchronous free waits for the device
    forget(p);
    return bound() ? release(p) : CUDA_ERROR_INVALID_CONTEXT;
}
API CUresult cuMemHostAlloc(void** p, size_t size, unsigned) {
    *p = malloc(size ? size : 1);
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
API CUresult cuMemFreeHost(void* p) {
    free(p);
    return CUDA_SUCCESS;
}
API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream s) {
    if (!bound()) return CUDA_ERROR_INVALID_CONTEXT;
    if (n == 0) return CUDA_SUCCESS;
    if (!on_device(dst, n)) return CUDA_ERROR_INVALID_VALUE;
    stream_op(s, "cuMemcpyHtoDAsync", {{dst, true, "its destination"}});
    memcpy((void*)(uintptr_t)dst, src, n);
    calls.uploads++;
    calls.upload_bytes += n;
    return CUDA_SUCCESS;
}
API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    calls.waits++;
    return cuMemcpyHtoDAsync_v2(dst, src, n, nullptr);
}
API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream s) {
    if (!bound()) return CUDA_ERROR_INVALID_CONTEXT;
    if (n == 0) return CUDA_SUCCESS;
    if (!on_device(src, n)) return CUDA_ERROR_INVALID_VALUE;
    stream_op(s, "cuMemcpyDtoHAsync", {{src, false, "its source"}});
    memcpy(dst, (const void*)(uintptr_t)src, n);
    calls.downloads++;
    calls.download_bytes += n;
    return CUDA_SUCCESS;
}
API CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    calls.waits++;
    return cuMemcpyDtoHAsync_v2(dst, src, n, nullptr);
}
API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    if (!bound()) return CUDA_ERROR_INVALID_CONTEXT;
    if (n == 0) return CUDA_SUCCESS;
    if (!on_device(dst, n) || !on_device(src, n)) return CUDA_ERROR_INVALID_VALUE;
    stream_op(s, "cuMemcpyDtoDAsync", {{src, false, "its source"}, {dst, true, "its destination"}});
    memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n);
    return CUDA_SUCCESS;
}
API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    calls.waits++;
    return cuMemcpyDtoDAsync_v2(dst, src, n, nullptr);
}
API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream s) {
    if (!bound()) return CUDA_ERROR_INVALID_CONTEXT;
    if (n == 0) return CUDA_SUCCESS;
    if (!on_device(dst, n)) return CUDA_ERROR_INVALID_VALUE;
    stream_op(s, "cuMemsetD8Async", {{dst, true, "its destination"}});
    memset((void*)(uintptr_t)dst, v, n);
    return CUDA_SUCCESS;
}
API CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    calls.waits++;
    return cuMemsetD8Async(dst, v, n, nullptr);
}

struct Module {
    std::string ptx;
};

API CUresult cuModuleLoadData(CUmodule* m, const void* image) {
    if (!bound()) return CUDA_ERROR_INVALID_CONTEXT;
    if (!image) return CUDA_ERROR_INVALID_VALUE;
    *m = new Module{std::string((const char*)image)};
    return CUDA_SUCCESS;
}
API CUresult cuModuleUnload(CUmodule m) {
    delete (Module*)m;
    return CUDA_SUCCESS;
}
// A kernel the emulator runs, which NVRTC's PTX also defines.
API CUresult cuModuleGetFunction(CUfunction* f, CUmodule m, const char* name) {
    if (!m) return CUDA_ERROR_INVALID_HANDLE;
    std::string entry = std::string(".entry ") + name + "(";
    if (((Module*)m)->ptx.find(entry) == std::string::npos) return CUDA_ERROR_NOT_FOUND;
    for (const Kernel& k : KERNELS)
        if (strcmp(k.name, name) == 0) {
            *f = (CUfunction)&k;
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_NOT_FOUND;
}
API CUresult cuFuncGetAttribute(int* v, int, CUfunction) {
    *v = 0;
    return CUDA_SUCCESS;
}
// ---------------------------------------------------------------- the order check
//
// A GPU runs a block's warps, and the threads of a warp between its meeting points, in no
// fixed order, and its blocks likewise; the emulator runs them first to last. With the check
// on, a launch runs twice from the same memory, first to last and last to first, and every
// allocation an argument points into must come out of both with the same bytes. A kernel
// whose threads read what others write without a barrier between (a missing __syncthreads),
// whose blocks read what other blocks write, or which reads shared memory its block never
// wrote (NaN: emu::shared_fill) fails it: the launch returns CUDA_ERROR_LAUNCH_FAILED and says
// where. cnnlab's kernels use no atomics, so a sum's order never depends on timing, and no
// difference is allowed. On unless CNNLAB_EMULATOR_ORDER=forward (each launch once, first to
// last: about a quarter less time for the tests, for perf or gdb).

static std::map<std::string, unsigned long> checked;  // launches checked, by kernel (under `launches`)

API unsigned long cnnlab_emulator_checked(const char* kernel) {
    std::lock_guard<std::mutex> g(launches);
    auto it = checked.find(kernel);
    return it == checked.end() ? 0 : it->second;
}

static bool check_on() {
    static const bool on = [] {
        const char* v = getenv("CNNLAB_EMULATOR_ORDER");
        return !(v && strcmp(v, "forward") == 0);
    }();
    return on;
}

// Runs the launch both ways (the caller holds `launches`); false, having said why, where the
// two differ. `pointers`: its pointer arguments (Kernel::pointers).
static bool run_checked(const Kernel* k, void** params, const std::vector<Pointer>& pointers, dim3 grid,
                        dim3 threads) {
    struct Buffer {
        char* data;
        size_t size;
        int argument;  // the first argument that points into it
        std::vector<char> before, first;
    };
    std::vector<Buffer> buffers;
    {
        std::lock_guard<std::mutex> g(memory_lock);
        for (const Pointer& p : pointers) {
            auto a = allocation_at(p.address);
            if (!a) continue;  // not device memory (a null argument)
            char* data = (char*)a->first;
            bool seen = false;
            for (const Buffer& b : buffers) seen |= b.data == data;
            if (!seen) buffers.push_back(Buffer{data, a->second.size, p.position, {}, {}});
        }
    }
    for (Buffer& b : buffers) b.before.assign(b.data, b.data + b.size);
    reversed = false;
    run_grid(k, params, grid, threads);
    for (Buffer& b : buffers) {
        b.first.assign(b.data, b.data + b.size);
        memcpy(b.data, b.before.data(), b.size);
    }
    reversed = true;
    run_grid(k, params, grid, threads);
    reversed = false;
    checked[k->name]++;
    for (const Buffer& b : buffers) {
        if (memcmp(b.data, b.first.data(), b.size) == 0) continue;
        size_t at = 0;
        while (b.data[at] == b.first[at]) at++;
        at &= ~(size_t)3;
        float first, last;
        memcpy(&first, &b.first[at], 4);
        memcpy(&last, b.data + at, 4);
        fprintf(stderr,
                "CUDA emulator: kernel %s (grid %ux%ux%u, block %ux%ux%u) gives other results when its blocks and "
                "threads run in another order: float %zu of the %zu-byte buffer its argument %d points into is %g "
                "first to last and %g last to first (a thread reads what another writes without a barrier "
                "between, a block reads what another writes, or shared memory is read before it is written)\n",
                k->name, grid.x, grid.y, grid.z, threads.x, threads.y, threads.z, at / 4, b.size, b.argument, (double)first,
                (double)last);
        return false;
    }
    return true;
}

API CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                            unsigned shared_bytes, CUstream stream, void** params, void** extra) {
    if (!bound()) return CUDA_ERROR_INVALID_CONTEXT;
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    const Kernel* k = (const Kernel*)f;
    // the limits of every GPU cnnlab supports (compute capability 7.5 and newer)
    bool shape_ok = gx >= 1 && gy >= 1 && gz >= 1 && bx >= 1 && by >= 1 && bz >= 1 && gx <= 0x7fffffffu &&
                    gy <= 65535 && gz <= 65535 && bx <= 1024 && by <= 1024 && bz <= 64 &&
                    (unsigned long long)bx * by * bz <= 1024 && shared_bytes <= 48 * 1024;
    if (!shape_ok || extra != nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (k->arity > 0 && params == nullptr) return CUDA_ERROR_INVALID_VALUE;
    for (int i = 0; i < k->arity; i++)
        if (params[i] == nullptr) {
            fprintf(stderr, "CUDA emulator: kernel %s takes %d arguments; argument %d is missing\n", k->name,
                    k->arity, i);
            return CUDA_ERROR_INVALID_VALUE;
        }
    calls.launches++;
    std::vector<Pointer> arguments;
    k->pointers(params, &arguments);
    stream_op(stream, k->name, {}, &arguments);
    std::lock_guard<std::mutex> g(launches);
    if (check_on())
        return run_checked(k, params, arguments, dim3{gx, gy, gz}, dim3{bx, by, bz}) ? CUDA_SUCCESS
                                                                                      : CUDA_ERROR_LAUNCH_FAILED;
    run_grid(k, params, dim3{gx, gy, gz}, dim3{bx, by, bz});
    return CUDA_SUCCESS;
}

static const char* error_name(CUresult r) {
    switch (r) {
        case CUDA_SUCCESS: return "CUDA_SUCCESS";
        case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
        case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
        case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        case CUDA_ERROR_LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
        case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
        default: return nullptr;
    }
}
API CUresult cuGetErrorName(CUresult r, const char** s) {
    *s = error_name(r);
    return *s ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
API CUresult cuGetErrorString(CUresult r, const char** s) {
    *s = error_name(r);
    if (r == CUDA_ERROR_OUT_OF_MEMORY) *s = "out of memory (the emulator's: CNNLAB_EMULATOR_MEMORY, CNNLAB_EMULATOR_MAX_ALLOCATION)";
    return *s ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
