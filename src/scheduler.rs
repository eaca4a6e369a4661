//! Lane-separated priority queues keyed by the chain's task id.
//!
//! Lane 0 always goes first. Within a lane the order is the chain's own:
//! higher priority, then earlier deadline, then lower task id. Every operation
//! (enqueue, next, cancel-by-id, requeue, complete, fail) is O(log n): a hash
//! index finds a task by id, and one ordered set per lane holds 16-byte keys.
//!
//! ```
//! use nsn_lane1::scheduler::{Scheduler, TaskKey};
//! use nsn_lane1::task::{Lane, Priority, TaskId};
//!
//! let mut s = Scheduler::new(100);
//! let key = |id, lane, priority, deadline| TaskKey { id: TaskId(id), lane, priority, deadline };
//! s.enqueue(key(1, Lane::Lane1, Priority::Low, 10)).unwrap();
//! s.enqueue(key(2, Lane::Lane1, Priority::High, 50)).unwrap();
//! s.enqueue(key(3, Lane::Lane0, Priority::Low, 90)).unwrap();
//!
//! assert_eq!(s.next_task().unwrap().id, TaskId(3)); // Lane 0 first
//! assert_eq!(s.next_task().unwrap().id, TaskId(2)); // then High before Low
//! s.complete(TaskId(3)).unwrap();
//! assert_eq!(s.stats().completed, 1);
//! ```

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use crate::task::{BlockNumber, Lane, Priority, Task, TaskId};

/// What the scheduler needs to know to order a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskKey {
    /// The chain's task id.
    pub id: TaskId,
    /// The task's lane.
    pub lane: Lane,
    /// Its priority within the lane.
    pub priority: Priority,
    /// Its deadline block.
    pub deadline: BlockNumber,
}

/// Anything the scheduler can hold: it must say its id, lane, priority and
/// deadline, which must not change while it is queued.
pub trait Schedulable {
    /// The task's ordering key.
    fn key(&self) -> TaskKey;
}

impl Schedulable for TaskKey {
    fn key(&self) -> TaskKey {
        *self
    }
}

impl Schedulable for Task {
    fn key(&self) -> TaskKey {
        TaskKey {
            id: self.id,
            lane: self.lane,
            priority: self.priority,
            deadline: self.deadline,
        }
    }
}

/// A position in a lane queue, packed into one integer whose order is the
/// chain's order: priority rank (0 = `High`) in bits 96.., then the deadline in
/// bits 64..96, then the task id. One integer compare per step keeps the
/// ordered set's searches cheap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey(u128);

impl QueueKey {
    fn of(key: &TaskKey) -> Self {
        let rank = u128::from(2 - key.priority.weight());
        QueueKey(rank << 96 | u128::from(key.deadline) << 64 | u128::from(key.id.0))
    }

    fn id(self) -> TaskId {
        // The low 64 bits are the id.
        TaskId(self.0 as u64)
    }
}

/// Hashes task ids by Fibonacci multiplication. Task ids are assigned by the
/// chain (sequentially), not chosen by a peer, so a keyed hash buys nothing;
/// the multiplication spreads sequential ids over the table's buckets (low
/// bits) and its control bytes (high bits).
#[derive(Clone, Copy, Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<V> = HashMap<TaskId, V, BuildHasherDefault<IdHasher>>;

/// Where a task known to the scheduler is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Waiting in its lane's queue.
    Queued(Lane),
    /// Taken by `next_task` and not yet completed, failed or requeued.
    Running(Lane),
}

/// Why the scheduler refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The queues hold `capacity` tasks already.
    #[error("scheduler queue is full ({capacity} tasks queued)")]
    QueueFull {
        /// The configured capacity.
        capacity: usize,
    },
    /// A task with this id is already queued or running.
    #[error("task {0} is already queued or running")]
    DuplicateTask(TaskId),
    /// No task with this id is queued or running.
    #[error("task {0} is not known to the scheduler")]
    UnknownTask(TaskId),
    /// The task is queued, not running.
    #[error("task {0} is queued, not running")]
    NotRunning(TaskId),
    /// The task is running, not queued.
    #[error("task {0} is running, not queued")]
    NotQueued(TaskId),
}

