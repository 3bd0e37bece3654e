//! Builds and loads the CPU emulator of the CUDA driver, cuBLAS and cuDNN (`emulator.md`), so that the
//! CUDA backend's tests run where no GPU is: the backend's own Rust code, cudarc, and the real
//! kernels of `src/core/cuda/kernels/` (compiled as C++), checked against the CPU backend.
//!
//! The three libraries are compiled with the system's C++ compiler (`CXX`, else `g++`) into a
//! fresh folder and opened with `RTLD_GLOBAL` under the sonames `libcuda.so`, `libcublas.so`
//! and `libcudnn.so`, before cudarc looks for those names: the dynamic loader then hands
//! cudarc the emulator. NVRTC is the real one (the kernels are still compiled to PTX, and the
//! emulator checks that the PTX defines each kernel the backend asks for).

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cuda_emulator");

/// A function of the kernel program: its name, whether it is a kernel, and its body.
struct Function<'a> {
    name: &'a str,
    kernel: bool,
    body: &'a str,
}

/// Every `__global__` and `__device__` function of `program`, with its body.
fn functions(program: &str) -> Vec<Function<'_>> {
    let mut out = Vec::new();
    for marker in ["__global__", "__device__"] {
        for (at, _) in program.match_indices(marker) {
            let rest = &program[at..];
            let Some(open) = rest.find('(') else { continue };
            let name = rest[..open].split_whitespace().last().unwrap_or("");
            // the body: from the first brace after the parameter list to its match
            let Some(start) = rest[open..].find('{').map(|b| open + b) else { continue };
            let mut depth = 0;
            let mut end = rest.len();
            for (i, ch) in rest[start..].char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = start + i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            out.push(Function { name, kernel: marker == "__global__", body: &rest[start..end] });
        }
    }
    out
}

