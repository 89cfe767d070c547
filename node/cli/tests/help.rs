//! The `patchwork` binary's self-description: help text for every argument
//! of every subcommand, shell completions and man pages generated from the
//! same clap definitions, and a version that names the commit it was built
//! from.

mod common;

use clap::CommandFactory;
use common::{must_pass, patchwork};
use patchwork_cli::cli::Cli;

/// Every argument (flag, option or positional) of every subcommand, at any
/// depth, says what it is for; so does every subcommand.
#[test]
fn every_subcommand_and_argument_has_help() {
    fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        if command.get_about().is_none() && command.get_long_about().is_none() {
            missing.push(format!("{path} (the subcommand)"));
        }
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            // clap's own --help and --version describe themselves.
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                let name = arg
                    .get_long()
                    .map(|l| format!("--{l}"))
                    .unwrap_or_else(|| format!("<{id}>"));
                missing.push(format!("{path} {name}"));
            }
        }
        // clap's own `help` subcommand describes itself.
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut command = Cli::command();
    command.build();
    let mut missing = Vec::new();
    walk(&command, "patchwork", &mut missing);
    assert!(
        missing.is_empty(),
        "no help text for:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn shell_completions_and_man_pages_come_from_the_clap_definitions() {
    let bash = must_pass("completions", &["completions", "bash"]);
    assert!(bash.contains("_patchwork()"), "{bash}");
    // A subcommand's flags are completed, e.g. `lookup --postcode`.
    assert!(bash.contains("--postcode"), "{bash}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = must_pass("completions", &["completions", shell]);
        assert!(out.contains("lookup"), "{shell}: {out}");
    }
    let refused = patchwork(&["completions", "tcsh"]);
    assert_eq!(refused.status.code(), Some(2));

    let page = must_pass("manpage", &["manpage"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH patchwork"),
        "{page}"
    );
    assert!(page.contains("lookup"), "{page}");

    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("man");
    must_pass(
        "manpage --out-dir",
        &[
            "manpage",
            "--out-dir",
            out_dir.to_str().expect("utf-8 path"),
        ],
    );
    for page in ["patchwork.1", "patchwork-lookup.1", "patchwork-ca-sign.1"] {
        let text =
            std::fs::read_to_string(out_dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    let lookup = std::fs::read_to_string(out_dir.join("patchwork-lookup.1")).expect("page");
    assert!(lookup.contains("postcode"), "{lookup}");
}

/// `--version` and `version` both name the version and the commit, the
/// commit being this checkout's HEAD when built from one (else "unknown").
#[test]
fn version_names_the_commit() {
    let expected_commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let expected = format!(
        "patchwork {} (commit {expected_commit})",
        env!("CARGO_PKG_VERSION")
    );
    for args in [&["--version"][..], &["version"][..]] {
        let out = must_pass("version", args);
        assert_eq!(out.trim(), expected, "{args:?}");
    }
}

/// `manpage --out-dir` is the one new verb that writes files: a folder it
/// cannot make is refused with the flag named, and nothing else is written.
#[test]
fn manpage_into_a_folder_it_cannot_make_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "mine").expect("write");
    let target = file.join("man");
    let out = patchwork(&["manpage", "--out-dir", target.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--out-dir: cannot create"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).expect("file"), "mine");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
}
