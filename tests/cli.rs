//! The binary as an operator meets it: signals, logs off a terminal, a key
//! file others can read, a plain-text chain URL to another host.
#![cfg(feature = "dev")]

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::within_secs;

fn bin() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_nsn-lane1"));
    c.kill_on_drop(true);
    c
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nsn-lane1-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key_file(dir: &std::path::Path, mode: u32) -> std::path::PathBuf {
    let key = dir.join("lane1.key");
    std::fs::write(&key, "//Bob\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    key
}

/// `run` against `chain` with `key`: it must stop at once with an error;
/// what it said.
async fn refused_run(chain: &str, key: &std::path::Path) -> String {
    let out = within_secs(
        30,
        bin()
            .args(["run", "--chain", chain, "--key-file"])
            .arg(key)
            .output(),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    stderr
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "SIGTERM sent");
}

/// SIGTERM (docker stop, Kubernetes, most supervisors) drains as SIGINT
/// does: the demo stops taking work, lets what runs finish, prints its
/// summary and exits 0. Its log, written to a pipe, has no colour codes.
#[tokio::test]
async fn sigterm_drains_with_the_summary_and_logs_off_a_terminal_have_no_colour() {
    let mut child = bin()
        .args([
            "dev",
            "--block-ms",
            "50",
            "--telemetry-listen",
            "127.0.0.1:0",
            "--model",
            "sleep:{\"duration_ms\":20}",
        ])
        .env("NSN_LANE1_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    // Wait until it works: its first info line about a task.
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let mut seen = Vec::new();
    within_secs(60, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let working = line.contains("verified and paid");
            seen.push(line);
            if working {
                return;
            }
        }
        panic!("it stopped before working: {seen:?}");
    })
    .await;
    sigterm(&child);
    let rest = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
        }
        seen
    });
    let out = within_secs(60, child.wait_with_output()).await.unwrap();
    let logs = rest.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stdout}", out.status);
    assert!(stdout.contains("verified"), "the summary: {stdout}");
    assert!(
        logs.iter().any(|l| l.contains("shutting down")),
        "drained: {logs:?}"
    );
    for line in &logs {
        assert!(!line.contains('\u{1b}'), "colour code in {line:?}");
    }
}

/// The key is the stake: a key file its group or others can read is
/// refused, with the command that fixes it.
#[tokio::test]
async fn a_key_file_others_can_read_is_refused() {
    let dir = temp_dir("key");
    let key = key_file(&dir, 0o644);
    let stderr = refused_run("ws://127.0.0.1:9", &key).await;
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(stderr.contains("644"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plain `ws://` to another host is refused from the URL alone, before
/// any connection, unless the operator says `--allow-insecure-chain`.
#[tokio::test]
async fn a_plain_text_chain_url_to_another_host_is_refused() {
    let dir = temp_dir("ws");
    let key = key_file(&dir, 0o600);
    // A name that never resolves: nothing could be reached even if the
    // check were missing.
    let stderr = refused_run("ws://chain.invalid:9944", &key).await;
    assert!(stderr.contains("--allow-insecure-chain"), "{stderr}");
    // Said on purpose, it gets past the check (and then cannot connect).
    let mut child = bin()
        .args([
            "run",
            "--chain",
            "ws://chain.invalid:9944",
            "--allow-insecure-chain",
            "--key-file",
        ])
        .arg(&key)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    if let Ok(status) = waited {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut e, &mut err).await;
        }
        assert!(!err.contains("--allow-insecure-chain"), "{status:?}: {err}");
    }
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
