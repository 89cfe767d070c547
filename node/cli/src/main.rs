//! The `patchwork` binary; all of it lives in `patchwork_cli::cli`.
#![forbid(unsafe_code)]

/// mimalloc rather than the system allocator: sled allocates and frees on
/// every read and write, and with glibc's malloc that was about a quarter
/// of a lookup's CPU time (BENCHMARKS.md); with musl's (the container
/// image) it is slower still.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    patchwork_cli::cli::main()
}
