//! The pallet's own tests, on a mock runtime: a full lifecycle with payment,
//! and the hooks.

use crate as pallet_nsn_task_market;
use crate::*;
use frame::testing_prelude::*;

type Block = frame_system::mocking::MockBlock<Test>;

construct_runtime!(
    pub enum Test {
        System: frame_system,
        Balances: pallet_balances,
        NsnTaskMarket: pallet_nsn_task_market,
    }
);

#[derive_impl(frame_system::config_preludes::TestDefaultConfig)]
impl frame_system::Config for Test {
    type Block = Block;
    type AccountData = pallet_balances::AccountData<u128>;
}

#[derive_impl(pallet_balances::config_preludes::TestDefaultConfig)]
impl pallet_balances::Config for Test {
    type AccountStore = System;
    type Balance = u128;
}

parameter_types! {
    pub const Treasury: u64 = 999;
}

impl Config for Test {
    type Currency = Balances;
    type TreasuryAccount = Treasury;
    type MaxPendingTasks = ConstU32<1000>;
    type MaxAssignedLane1Tasks = ConstU32<1000>;
    type MaxAssignmentCandidates = ConstU32<100>;
    type MaxExpiredPerBlock = ConstU32<100>;
    type MaxPreemptionsPerBlock = ConstU32<10>;
    type MaxRegisteredRenderers = ConstU32<256>;
    type MaxModelIdLen = ConstU32<64>;
    type MaxCidLen = ConstU32<128>;
    type MaxLane0LatencyMs = ConstU32<15_000>;
    type MaxLane1LatencyMs = ConstU32<120_000>;
    type MaxRendererVramMb = ConstU32<11_500>;
    type MinEscrow = ConstU128<100>;
    type MaxAttestations = ConstU32<5>;
    type VerificationQuorum = ConstU32<2>;
    type VerificationPeriod = ConstU64<100>;
    type MinAttestationScore = ConstU8<70>;
    type VerificationFailureSlash = ConstU128<500>;
    type TaskAbandonmentSlash = ConstU128<500>;
}

const ALICE: u64 = 1;
const BOB: u64 = 2;
const DAVE: u64 = 4;
const EVE: u64 = 5;

fn new_test_ext() -> TestState {
    let mut storage = frame_system::GenesisConfig::<Test>::default()
        .build_storage()
        .unwrap();
    pallet_balances::GenesisConfig::<Test> {
        balances: vec![(ALICE, 1_000_000), (BOB, 1_000_000), (DAVE, 1_000), (EVE, 1_000), (999, 1)],
        ..Default::default()
    }
    .assimilate_storage(&mut storage)
    .unwrap();
    pallet_nsn_task_market::GenesisConfig::<Test> {
        renderers: vec![(b"sha256".to_vec(), Lane::Lane1, true, 60_000, 0)],
        executors: vec![(BOB, 10_000, vec![Lane::Lane0, Lane::Lane1])],
        validators: vec![DAVE, EVE],
    }
    .assimilate_storage(&mut storage)
    .unwrap();
    let mut ext = TestState::new(storage);
    ext.execute_with(|| System::set_block_number(1));
    ext
}

fn bounded<S: Get<u32>>(b: &[u8]) -> BoundedVec<u8, S> {
    b.to_vec().try_into().unwrap()
}

