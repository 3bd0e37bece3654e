//! Records the git commit cnnlab is built from (reports cite it): "+modified" when the tracked
//! files differ from it, "unknown" outside a git checkout.

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let mut commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // built from changes not committed: say so (a report must not cite a commit it differs from)
    if git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()) {
        commit += "+modified";
    }
    println!("cargo:rustc-env=CNNLAB_GIT_COMMIT={commit}");
    for path in ["src", "templates", "Cargo.toml", "build.rs", ".git/index"] {
        println!("cargo:rerun-if-changed={path}");
    }
    // rebuilt when HEAD moves: the HEAD file, the branch it names, the packed refs
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/packed-refs");
    if let Some(branch) =
        std::fs::read_to_string(".git/HEAD").ok().and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
    {
        println!("cargo:rerun-if-changed=.git/{branch}");
    }
}
