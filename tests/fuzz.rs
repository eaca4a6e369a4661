//! Every decoder of outside data, fed arbitrary and mutated input with
//! proptest: task-market events and `Tasks` values (SCALE, from the chain),
//! CIDs (from the chain and the sidecar), and configuration files. None may
//! panic; whatever is refused is refused with a typed error; whatever is
//! accepted is what the bytes say (it encodes back to them, or — a CID in
//! binary form — reads back as the same CID).
//!
//! The corpus of valid encodings comes from the embedded dev chain: a few
//! tasks run through creation, assignment, start, submission, attestation,
//! verification and failure, and every event and `Tasks` value they made.
#![cfg(feature = "dev")]

mod support;

use std::path::Path;
use std::sync::OnceLock;

use nsn_lane1::chain::{MarketCall, MarketEvent, TaskIntent};
use nsn_lane1::config::{Config, ConfigError};
use nsn_lane1::listener::task_from_intent;
use nsn_lane1::task::{AccountId, Cid, FailReason, Lane, ModelId, TaskId};
use parity_scale_codec::{DecodeAll, Encode};
use proptest::prelude::*;
use support::{chain_with, create, created_id, ok};

/// Cases per property: 1,000 (bounded so the suite stays fast), or
/// `NSN_FUZZ_CASES` for a longer run.
fn config() -> ProptestConfig {
    let cases = std::env::var("NSN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Valid events and `Tasks` values, from a dev chain's blocks.
fn corpus() -> &'static (Vec<MarketEvent>, Vec<TaskIntent>) {
    static CORPUS: OnceLock<(Vec<MarketEvent>, Vec<TaskIntent>)> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let chain = chain_with(|c| c.auto_attest = Some(90));
            let alice = chain.submitter(AccountId::ALICE);
            let bob = chain.submitter(AccountId::BOB);
            let mut ids = Vec::new();
            for model in ["sha256", "noop"] {
                let id = created_id(&ok(&alice, create(Lane::Lane1, model)).await);
                ok(&alice, MarketCall::AcceptAssignment { task_id: id }).await;
                ok(&bob, MarketCall::StartTask { task_id: id }).await;
                ids.push(id);
            }
            ok(
                &bob,
                MarketCall::SubmitResult {
                    task_id: ids[0],
                    output_cid: support::OUTPUT_CID.as_bytes().to_vec(),
                    attestation_cid: None,
                },
            )
            .await;
            ok(
                &bob,
                MarketCall::FailTask {
                    task_id: ids[1],
                    reason: FailReason::InvalidInput,
                },
            )
            .await;
            // Blocks for the validators' attestations.
            chain.produce_blocks(4);
            let lane0 = created_id(&ok(&alice, create(Lane::Lane0, "video-render")).await);
            ids.push(lane0);

            let mut events: Vec<MarketEvent> = Vec::new();
            let mut blocks = nsn_lane1::chain::ChainPort::finalized_blocks(&chain, Some(1));
            let head = chain.head_number();
            while let Some(Ok(block)) = futures::StreamExt::next(&mut blocks).await {
                events.extend(block.events.iter().map(|r| r.event.clone()));
                if block.number >= head {
                    break;
                }
            }
            // Variants this run does not make.
            events.push(MarketEvent::TaskExpired { task_id: TaskId(7) });
            events.push(MarketEvent::TaskRejected {
                task_id: TaskId(8),
                executor: Some(AccountId::BOB),
                average_score: Some(12),
                deadline_exceeded: false,
            });
            events.push(MarketEvent::RendererRegistered {
                renderer_id: b"sha256".to_vec(),
                lane: Lane::Lane1,
                deterministic: true,
                max_latency_ms: 60_000,
                vram_required_mb: 0,
            });
            events.push(MarketEvent::RendererDeregistered {
                renderer_id: b"sha256".to_vec(),
            });
            let tasks = ids
                .iter()
                .filter_map(|id| chain.with_market(|m| m.task(*id).cloned()))
                .collect();
            (events, tasks)
        })
    })
}