#[test]
fn lifecycle_to_verified_pays_70_20_10() {
    new_test_ext().execute_with(|| {
        let escrow = 1_007u128;
        assert_ok!(NsnTaskMarket::create_task_intent(
            RuntimeOrigin::signed(ALICE),
            Lane::Lane1,
            TaskPriority::Normal,
            bounded(b"sha256"),
            bounded(b"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"),
            1_000,
            40,
            escrow,
        ));
        assert_ok!(NsnTaskMarket::accept_assignment(RuntimeOrigin::signed(ALICE), 0));
        assert_eq!(Tasks::<Test>::get(0).unwrap().executor, Some(BOB));
        assert_ok!(NsnTaskMarket::start_task(RuntimeOrigin::signed(BOB), 0));
        assert_ok!(NsnTaskMarket::submit_result(
            RuntimeOrigin::signed(BOB),
            0,
            bounded(b"QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"),
            None
        ));
        let bob_before = Balances::free_balance(BOB);
        assert_ok!(NsnTaskMarket::submit_attestation(RuntimeOrigin::signed(DAVE), 0, 80, None));
        assert_ok!(NsnTaskMarket::submit_attestation(RuntimeOrigin::signed(EVE), 0, 91, None));
        assert_eq!(Tasks::<Test>::get(0).unwrap().status, TaskStatus::Verified);
        let (to_executor, to_treasury, _) = Pallet::<Test>::payment_split(escrow);
        assert_eq!((to_executor, to_treasury), (704, 201));
        assert_eq!(Balances::free_balance(BOB), bob_before + to_executor);
        assert_eq!(Balances::free_balance(999), 1 + to_treasury);
        assert_eq!(Balances::reserved_balance(ALICE), 0);
    });
}

#[test]
fn errors_are_the_interfaces() {
    new_test_ext().execute_with(|| {
        assert_noop!(
            NsnTaskMarket::start_task(RuntimeOrigin::signed(BOB), 7),
            Error::<Test>::TaskNotFound
        );
        assert_noop!(
            NsnTaskMarket::create_task_intent(
                RuntimeOrigin::signed(ALICE),
                Lane::Lane1,
                TaskPriority::Normal,
                bounded(b"sha256"),
                bounded(b"x"),
                0,
                0,
                1_000,
            ),
            Error::<Test>::InvalidDeadline
        );
        assert_noop!(
            NsnTaskMarket::create_task_intent(
                RuntimeOrigin::signed(ALICE),
                Lane::Lane0,
                TaskPriority::Normal,
                bounded(b"sha256"),
                bounded(b"x"),
                0,
                5,
                1_000,
            ),
            Error::<Test>::RendererLaneMismatch
        );
    });
}

fn create(lane: Lane, model: &[u8], deadline_blocks: u64) -> u64 {
    let id = NextTaskId::<Test>::get();
    assert_ok!(NsnTaskMarket::create_task_intent(
        RuntimeOrigin::signed(ALICE),
        lane,
        TaskPriority::Normal,
        bounded(model),
        bounded(b"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"),
        0,
        deadline_blocks,
        1_000,
    ));
    id
}

fn next_block() {
    let n = System::block_number() + 1;
    System::set_block_number(n);
    NsnTaskMarket::on_initialize(n);
}

fn register_lane0() {
    assert_ok!(NsnTaskMarket::register_renderer(
        RuntimeOrigin::root(),
        bounded(b"video-render"),
        Lane::Lane0,
        true,
        10_000,
        8_000
    ));
}

#[test]
fn open_tasks_expire_in_their_deadline_block_with_a_refund() {
    new_test_ext().execute_with(|| {
        let id = create(Lane::Lane1, b"sha256", 2);
        assert_eq!(Balances::reserved_balance(ALICE), 1_000);
        next_block(); // block 2: deadline 3 is still ahead
        assert_eq!(Tasks::<Test>::get(id).unwrap().status, TaskStatus::Open);
        next_block(); // block 3: the deadline block
        assert_eq!(Tasks::<Test>::get(id).unwrap().status, TaskStatus::Expired);
        assert_eq!(Balances::reserved_balance(ALICE), 0);
        System::assert_last_event(Event::TaskExpired { task_id: id }.into());
    });
}

