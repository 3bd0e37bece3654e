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

/// The kernels of `program`, each with whether its threads meet at barriers (`__syncthreads`
/// or a warp shuffle, directly or through the `__device__` functions it calls): those run as
/// fibers in the emulator, the others one thread after another.
pub fn kernels(program: &str) -> Vec<(String, bool)> {
    let fns = functions(program);
    let mut barrier: Vec<&str> =
        fns.iter().filter(|f| f.body.contains("__syncthreads") || f.body.contains("__shfl")).map(|f| f.name).collect();
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

fn compile(dir: &Path, source: &str, soname: &str) -> Result<std::process::Child, String> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    Command::new(&cxx)
        .args(["-std=c++17", "-O3", "-march=native", "-shared", "-fPIC", "-fvisibility=hidden", "-pthread", "-w"])
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
    std::fs::write(dir.join("program.cu"), &program).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("registry.inc"), registry).map_err(|e| e.to_string())?;
    let builds = [
        compile(dir, "driver.cpp", "libcuda.so")?,
        compile(dir, "cublas.cpp", "libcublas.so")?,
        compile(dir, "cudnn.cpp", "libcudnn.so")?,
    ];
    for mut b in builds {
        let status = b.wait().map_err(|e| e.to_string())?;
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
                   extern \"C\" __global__ void d(float* x) { tile<4>(x); }\n";
    let found = kernels(program);
    let want = [("a", true), ("b", false), ("c", true), ("d", true)].map(|(n, b)| (n.to_string(), b));
    assert_eq!(found, want);
}
