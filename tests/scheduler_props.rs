//! Property tests: whatever the interleaving of enqueue, cancel, next and
//! requeue, the scheduler hands out tasks in the sort order of their key
//! (Lane 0 first, then priority, deadline, id), and loses none.

use std::collections::BTreeMap;

use nsn_lane1::scheduler::{Scheduler, SchedulerError, TaskKey};
use nsn_lane1::task::{Lane, Priority, TaskId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Enqueue(TaskKey),
    Cancel(u64),
    Next,
    Requeue,
    Complete,
}

fn arb_key() -> impl Strategy<Value = TaskKey> {
    (
        0u64..64,
        prop_oneof![Just(Lane::Lane0), Just(Lane::Lane1)],
        prop_oneof![
            Just(Priority::High),
            Just(Priority::Normal),
            Just(Priority::Low)
        ],
        0u32..16,
    )
        .prop_map(|(id, lane, priority, deadline)| TaskKey {
            id: TaskId(id),
            lane,
            priority,
            deadline,
        })
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => arb_key().prop_map(Op::Enqueue),
        1 => (0u64..64).prop_map(Op::Cancel),
        3 => Just(Op::Next),
        1 => Just(Op::Requeue),
        1 => Just(Op::Complete),
    ]
}

/// The order the scheduler must follow, written independently of it: a tuple
/// that sorts Lane 0 first, High first, earlier deadline, lower id.
fn sort_key(k: &TaskKey) -> (u32, u8, u32, u64) {
    (k.lane.index(), 2 - k.priority.weight(), k.deadline, k.id.0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn pops_in_key_order_under_any_interleaving(ops in proptest::collection::vec(arb_op(), 1..200)) {
        let capacity = 24;
        let mut s: Scheduler<TaskKey> = Scheduler::new(capacity);
        // Reference model: queued tasks ordered by the sort key; running tasks.
        let mut model: BTreeMap<(u32, u8, u32, u64), TaskKey> = BTreeMap::new();
        let mut running: Vec<TaskKey> = Vec::new();

        for op in ops {
            match op {
                Op::Enqueue(k) => {
                    let known = model.values().any(|q| q.id == k.id) || running.iter().any(|r| r.id == k.id);
                    match s.enqueue(k) {
                        Ok(()) => {
                            prop_assert!(!known);
                            prop_assert!(model.len() < capacity);
                            model.insert(sort_key(&k), k);
                        }
                        Err(rej) => {
                            prop_assert_eq!(rej.item, k, "a refused task is handed back");
                            match rej.error {
                                SchedulerError::DuplicateTask(id) => prop_assert!(known && id == k.id),
                                // Requeues may take the queue past its capacity; enqueues may not.
                                SchedulerError::QueueFull { .. } => prop_assert!(!known && model.len() >= capacity),
                                other => prop_assert!(false, "unexpected {other:?}"),
                            }
                        }
                    }
                }
                Op::Cancel(id) => {
                    let pos = model.iter().find(|(_, q)| q.id.0 == id).map(|(sk, _)| *sk);
                    match (s.cancel(TaskId(id)), pos) {
                        (Ok(k), Some(sk)) => prop_assert_eq!(model.remove(&sk), Some(k)),
                        (Err(SchedulerError::NotQueued(_)), None) => prop_assert!(running.iter().any(|r| r.id.0 == id)),
                        (Err(SchedulerError::UnknownTask(_)), None) => prop_assert!(!running.iter().any(|r| r.id.0 == id)),
                        (got, want) => prop_assert!(false, "cancel gave {got:?}, model had {want:?}"),
                    }
                }
                Op::Next => {
                    let want = model.pop_first().map(|(_, k)| k);
                    let got = s.next_task();
                    prop_assert_eq!(got, want);
                    if let Some(k) = got {
                        running.push(k);
                    }
                }
                Op::Requeue => {
                    if let Some(k) = running.pop() {
                        s.requeue(k).map_err(|r| TestCaseError::fail(r.error.to_string()))?;
                        model.insert(sort_key(&k), k);
                    }
                }
                Op::Complete => {
                    if let Some(k) = running.pop() {
                        prop_assert_eq!(s.complete(k.id), Ok(()));
                    }
                }
            }
            let st = s.stats();
            prop_assert_eq!(st.queued(), model.len());
            prop_assert_eq!(st.running(), running.len());
            prop_assert_eq!(s.peek().copied(), model.values().next().copied());
            let lane1_running = running.iter().any(|r| r.lane == Lane::Lane1);
            let lane0_waiting = model.values().any(|q| q.lane == Lane::Lane0);
            prop_assert_eq!(s.should_preempt(), lane1_running && lane0_waiting);
        }

        // Draining what is left follows the model to the end: nothing lost.
        let rest: Vec<TaskKey> = std::iter::from_fn(|| s.next_task()).collect();
        let want: Vec<TaskKey> = model.into_values().collect();
        prop_assert_eq!(rest, want);
    }
}