#[test]
fn lane0_work_preempts_assigned_lane1_work_and_the_hook_slashes() {
    new_test_ext().execute_with(|| {
        register_lane0();
        let id = create(Lane::Lane1, b"sha256", 100);
        assert_ok!(NsnTaskMarket::accept_assignment(RuntimeOrigin::signed(ALICE), id));
        assert_ok!(NsnTaskMarket::start_task(RuntimeOrigin::signed(BOB), id));
        let lane0 = create(Lane::Lane0, b"video-render", 100);
        // Lane 1 must wait while Lane 0 work is open.
        let other = create(Lane::Lane1, b"sha256", 100);
        assert_noop!(
            NsnTaskMarket::accept_assignment(RuntimeOrigin::signed(ALICE), other),
            Error::<Test>::Lane0Priority
        );
        let stake = Executors::<Test>::get()[0].1;
        next_block();
        assert_eq!(Tasks::<Test>::get(id).unwrap().status, TaskStatus::Failed);
        System::assert_has_event(
            Event::TaskFailed { task_id: id, reason: FailReason::Preempted }.into(),
        );
        assert_eq!(Executors::<Test>::get()[0].1, stake - 500, "the hook slashes");
        assert!(AssignedLane1Tasks::<Test>::get().is_empty());
        assert_noop!(
            NsnTaskMarket::submit_result(RuntimeOrigin::signed(BOB), id, bounded(b"x"), None),
            Error::<Test>::TaskNotAssigned
        );
        assert_ok!(NsnTaskMarket::accept_assignment(RuntimeOrigin::signed(ALICE), lane0));
        assert_ok!(NsnTaskMarket::accept_assignment(RuntimeOrigin::signed(ALICE), other));
    });
}

#[test]
fn executor_failure_slashes_to_the_treasury() {
    new_test_ext().execute_with(|| {
        let id = create(Lane::Lane1, b"sha256", 100);
        assert_ok!(NsnTaskMarket::accept_assignment(RuntimeOrigin::signed(ALICE), id));
        let stake = Executors::<Test>::get()[0].1;
        assert_ok!(NsnTaskMarket::fail_task(
            RuntimeOrigin::signed(BOB),
            id,
            FailReason::ExecutorFailed
        ));
        assert_eq!(Executors::<Test>::get()[0].1, stake - 500);
        assert_eq!(Balances::free_balance(999), 1 + 500);
        assert_eq!(Balances::reserved_balance(ALICE), 0, "escrow refunded");
        assert_noop!(
            NsnTaskMarket::fail_task(RuntimeOrigin::signed(BOB), id, FailReason::Other),
            Error::<Test>::TaskNotAssigned
        );
    });
}

#[test]
fn results_without_quorum_are_rejected_in_the_deadline_block_and_slashed() {
    new_test_ext().execute_with(|| {
        let id = create(Lane::Lane1, b"sha256", 100);
        assert_ok!(NsnTaskMarket::accept_assignment(RuntimeOrigin::signed(ALICE), id));
        assert_ok!(NsnTaskMarket::submit_result(RuntimeOrigin::signed(BOB), id, bounded(b"x"), None));
        assert_ok!(NsnTaskMarket::submit_attestation(RuntimeOrigin::signed(DAVE), id, 95, None));
        assert_noop!(
            NsnTaskMarket::finalize_task(RuntimeOrigin::signed(EVE), id),
            Error::<Test>::VerificationPending
        );
        let stake = Executors::<Test>::get()[0].1;
        for _ in 0..99 {
            next_block();
        }
        assert_eq!(Tasks::<Test>::get(id).unwrap().status, TaskStatus::PendingVerification);
        next_block(); // block 101: the verification deadline
        assert_eq!(Tasks::<Test>::get(id).unwrap().status, TaskStatus::Rejected);
        assert_eq!(Executors::<Test>::get()[0].1, stake - 500, "a missed deadline slashes");
        assert_noop!(
            NsnTaskMarket::submit_attestation(RuntimeOrigin::signed(EVE), id, 95, None),
            Error::<Test>::TaskNotSubmitted
        );
        System::assert_has_event(
            Event::TaskRejected {
                task_id: id,
                executor: Some(BOB),
                average_score: Some(95),
                deadline_exceeded: true,
            }
            .into(),
        );
    });
}

