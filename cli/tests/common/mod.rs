//! What the CLI's integration tests share: the real `meshauthz` binary run as a user runs it
//! (arguments, optionally standard input and a working directory; its exit status and output),
//! and files in a directory of this test process.

#![allow(
    dead_code,
    reason = "each test file is its own crate and uses only some of these helpers"
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What one run of `meshauthz` ended with.
pub struct Out {
    /// The exit status; -1 when a signal ended the process.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Standard output as the one JSON document `--output json` writes.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}{}", self.stdout, self.stderr))
    }
}

/// The repository's root: the shipped files' paths (`envoy-config/...`) are relative to it.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `shared/<what>` (Istio's test data, its CRD schemas) when `present` says it is there: under
/// `$MESHAUTHZ_SHARED_DIR` when set (and only there), else in the first `shared/` beside an
/// ancestor of the repository. `None` on a bare clone.
pub fn shared(what: &str, present: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("MESHAUTHZ_SHARED_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => root()
            .ancestors()
            .skip(1)
            .map(|a| a.join("shared"))
            .collect(),
    };
    candidates.iter().map(|d| d.join(what)).find(|d| present(d))
}

/// `meshauthz ARGS` in the test's working directory, with nothing on standard input.
pub fn run(args: &[&str]) -> Out {
    run_with(args, None, None)
}

/// `meshauthz ARGS` in the repository's root, so that `envoy-config/...` paths resolve.
pub fn run_in_root(args: &[&str]) -> Out {
    run_with(args, Some(&root()), None)
}

/// `meshauthz ARGS` with `stdin` on its standard input (for the `-` file argument).
pub fn run_stdin(args: &[&str], stdin: &str) -> Out {
    run_with(args, None, Some(stdin))
}

fn run_with(args: &[&str], dir: Option<&Path>, stdin: Option<&str>) -> Out {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshauthz"));
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command.spawn().expect("run meshauthz");
    if let Some(text) = stdin {
        // Dropped at the end of the statement: the binary sees the end of its input.
        child
            .stdin
            .take()
            .expect("standard input is piped")
            .write_all(text.as_bytes())
            .expect("write meshauthz's standard input");
    }
    let out = child.wait_with_output().expect("wait for meshauthz");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("meshauthz writes UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("meshauthz writes UTF-8"),
    }
}

/// `meshauthz CMD FILE` exits with `code` and its standard error has every one of `says`, for each
/// of `cmds`.
pub fn each_says(cmds: &[&str], file: &str, code: i32, says: &[&str]) {
    for cmd in cmds {
        let out = run(&[cmd, file]);
        assert_eq!(out.code, code, "{cmd}: {}", out.stderr);
        for text in says {
            assert!(
                out.stderr.contains(text),
                "{cmd}: no {text:?} in:\n{}",
                out.stderr
            );
        }
    }
}

/// This test process's own directory: `meshauthz-<test file>-<pid>` in the temporary directory.
pub fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meshauthz-{}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create the test's directory");
    dir
}

/// A file named `name` with `text` in [`dir`]; its path.
pub fn file(name: &str, text: &str) -> String {
    let path = dir().join(name);
    std::fs::write(&path, text).expect("write a test file");
    path.display().to_string()
}
