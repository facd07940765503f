//! The README's first command: `ferry demo` (and its MariaDB flavour) must run on a machine with
//! only the installed servers, and end with its own equality proof passing.

use std::process::Command;

/// Runs `ferry demo` with these extra arguments and returns its output (asserting success).
fn demo(extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["demo", "--rows", "3000", "--stream-seconds", "1"])
        .args(extra)
        .output()
        .expect("run ferry demo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "ferry demo {extra:?} failed ({:?}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stdout
}

#[test]
fn postgres_demo_proves_equality() {
    let stdout = demo(&[]);
    assert!(
        stdout.contains("verified: every table is equal"),
        "{stdout}"
    );
    assert!(!stdout.contains("NOT EQUAL"), "{stdout}");
}

#[test]
fn mysql_demo_proves_equality() {
    let stdout = demo(&["--mysql"]);
    assert!(stdout.contains("verified: every row is equal"), "{stdout}");
    assert!(
        stdout.contains("customers") && stdout.contains("orders"),
        "{stdout}"
    );
}