#[test]
fn renderer_registry_rules() {
    new_test_ext().execute_with(|| {
        assert_noop!(
            NsnTaskMarket::register_renderer(RuntimeOrigin::signed(ALICE), bounded(b"m"), Lane::Lane1, true, 1, 1),
            DispatchError::BadOrigin
        );
        assert_noop!(
            NsnTaskMarket::register_renderer(RuntimeOrigin::root(), bounded(b"v"), Lane::Lane0, false, 1, 1),
            Error::<Test>::RendererNotDeterministic
        );
        assert_noop!(
            NsnTaskMarket::register_renderer(RuntimeOrigin::root(), bounded(b"v"), Lane::Lane0, true, 15_001, 1),
            Error::<Test>::RendererLatencyExceeded
        );
        assert_noop!(
            NsnTaskMarket::register_renderer(RuntimeOrigin::root(), bounded(b"v"), Lane::Lane1, true, 1, 11_501),
            Error::<Test>::RendererVramExceeded
        );
        assert_noop!(
            NsnTaskMarket::register_renderer(RuntimeOrigin::root(), bounded(b"sha256"), Lane::Lane1, true, 1, 1),
            Error::<Test>::RendererAlreadyRegistered
        );
        assert_noop!(
            NsnTaskMarket::deregister_renderer(RuntimeOrigin::root(), bounded(b"nope")),
            Error::<Test>::RendererNotRegistered
        );
        assert_ok!(NsnTaskMarket::deregister_renderer(RuntimeOrigin::root(), bounded(b"sha256")));
    });
}

#[test]
fn payment_split_matches_the_embedded_dev_chain() {
    assert_eq!(Pallet::<Test>::payment_split(100), (70, 20, 10));
    assert_eq!(Pallet::<Test>::payment_split(7), (4, 1, 2));
    assert_eq!(Pallet::<Test>::payment_split(1), (0, 0, 1));
    let (e, t, b) = Pallet::<Test>::payment_split(u128::MAX);
    assert_eq!(e + t + b, u128::MAX);
}

#[test]
fn a_low_score_rejects_and_slashes() {
    new_test_ext().execute_with(|| {
        let id = create(Lane::Lane1, b"sha256", 100);
        assert_ok!(NsnTaskMarket::accept_assignment(RuntimeOrigin::signed(ALICE), id));
        assert_ok!(NsnTaskMarket::submit_result(RuntimeOrigin::signed(BOB), id, bounded(b"x"), None));
        let stake = Executors::<Test>::get()[0].1;
        assert_ok!(NsnTaskMarket::submit_attestation(RuntimeOrigin::signed(DAVE), id, 40, None));
        assert_ok!(NsnTaskMarket::submit_attestation(RuntimeOrigin::signed(EVE), id, 50, None));
        assert_eq!(Tasks::<Test>::get(id).unwrap().status, TaskStatus::Rejected);
        assert_eq!(Executors::<Test>::get()[0].1, stake - 500);
        assert_eq!(Balances::reserved_balance(ALICE), 0, "escrow refunded");
    });
}

#[test]
fn open_queues_are_in_priority_order() {
    new_test_ext().execute_with(|| {
        let with = |priority, deadline_blocks| {
            let id = NextTaskId::<Test>::get();
            assert_ok!(NsnTaskMarket::create_task_intent(
                RuntimeOrigin::signed(ALICE),
                Lane::Lane1,
                priority,
                bounded(b"sha256"),
                bounded(b"c"),
                0,
                deadline_blocks,
                1_000,
            ));
            id
        };
        let low = with(TaskPriority::Low, 10);
        let normal_late = with(TaskPriority::Normal, 50);
        let high = with(TaskPriority::High, 90);
        let normal_early = with(TaskPriority::Normal, 20);
        let normal_early_too = with(TaskPriority::Normal, 20);
        assert_eq!(
            OpenLane1Tasks::<Test>::get().into_inner(),
            vec![high, normal_early, normal_early_too, normal_late, low]
        );
    });
}

#[test]
fn registration_records_its_block_and_the_whole_event() {
    new_test_ext().execute_with(|| {
        System::set_block_number(7);
        register_lane0();
        let info = RendererRegistry::<Test>::get()
            .get(&bounded::<ConstU32<64>>(b"video-render"))
            .cloned()
            .unwrap();
        assert_eq!(info.registered_at, 7);
        System::assert_last_event(
            Event::RendererRegistered {
                renderer_id: bounded(b"video-render"),
                lane: Lane::Lane0,
                deterministic: true,
                max_latency_ms: 10_000,
                vram_required_mb: 8_000,
            }
            .into(),
        );
    });
}