/// A task the scheduler did not take, handed back with the reason, so that
/// nothing is lost.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Rejected<T> {
    /// Why it was refused.
    pub error: SchedulerError,
    /// The task, returned to the caller.
    pub item: T,
}

/// Counts of what the scheduler holds and has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Lane 0 tasks waiting.
    pub queued_lane0: usize,
    /// Lane 1 tasks waiting.
    pub queued_lane1: usize,
    /// Lane 0 tasks running.
    pub running_lane0: usize,
    /// Lane 1 tasks running.
    pub running_lane1: usize,
    /// Tasks completed since start.
    pub completed: u64,
    /// Tasks failed since start.
    pub failed: u64,
    /// Queued tasks cancelled since start.
    pub cancelled: u64,
}

impl SchedulerStats {
    /// All tasks waiting, both lanes.
    pub fn queued(&self) -> usize {
        self.queued_lane0 + self.queued_lane1
    }

    /// All tasks running, both lanes.
    pub fn running(&self) -> usize {
        self.running_lane0 + self.running_lane1
    }
}

/// A task the scheduler holds: waiting, or handed out and running. Either
/// way the scheduler keeps its body: it is the node's one record of the
/// tasks it runs.
#[derive(Debug)]
enum Slot<T> {
    Queued(T),
    Running(T),
}

/// Two bounded lane queues in the chain's order; see the [module docs](self).
pub struct Scheduler<T = Task> {
    /// Every task held, queued or running, by id: one lookup answers
    /// duplicates, cancels and completions.
    tasks: IdMap<Slot<T>>,
    /// One ordered set of keys per lane, indexed by `Lane::index`.
    lanes: [BTreeSet<QueueKey>; 2],
    running_per_lane: [usize; 2],
    capacity: usize,
    completed: u64,
    failed: u64,
    cancelled: u64,
}

impl<T: Schedulable> fmt::Debug for Scheduler<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("capacity", &self.capacity)
            .field("stats", &self.stats())
            .finish()
    }
}

fn lane_slot(lane: Lane) -> usize {
    lane.index() as usize
}

impl<T: Schedulable> Scheduler<T> {
    /// An empty scheduler that queues at most `capacity` tasks (running tasks
    /// do not count against it).
    pub fn new(capacity: usize) -> Self {
        Scheduler {
            tasks: IdMap::default(),
            lanes: [BTreeSet::new(), BTreeSet::new()],
            running_per_lane: [0, 0],
            capacity,
            completed: 0,
            failed: 0,
            cancelled: 0,
        }
    }

    /// The most tasks that can be queued at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues a task. A duplicate id or a full queue hands the task back.
    pub fn enqueue(&mut self, item: T) -> Result<(), Rejected<T>> {
        let key = item.key();
        let full = self.len() >= self.capacity;
        match self.tasks.entry(key.id) {
            Entry::Occupied(_) => Err(Rejected {
                error: SchedulerError::DuplicateTask(key.id),
                item,
            }),
            Entry::Vacant(_) if full => Err(Rejected {
                error: SchedulerError::QueueFull {
                    capacity: self.capacity,
                },
                item,
            }),
            Entry::Vacant(slot) => {
                slot.insert(Slot::Queued(item));
                self.lanes[lane_slot(key.lane)].insert(QueueKey::of(&key));
                Ok(())
            }
        }
    }

    /// Takes the best queued task (Lane 0 first) and marks it running; the
    /// scheduler keeps it while it runs ([`running_task`](Self::running_task))
    /// and hands out a copy.
    pub fn next_task(&mut self) -> Option<T>
    where
        T: Clone,
    {
        let lane = Lane::ALL
            .into_iter()
            .find(|lane| !self.lanes[lane_slot(*lane)].is_empty())?;
        let slot = lane_slot(lane);
        let id = self.lanes[slot].pop_first()?.id();
        let entry = self.tasks.get_mut(&id)?;
        match entry {
            Slot::Queued(item) => {
                let item = item.clone();
                *entry = Slot::Running(item.clone());
                self.running_per_lane[slot] += 1;
                Some(item)
            }
            // Keys are only in a lane set while their task is queued.
            Slot::Running(_) => None,
        }
    }

