//! The per-task log lines. A test binary of its own: tracing decides per
//! call site, process-wide, whether anyone listens, and the other tests'
//! nodes hit the same call sites with no subscriber while this one listens
//! on its own thread.
#![cfg(feature = "dev")]

mod support;

use std::time::Duration;

use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::task::TaskId;
use support::*;

/// Log lines go to a buffer the test reads.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    /// The messages logged at info for `task`, in order (JSON lines with a
    /// `task_id` field).
    fn task_messages(&self, task: TaskId) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "INFO")
            .filter(|v| v["fields"]["task_id"] == task.to_string())
            .filter_map(|v| v["fields"]["message"].as_str().map(str::to_owned))
            .collect()
    }
}

#[tokio::test]
async fn each_state_change_of_a_task_is_one_info_line_with_its_id() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::start(
        ExecutorConfig {
            shutdown_grace: Duration::from_secs(5),
            ..ExecutorConfig::default()
        },
        timed,
    );
    let id = h.post_until_verified("sha256", b"log me").await;
    let last = "verified and paid";
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while !logs.task_messages(id).iter().any(|m| m == last) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        got.is_ok(),
        "no {last:?} line in {:?}",
        logs.task_messages(id)
    );
    // A node that starts after the assignment also reports it from its
    // reconciliation ("resuming task assigned to us"); that is a line of
    // the node's start, not a state change of the task.
    let lines: Vec<String> = logs
        .task_messages(id)
        .into_iter()
        .filter(|m| m != "resuming task assigned to us")
        .collect();
    // The run and the start's inclusion race (optimistic start): the start
    // is logged once, anywhere after admission.
    assert_eq!(
        lines
            .iter()
            .filter(|m| *m != "started on chain")
            .map(String::as_str)
            .collect::<Vec<_>>(),
        [
            "assigned to this node",
            "admitted; starting",
            "executing",
            "output ready; submitting",
            "result submitted",
            last,
        ],
    );
    assert_eq!(
        lines.iter().filter(|m| *m == "started on chain").count(),
        1,
        "{lines:?}"
    );
}
