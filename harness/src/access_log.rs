//! Access-log readers: the file Envoy writes (`{{ACCESS_LOG}}`), read line by line.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{err, Result};

/// Every line of the access log so far (empty when the file does not exist yet).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait (bounded) until at least `count` lines satisfy `pred`; returns them.
/// Envoy flushes access logs periodically (1 s by default), hence the wait.
pub fn wait_for_lines(
    path: &Path,
    count: usize,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let found: Vec<String> = lines(path).into_iter().filter(|l| pred(l)).collect();
        if found.len() >= count {
            return Ok(found);
        }
        if Instant::now() > deadline {
            return err(format!(
                "after {timeout:?}, {} of {count} wanted access-log lines in {}; the log has:\n{}",
                found.len(),
                path.display(),
                lines(path).join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait (bounded) for one line satisfying `pred`.
pub fn wait_for_line(
    path: &Path,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Result<String> {
    let mut v = wait_for_lines(path, 1, timeout, pred)?;
    Ok(v.swap_remove(0))
}

/// The access log's JSON lines (the templates log `json_format`), unparsable lines skipped.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    lines(path)
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait (bounded) for the JSON entry whose `method` and `path` are the given ones.
pub fn wait_for_request(
    path: &Path,
    method: &str,
    request_path: &str,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = json_lines(path).into_iter().find(|v| {
            v.get("method").and_then(|m| m.as_str()) == Some(method)
                && v.get("path").and_then(|m| m.as_str()) == Some(request_path)
        }) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return err(format!(
                "after {timeout:?}, no access-log entry for {method} {request_path} in {}; the log has:\n{}",
                path.display(),
                lines(path).join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