/// Whether `body` calls `name`, or an instance of it where it is a template (`name<…>(`; the
/// name not part of a longer identifier).
fn calls(body: &str, name: &str) -> bool {
    ["(", "<"].iter().any(|open| {
        body.match_indices(&format!("{name}{open}"))
            .any(|(i, _)| !body[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_'))
    })
}

/// Where a block's threads meet: `__syncthreads`, a warp shuffle, and the tensor-core
/// instruction (the emulator's `emu::mma_m16n8k8`, a warp-wide exchange).
const MEETINGS: [&str; 3] = ["__syncthreads", "__shfl", "mma_m16n8k8"];

/// The kernels of `program`, each with whether its threads meet at barriers (`__syncthreads`
/// or a warp shuffle, directly or through the `__device__` functions it calls): those run as
/// fibers in the emulator, the others one thread after another.
pub fn kernels(program: &str) -> Vec<(String, bool)> {
    let fns = functions(program);
    let mut barrier: Vec<&str> =
        fns.iter().filter(|f| MEETINGS.iter().any(|m| f.body.contains(m))).map(|f| f.name).collect();
    loop {
        let more: Vec<&str> = fns
            .iter()
            .filter(|f| !barrier.contains(&f.name) && barrier.iter().any(|b| calls(f.body, b)))
            .map(|f| f.name)
            .collect();
        if more.is_empty() {
            break;
        }
        barrier.extend(more);
    }
    fns.iter().filter(|f| f.kernel).map(|f| (f.name.to_string(), barrier.contains(&f.name))).collect()
}

/// The emulator's copy of `program`: a call of `emu::shared_fill` after each `__shared__`
/// declaration (device.h), which fills the array with NaN bytes once a block. A declaration
/// of more than one array, or one this cannot read, is an error.
pub fn fill_shared_arrays(program: &str) -> Result<String, String> {
    const MARK: &str = "__shared__";
    let mut out = String::with_capacity(program.len() + 1024);
    let mut rest = program;
    while let Some(at) = rest.find(MARK) {
        let end = rest[at..].find(';').map(|e| at + e).ok_or("a __shared__ declaration without its ';'")?;
        let declaration = &rest[at + MARK.len()..end];
        let mut depth = 0;
        for ch in declaration.chars() {
            match ch {
                '[' | '(' => depth += 1,
                ']' | ')' => depth -= 1,
                ',' if depth == 0 => return Err(format!("declare one __shared__ array at a time: `{declaration}`")),
                _ => {}
            }
        }
        let name = declaration
            .find('[')
            .and_then(|open| declaration[..open].split_whitespace().last())
            .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| format!("a __shared__ declaration that is not an array: `{declaration}`"))?;
        out.push_str(&rest[..=end]);
        out.push_str(&format!(" emu::shared_fill({name}, sizeof({name}));"));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The driver's (and so the kernels') loads and stores checked for their type's alignment:
/// on a GPU a misaligned `float4` access ends the kernel ("misaligned address"); compiled for
/// the host it just runs. A misaligned access ends the process with UBSan's line naming the
/// kernel's source line in the build folder's `program.cu`.
const ALIGNMENT_CHECK: [&str; 2] = ["-fsanitize=alignment", "-fno-sanitize-recover=alignment"];

fn compile(dir: &Path, source: &str, soname: &str, extra: &[&str]) -> Result<std::process::Child, String> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    Command::new(&cxx)
        .args(["-std=c++17", "-O3", "-march=native", "-shared", "-fPIC", "-fvisibility=hidden", "-pthread", "-w"])
        .args(extra)
        .arg(format!("-Wl,-soname,{soname}"))
        .arg("-I")
        .arg(dir)
        .arg(Path::new(SOURCES).join(source))
        .arg("-o")
        .arg(dir.join(soname))
        .spawn()
        .map_err(|e| format!("the C++ compiler `{cxx}` could not run ({e}); install g++ or set CXX"))
}

/// Builds the emulator into a fresh folder under `tmp` and loads it into this process (once;
/// it must happen before the CUDA backend first looks for the driver). Returns the folder,
/// which stays for the process's life (on `LD_LIBRARY_PATH` it runs the `cnnlab` binary on
/// the emulator too; its symbols serve perf and gdb) and is removed by a later test process.
pub fn load(tmp: &Path) -> Result<PathBuf, String> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return Err("the CUDA emulator runs on x86-64 Linux only".into());
    }
    // folders left by earlier test processes that have ended
    for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("cuda-emulator-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir: PathBuf = tmp.join(format!("cuda-emulator-{}", std::process::id()));
    match build_and_open(&dir) {
        Ok(()) => Ok(dir),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

fn build_and_open(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let program = cnnlab::core::cuda::kernel_program();
    let registry: String =
        kernels(&program).iter().map(|(name, barriers)| format!("KERNEL({name}, {barriers})\n")).collect();
    std::fs::write(dir.join("program.cu"), fill_shared_arrays(&program)?).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("registry.inc"), registry).map_err(|e| e.to_string())?;
    let builds = [
        compile(dir, "driver.cpp", "libcuda.so", &ALIGNMENT_CHECK)?,
        compile(dir, "cublas.cpp", "libcublas.so", &[])?,
        compile(dir, "cudnn.cpp", "libcudnn.so", &[])?,
    ];
    for (i, mut b) in builds.into_iter().enumerate() {
        let mut status = b.wait().map_err(|e| e.to_string())?;
        if i == 0 && !status.success() {
            // a compiler without UBSan's runtime (libubsan): the emulator without the check
            status = compile(dir, "driver.cpp", "libcuda.so", &[])?.wait().map_err(|e| e.to_string())?;
            if status.success() {
                eprintln!(
                    "NOTE: the CUDA emulator runs without its alignment check ({ALIGNMENT_CHECK:?} did not build)"
                );
            }
        }
        if !status.success() {
            return Err(format!("the CUDA emulator did not compile ({status})"));
        }
    }
    for lib in ["libcuda.so", "libcublas.so", "libcudnn.so"] {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        // SAFETY: the emulator's libraries run no code when loaded
        let l = unsafe { Library::open(Some(dir.join(lib)), RTLD_NOW | RTLD_GLOBAL) }
            .map_err(|e| format!("loading the CUDA emulator's {lib}: {e}"))?;
        // kept for the process's life: cudarc finds it by its soname
        std::mem::forget(l);
    }
    Ok(())
}

#[test]
fn barrier_kernels_are_found() {
    let program = "__device__ float warp_sum(float v) { return __shfl_xor_sync(0xffffffff, v, 1); }\n\
                   extern \"C\" __global__ void a(float* x) { if (x) { x[0] = warp_sum(x[0]); } }\n\
                   extern \"C\" __global__ void b(float* x) { x[0] = my_warp_sum(1); }\n\
                   extern \"C\" __global__ void c(float* x) { __syncthreads(); }\n\
                   template <int N> __device__ void tile(float* x) { __syncthreads(); }\n\
                   extern \"C\" __global__ void d(float* x) { tile<4>(x); }\n\
                   __device__ void mma(float* d) { emu::mma_m16n8k8(d, 0, 0); }\n\
                   extern \"C\" __global__ void e(float* x) { mma(x); }\n";
    let found = kernels(program);
    let want = [("a", true), ("b", false), ("c", true), ("d", true), ("e", true)].map(|(n, b)| (n.to_string(), b));
    assert_eq!(found, want);
}

#[test]
fn shared_arrays_are_filled_once_a_block() {
    let program = "__global__ void k(float* x) {\n    alignas(16) __shared__ float as[2][BK][BM + 8];\n    __shared__ double s[4];\n    x[0] = as[0][0][0];\n}\n";
    let filled = fill_shared_arrays(program).unwrap();
    assert!(filled.contains("float as[2][BK][BM + 8]; emu::shared_fill(as, sizeof(as));"), "{filled}");
    assert!(filled.contains("double s[4]; emu::shared_fill(s, sizeof(s));"), "{filled}");
    assert!(filled.ends_with("x[0] = as[0][0][0];\n}\n"), "{filled}");
    assert!(fill_shared_arrays("__shared__ float a[4], b[4];").is_err());
    assert!(fill_shared_arrays("__shared__ float a;").is_err());
}

/// The order check (driver.cpp) and the alignment check on kernels written to fail them: the
/// emulator's driver built with a harness that launches the kernels its arguments name, each
/// from the same memory, and prints its return code and outputs.
#[test]
fn the_emulator_finds_races_and_misaligned_accesses() {
    let program = r#"
extern "C" __global__ void with_barrier(const float* x, float* y) {
    __shared__ float s[64];
    s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[blockIdx.x * 64 + threadIdx.x] = s[(threadIdx.x + 1) % 64];
}
extern "C" __global__ void without_barrier(const float* x, float* y) {
    __shared__ float s[64];
    s[threadIdx.x] = x[threadIdx.x];
    y[blockIdx.x * 64 + threadIdx.x] = s[(threadIdx.x + 1) % 64];
}
extern "C" __global__ void reads_other_blocks(const float* x, float* y) {
    const int i = blockIdx.x * 64 + threadIdx.x;
    y[i] = x[threadIdx.x] + (blockIdx.x > 0 ? y[i - 64] : 0.0f);
}
extern "C" __global__ void reads_unwritten_shared(const float* x, float* y) {
    __shared__ float s[64];
    if (blockIdx.x == 0) s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[blockIdx.x * 64 + threadIdx.x] = s[threadIdx.x];
}
extern "C" __global__ void copy_values(const float* x, float* y) {
    y[threadIdx.x] = x[threadIdx.x];
}
extern "C" __global__ void misaligned_float4(const float* x, float* y) {
    const float4 v = *(const float4*)(x + 1 + 4 * (threadIdx.x % 8));
    y[blockIdx.x * 64 + threadIdx.x] = v.x + v.y + v.z + v.w;
}
"#;
    let harness = r#"
#include <stdio.h>
#include <string.h>
extern "C" {
int cuInit(unsigned);
int cuDevicePrimaryCtxRetain(void**, int);
int cuCtxSetCurrent(void*);
int cuMemAlloc_v2(unsigned long long*, size_t);
int cuMemcpyHtoD_v2(unsigned long long, const void*, size_t);
int cuMemcpyDtoH_v2(void*, unsigned long long, size_t);
int cuModuleLoadData(void**, const void*);
int cuModuleGetFunction(void**, void*, const char*);
int cuLaunchKernel(void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void*, void**, void**);
unsigned long cnnlab_emulator_checked(const char*);
int cuStreamCreate(void**, unsigned);
int cuStreamSynchronize(void*);
int cuStreamWaitEvent(void*, void*, unsigned);
int cuEventCreate(void**, unsigned);
int cuEventRecord(void*, void*);
int cuMemAllocAsync(unsigned long long*, size_t, void*);
int cuMemFreeAsync(unsigned long long, void*);
int cublasCreate_v2(void**);
int cublasSetStream_v2(void*, void*);
int cublasSgemm_v2(void*, int, int, int, int, int, const float*, const float*, int, const float*, int, const float*,
                   float*, int);
}
// Stream a writes x, stream b copies it to y, and a frees x; ordered by `how`: nothing, the
// host waiting for each stream before the next uses what it wrote, or events.
static void two_streams(void* module, const char* how) {
    void *a, *b, *event, *copy;
    cuStreamCreate(&a, 1);
    cuStreamCreate(&b, 1);
    cuEventCreate(&event, 0);
    cuModuleGetFunction(&copy, module, "copy_values");
    unsigned long long dx, dy;
    cuMemAllocAsync(&dx, 256, a);
    cuMemAllocAsync(&dy, 256, b);
    void* args[] = {&dx, &dy};
    if (!strcmp(how, "sync")) cuStreamSynchronize(a);
    if (!strcmp(how, "events")) cuEventRecord(event, a), cuStreamWaitEvent(b, event, 0);
    if (!strcmp(how, "cublas")) {
        // cuBLAS's stand-in reports its calls too: an 8x8 GEMM on b reading x, made on a
        void* blas;
        const float one = 1, zero = 0;
        cublasCreate_v2(&blas);
        cublasSetStream_v2(blas, b);
        cublasSgemm_v2(blas, 0, 0, 8, 8, 8, &one, (const float*)dx, 8, (const float*)dx, 8, &zero, (float*)dy, 8);
    } else {
        cuLaunchKernel(copy, 1, 1, 1, 64, 1, 1, 0, b, args, nullptr);
    }
    printf("copied\n");
    fflush(stdout);
    if (!strcmp(how, "sync")) cuStreamSynchronize(b);
    if (!strcmp(how, "events")) cuEventRecord(event, b), cuStreamWaitEvent(a, event, 0);
    cuMemFreeAsync(dx, a);
    printf("freed\n");
}
int main(int argc, char** argv) {
    void *ctx, *module;
    cuInit(0);
    cuDevicePrimaryCtxRetain(&ctx, 0);
    cuCtxSetCurrent(ctx);
    cuModuleLoadData(&module, ".entry with_barrier( .entry without_barrier( .entry reads_other_blocks( "
                              ".entry reads_unwritten_shared( .entry misaligned_float4( .entry copy_values(");
    float x[64], y[256];
    for (int i = 0; i < 64; i++) x[i] = i + 1;
    if (argc == 3 && !strcmp(argv[1], "streams")) return two_streams(module, argv[2]), 0;
    for (int a = 1; a < argc; a++) {
        const char* name = argv[a];
        unsigned long long dx, dy;
        void* f;
        cuMemAlloc_v2(&dx, sizeof x);
        cuMemAlloc_v2(&dy, sizeof y);
        cuMemcpyHtoD_v2(dx, x, sizeof x);
        memset(y, 0, sizeof y);
        cuMemcpyHtoD_v2(dy, y, sizeof y);
        cuModuleGetFunction(&f, module, name);
        void* args[] = {&dx, &dy};
        int rc = cuLaunchKernel(f, 4, 1, 1, 64, 1, 1, 0, nullptr, args, nullptr);
        cuMemcpyDtoH_v2(y, dy, sizeof y);
        printf("%s %d %lu %g %g\n", name, rc, cnnlab_emulator_checked(name), y[0], y[255]);
    }
}
"#;
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    if !Path::new(SOURCES).join("driver.cpp").exists() {
        // a test binary carried to another machine (scripts/gpu_check.sh)
        eprintln!("SKIPPED the_emulator_finds_races_and_misaligned_accesses: {SOURCES} is not here");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("order-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let registry: String =
        kernels(program).iter().map(|(name, barriers)| format!("KERNEL({name}, {barriers})\n")).collect();
    std::fs::write(dir.join("program.cu"), fill_shared_arrays(program).unwrap()).unwrap();
    std::fs::write(dir.join("registry.inc"), registry).unwrap();
    std::fs::write(dir.join("harness.cpp"), harness).unwrap();
    let built = Command::new(&cxx)
        .args(["-std=c++17", "-O1", "-pthread", "-w"])
        .args(ALIGNMENT_CHECK)
        .arg("-I")
        .arg(&dir)
        .arg(Path::new(SOURCES).join("driver.cpp"))
        .arg(Path::new(SOURCES).join("cublas.cpp"))
        .arg(dir.join("harness.cpp"))
        .arg("-rdynamic")
        .arg("-o")
        .arg(dir.join("harness"))
        .status();
    match built {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("the order check's harness did not compile ({s})"),
        Err(e) if std::env::var_os("CNNLAB_REQUIRE_CUDA_EMULATOR").is_some() => panic!("{cxx}: {e}"),
        Err(e) => {
            eprintln!("SKIPPED the_order_check_finds_races: the C++ compiler `{cxx}` could not run ({e})");
            return;
        }
    }
    let run = |order: Option<&str>, kernels: &[&str]| {
        let mut cmd = Command::new(dir.join("harness"));
        cmd.args(kernels).env_remove("CNNLAB_EMULATOR_ORDER").env_remove("UBSAN_OPTIONS");
        if let Some(o) = order {
            cmd.env("CNNLAB_EMULATOR_ORDER", o);
        }
        cmd.output().unwrap()
    };
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    let races = ["with_barrier", "without_barrier", "reads_other_blocks", "reads_unwritten_shared"];
    let (checked, forward, misaligned) =
        (run(None, &races), run(Some("forward"), &races), run(None, &["misaligned_float4"]));
    let streams = ["none", "sync", "events", "cublas"].map(|how| run(None, &["streams", how]));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(checked.status.success() && forward.status.success(), "{checked:?}\n{forward:?}");
    let (checked, stderr, forward) = (text(checked.stdout), text(checked.stderr), text(forward.stdout));
    let lines: Vec<&str> = checked.lines().collect();
    // name, return code (719: CUDA_ERROR_LAUNCH_FAILED), launches checked, y[0], y[255]
    assert_eq!(lines[0], "with_barrier 0 1 2 1", "{checked}");
    assert!(lines[1].starts_with("without_barrier 719 1 "), "{checked}\n{stderr}");
    assert!(lines[2].starts_with("reads_other_blocks 719 1 "), "{checked}\n{stderr}");
    // the same in every order, and NaN where no thread of the block wrote: not block 0's values
    assert_eq!(lines[3], "reads_unwritten_shared 0 1 1 -nan", "{checked}");
    let said = |kernel: &str| {
        stderr.contains(&format!("kernel {kernel} (grid 4x1x1, block 64x1x1) gives other results when its blocks and threads run in another order"))
    };
    assert!(said("without_barrier") && said("reads_other_blocks") && !said("with_barrier"), "{stderr}");
    // once, first to last: nothing checked, and the races go by unseen
    assert!(forward.lines().all(|l| l.split(' ').nth(1) == Some("0") && l.split(' ').nth(2) == Some("0")), "{forward}");
    // a float4 read 4 bytes past a 16-byte boundary ends the process, naming the kernel's line
    assert!(!misaligned.status.success() && misaligned.stdout.is_empty(), "{misaligned:?}");
    let said = text(misaligned.stderr);
    assert!(said.contains("program.cu:") && said.contains("misaligned address") && said.contains("float4"), "{said}");
    // two streams: unordered, the copy on the second (a kernel, or cuBLAS's GEMM) reads the
    // allocation the first made (an allocation counts as a write), a race on a GPU that ends
    // the process; ordered by the host's waits or by events, both the copy and the free (on the
    // first stream, of what the second read) pass
    let [none, sync, events, cublas] = streams;
    let unordered =
        [(none, "copy_values on stream 2 reads an argument"), (cublas, "cublasSgemm_v2 on stream 2 reads an input")];
    for (race, op) in unordered {
        assert!(!race.status.success() && race.stdout.is_empty(), "{race:?}");
        let said = text(race.stderr);
        assert!(said.contains(op) && said.contains("that stream 1 wrote"), "{said}");
    }
    for ordered in [sync, events] {
        assert!(ordered.status.success() && ordered.stdout == b"copied\nfreed\n", "{ordered:?}");
    }
}