    /// The task `next_task` would return, without taking it.
    pub fn peek(&self) -> Option<&T> {
        Lane::ALL
            .into_iter()
            .find_map(|lane| self.lanes[lane_slot(lane)].first())
            .and_then(|qk| self.get(qk.id()))
    }

    /// Removes a queued task and returns it.
    pub fn cancel(&mut self, id: TaskId) -> Result<T, SchedulerError> {
        match self.tasks.entry(id) {
            Entry::Vacant(_) => Err(SchedulerError::UnknownTask(id)),
            Entry::Occupied(e) if matches!(e.get(), Slot::Running(_)) => {
                Err(SchedulerError::NotQueued(id))
            }
            Entry::Occupied(e) => match e.remove() {
                Slot::Queued(item) => {
                    let key = item.key();
                    self.lanes[lane_slot(key.lane)].remove(&QueueKey::of(&key));
                    self.cancelled += 1;
                    Ok(item)
                }
                Slot::Running(_) => Err(SchedulerError::NotQueued(id)),
            },
        }
    }

    /// Puts a running task back in its queue (for example after a preemption
    /// that came before the chain heard of the start). Capacity is not
    /// checked: the task was admitted once and must not be lost.
    pub fn requeue(&mut self, item: T) -> Result<(), Rejected<T>> {
        let key = item.key();
        let Some(entry) = self.tasks.get_mut(&key.id) else {
            return Err(Rejected {
                error: SchedulerError::UnknownTask(key.id),
                item,
            });
        };
        let Slot::Running(running) = entry else {
            return Err(Rejected {
                error: SchedulerError::NotRunning(key.id),
                item,
            });
        };
        let lane = running.key().lane;
        *entry = Slot::Queued(item);
        self.running_per_lane[lane_slot(lane)] -= 1;
        self.lanes[lane_slot(key.lane)].insert(QueueKey::of(&key));
        Ok(())
    }

    /// Marks a running task completed.
    pub fn complete(&mut self, id: TaskId) -> Result<(), SchedulerError> {
        self.finish(id)?;
        self.completed += 1;
        Ok(())
    }

    /// Marks a running task failed.
    pub fn fail(&mut self, id: TaskId) -> Result<(), SchedulerError> {
        self.finish(id)?;
        self.failed += 1;
        Ok(())
    }

    fn finish(&mut self, id: TaskId) -> Result<(), SchedulerError> {
        match self.tasks.entry(id) {
            Entry::Vacant(_) => Err(SchedulerError::UnknownTask(id)),
            Entry::Occupied(e) => match e.get() {
                Slot::Queued(_) => Err(SchedulerError::NotRunning(id)),
                Slot::Running(item) => {
                    let lane = item.key().lane;
                    e.remove();
                    self.running_per_lane[lane_slot(lane)] -= 1;
                    Ok(())
                }
            },
        }
    }

    /// A running task, by id.
    pub fn running_task(&self, id: TaskId) -> Option<&T> {
        match self.tasks.get(&id) {
            Some(Slot::Running(item)) => Some(item),
            _ => None,
        }
    }

    /// Whether the task was handed out and has not finished.
    pub fn is_running(&self, id: TaskId) -> bool {
        self.running_task(id).is_some()
    }

    /// True when Lane 0 work waits while Lane 1 work runs: the Lane 1 work
    /// should yield.
    pub fn should_preempt(&self) -> bool {
        !self.lanes[lane_slot(Lane::Lane0)].is_empty()
            && self.running_per_lane[lane_slot(Lane::Lane1)] > 0
    }

    /// Where a task is, if the scheduler holds it.
    pub fn placement(&self, id: TaskId) -> Option<Placement> {
        self.tasks.get(&id).map(|slot| match slot {
            Slot::Queued(item) => Placement::Queued(item.key().lane),
            Slot::Running(item) => Placement::Running(item.key().lane),
        })
    }

    /// A queued task, by id.
    pub fn get(&self, id: TaskId) -> Option<&T> {
        match self.tasks.get(&id) {
            Some(Slot::Queued(item)) => Some(item),
            _ => None,
        }
    }