/// Bytes changed at some places, and perhaps cut short.
fn mutate(mut bytes: Vec<u8>, flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for (at, to) in flips {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = *to;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes
}

#[test]
fn the_corpus_covers_every_event_and_both_lanes() {
    let (events, tasks) = corpus();
    let names: std::collections::BTreeSet<&str> = events.iter().map(|e| e.name()).collect();
    assert_eq!(names.len(), 11, "{names:?}");
    assert!(tasks.iter().any(|t| t.lane == Lane::Lane0));
    assert!(tasks.iter().any(|t| t.lane == Lane::Lane1));
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn events_from_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(event) = MarketEvent::decode_all(&mut &bytes[..]) {
            prop_assert_eq!(event.encode(), bytes);
        }
    }

    #[test]
    fn events_from_mutated_encodings(
        pick in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<Option<usize>>(),
    ) {
        let (events, _) = corpus();
        let bytes = mutate(pick.get(events).encode(), &flips, cut);
        if let Ok(event) = MarketEvent::decode_all(&mut &bytes[..]) {
            prop_assert_eq!(event.encode(), bytes);
        }
    }

    #[test]
    fn tasks_values_from_mutated_encodings(
        pick in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<Option<usize>>(),
    ) {
        let (_, tasks) = corpus();
        let bytes = mutate(pick.get(tasks).encode(), &flips, cut);
        if let Ok(intent) = TaskIntent::decode_all(&mut &bytes[..]) {
            prop_assert_eq!(intent.encode(), bytes);
            // What the node makes of it: a task, or a reason it is not one.
            match task_from_intent(&intent) {
                Ok(task) => {
                    prop_assert_eq!(task.model.as_bytes(), &intent.model_requirements[..]);
                    prop_assert_eq!(Cid::from_bytes(&intent.input_cid).ok(), Some(task.input_cid));
                }
                Err(reason) => prop_assert!(!reason.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn tasks_values_from_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(intent) = TaskIntent::decode_all(&mut &bytes[..]) {
            prop_assert_eq!(intent.encode(), bytes);
            let _ = task_from_intent(&intent);
        }
    }

    #[test]
    fn cids_and_model_ids_from_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(cid) = Cid::from_bytes(&bytes) {
            // Text as UTF-8 is kept as it is; the binary form is turned
            // into text. Either way the CID reads back as itself.
            if std::str::from_utf8(&bytes).is_ok_and(|t| Cid::parse(t).is_ok()) {
                prop_assert_eq!(cid.as_bytes(), &bytes[..]);
            }
            prop_assert_eq!(Cid::from_bytes(cid.as_bytes()).ok(), Some(cid.clone()));
            prop_assert_eq!(Cid::parse(cid.as_str()).ok(), Some(cid.clone()));
        }
        if let Ok(model) = ModelId::from_bytes(&bytes) {
            prop_assert_eq!(model.as_bytes(), &bytes[..]);
        }
    }

    #[test]
    fn cids_from_mutated_text(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<Option<usize>>(),
    ) {
        let text = mutate(support::INPUT_CID.as_bytes().to_vec(), &flips, cut);
        let text = String::from_utf8_lossy(&text);
        match Cid::parse(&text) {
            Ok(cid) => prop_assert_eq!(cid.as_str(), &*text),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn config_files_from_arbitrary_text(text in "\\PC{0,200}") {
        check_config(&text)?;
    }

    #[test]
    fn config_files_from_mutated_valid_ones(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<Option<usize>>(),
    ) {
        let valid = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/lane1.toml"))
            .expect("the example config");
        let text = mutate(valid, &flips, cut);
        check_config(&String::from_utf8_lossy(&text))?;
    }
}

/// A config text is refused with a typed error that names the file, or
/// accepted; an accepted one's settings are checked the same way.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    let origin = Path::new("fuzz.toml");
    match Config::from_toml(text, origin) {
        Ok(config) => {
            if let Err(e) = config.executor_config() {
                prop_assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
            }
            let _ = config.sidecar_config();
        }
        Err(e) => {
            prop_assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
            prop_assert!(e.to_string().contains("fuzz.toml"), "{e}");
        }
    }
    Ok(())
}
