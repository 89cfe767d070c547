//! The `patchwork` binary; all of it lives in `patchwork_node::cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    patchwork_node::cli::main()
}