    /// Number of queued tasks, both lanes.
    pub fn len(&self) -> usize {
        self.lanes[0].len() + self.lanes[1].len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queue lengths, running counts and totals.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            queued_lane0: self.lanes[0].len(),
            queued_lane1: self.lanes[1].len(),
            running_lane0: self.running_per_lane[0],
            running_lane1: self.running_per_lane[1],
            completed: self.completed,
            failed: self.failed,
            cancelled: self.cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64, lane: Lane, priority: Priority, deadline: BlockNumber) -> TaskKey {
        TaskKey {
            id: TaskId(id),
            lane,
            priority,
            deadline,
        }
    }

    fn drain(s: &mut Scheduler<TaskKey>) -> Vec<u64> {
        std::iter::from_fn(|| s.next_task())
            .map(|k| k.id.0)
            .collect()
    }

    #[test]
    fn lane0_first_then_priority_deadline_id() {
        let mut s = Scheduler::new(10);
        s.enqueue(key(5, Lane::Lane1, Priority::Normal, 20))
            .unwrap();
        s.enqueue(key(4, Lane::Lane1, Priority::Normal, 20))
            .unwrap();
        s.enqueue(key(3, Lane::Lane1, Priority::Normal, 10))
            .unwrap();
        s.enqueue(key(2, Lane::Lane1, Priority::High, 99)).unwrap();
        s.enqueue(key(1, Lane::Lane1, Priority::Low, 1)).unwrap();
        s.enqueue(key(9, Lane::Lane0, Priority::Low, 500)).unwrap();
        assert_eq!(s.peek().unwrap().id, TaskId(9));
        assert_eq!(drain(&mut s), vec![9, 2, 3, 4, 5, 1]);
        assert!(s.next_task().is_none());
    }

    #[test]
    fn duplicate_is_rejected_and_handed_back() {
        let mut s = Scheduler::new(10);
        s.enqueue(key(1, Lane::Lane1, Priority::Normal, 5)).unwrap();
        let dup = key(1, Lane::Lane0, Priority::High, 1);
        let err = s.enqueue(dup).unwrap_err();
        assert_eq!(err.error, SchedulerError::DuplicateTask(TaskId(1)));
        assert_eq!(err.item, dup);
        // A running task is still a duplicate.
        s.next_task().unwrap();
        let err = s
            .enqueue(key(1, Lane::Lane1, Priority::Low, 5))
            .unwrap_err();
        assert_eq!(err.error, SchedulerError::DuplicateTask(TaskId(1)));
    }

