//! Embeds the commit the binary is built from (`PATCHWORK_COMMIT`, shown by
//! `patchwork --version` and `patchwork version`), so an operator can say
//! exactly what runs. A build from a tarball, or without git, says
//! "unknown" rather than failing; `PATCHWORK_COMMIT` set in the build's
//! environment (e.g. a container build without `.git`) wins.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=PATCHWORK_COMMIT");
    let commit = match std::env::var("PATCHWORK_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself (a branch switch or a
            // detached checkout), the branch's ref (a commit) and packed refs.
            let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watched.push(branch);
            }
            for name in &watched {
                if let Some(path) = git(&["rev-parse", "--git-path", name]) {
                    let path = std::path::Path::new(&path);
                    if path.exists() {
                        println!("cargo:rerun-if-changed={}", path.display());
                    }
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=PATCHWORK_COMMIT={commit}");
}