    #[test]
    fn full_queue_is_rejected_and_running_tasks_do_not_count() {
        let mut s = Scheduler::new(2);
        s.enqueue(key(1, Lane::Lane1, Priority::Normal, 5)).unwrap();
        s.enqueue(key(2, Lane::Lane0, Priority::Normal, 5)).unwrap();
        let err = s
            .enqueue(key(3, Lane::Lane1, Priority::Normal, 5))
            .unwrap_err();
        assert_eq!(err.error, SchedulerError::QueueFull { capacity: 2 });
        assert_eq!(err.item.id, TaskId(3));
        assert_eq!(err.to_string(), "scheduler queue is full (2 tasks queued)");
        s.next_task().unwrap();
        s.enqueue(key(3, Lane::Lane1, Priority::Normal, 5)).unwrap();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn cancel_by_id() {
        let mut s = Scheduler::new(10);
        s.enqueue(key(1, Lane::Lane1, Priority::Normal, 5)).unwrap();
        s.enqueue(key(2, Lane::Lane1, Priority::Normal, 6)).unwrap();
        s.enqueue(key(3, Lane::Lane1, Priority::Normal, 7)).unwrap();
        assert_eq!(s.cancel(TaskId(2)).unwrap().id, TaskId(2));
        assert_eq!(
            s.cancel(TaskId(2)).unwrap_err(),
            SchedulerError::UnknownTask(TaskId(2))
        );
        assert_eq!(s.next_task().unwrap().id, TaskId(1));
        assert_eq!(
            s.cancel(TaskId(1)).unwrap_err(),
            SchedulerError::NotQueued(TaskId(1))
        );
        assert_eq!(drain(&mut s), vec![3]);
        assert_eq!(s.stats().cancelled, 1);
    }

    #[test]
    fn complete_and_fail_need_a_running_task() {
        let mut s = Scheduler::new(10);
        s.enqueue(key(1, Lane::Lane1, Priority::Normal, 5)).unwrap();
        s.enqueue(key(2, Lane::Lane1, Priority::Normal, 6)).unwrap();
        assert_eq!(
            s.complete(TaskId(1)).unwrap_err(),
            SchedulerError::NotRunning(TaskId(1))
        );
        assert_eq!(
            s.fail(TaskId(7)).unwrap_err(),
            SchedulerError::UnknownTask(TaskId(7))
        );
        s.next_task().unwrap();
        s.next_task().unwrap();
        assert_eq!(
            s.placement(TaskId(1)),
            Some(Placement::Running(Lane::Lane1))
        );
        s.complete(TaskId(1)).unwrap();
        s.fail(TaskId(2)).unwrap();
        assert_eq!(
            s.complete(TaskId(1)).unwrap_err(),
            SchedulerError::UnknownTask(TaskId(1))
        );
        let st = s.stats();
        assert_eq!((st.completed, st.failed, st.running()), (1, 1, 0));
        assert_eq!(s.placement(TaskId(1)), None);
    }

    #[test]
    fn requeue_returns_a_running_task_to_its_place() {
        let mut s = Scheduler::new(1);
        s.enqueue(key(1, Lane::Lane1, Priority::Normal, 5)).unwrap();
        let t = s.next_task().unwrap();
        s.enqueue(key(2, Lane::Lane1, Priority::Normal, 9)).unwrap();
        // Capacity 1 is used by task 2, yet the requeue is not refused.
        s.requeue(t).unwrap();
        assert_eq!(s.stats().running_lane1, 0);
        assert_eq!(drain(&mut s), vec![1, 2]);
        let err = s
            .requeue(key(3, Lane::Lane1, Priority::Normal, 5))
            .unwrap_err();
        assert_eq!(err.error, SchedulerError::UnknownTask(TaskId(3)));
        s.enqueue(key(4, Lane::Lane1, Priority::Normal, 5)).unwrap();
        let err = s
            .requeue(key(4, Lane::Lane1, Priority::Normal, 5))
            .unwrap_err();
        assert_eq!(err.error, SchedulerError::NotRunning(TaskId(4)));
    }

    #[test]
    fn should_preempt_when_lane0_waits_and_lane1_runs() {
        let mut s = Scheduler::new(10);
        assert!(!s.should_preempt());
        s.enqueue(key(1, Lane::Lane1, Priority::Normal, 5)).unwrap();
        s.next_task().unwrap();
        assert!(!s.should_preempt(), "no Lane 0 work waits");
        s.enqueue(key(2, Lane::Lane0, Priority::Normal, 5)).unwrap();
        assert!(s.should_preempt());
        s.fail(TaskId(1)).unwrap();
        assert!(!s.should_preempt(), "no Lane 1 work runs");
        s.enqueue(key(3, Lane::Lane1, Priority::High, 1)).unwrap();
        assert_eq!(s.next_task().unwrap().id, TaskId(2));
        assert!(!s.should_preempt(), "Lane 0 runs, nothing of Lane 0 waits");
    }

    #[test]
    fn stats_count_per_lane() {
        let mut s = Scheduler::new(10);
        s.enqueue(key(1, Lane::Lane0, Priority::Normal, 5)).unwrap();
        s.enqueue(key(2, Lane::Lane1, Priority::Normal, 5)).unwrap();
        s.enqueue(key(3, Lane::Lane1, Priority::Normal, 5)).unwrap();
        s.next_task().unwrap();
        let st = s.stats();
        assert_eq!(
            (
                st.queued_lane0,
                st.queued_lane1,
                st.running_lane0,
                st.running_lane1
            ),
            (0, 2, 1, 0)
        );
        assert_eq!(s.get(TaskId(2)).unwrap().id, TaskId(2));
        assert_eq!(s.placement(TaskId(3)), Some(Placement::Queued(Lane::Lane1)));
    }
}
