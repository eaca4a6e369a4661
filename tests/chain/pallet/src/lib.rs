//! The NSN task market, as the in-repo dev runtime runs it: the calls, events,
//! storage and errors of the interface the executor speaks (call indices,
//! names, argument types, event fields, storage names, error variants), with
//! the same state machine as the crate's embedded dev chain
//! (`src/chain/dev/pallet.rs`), so the conformance suite can hold the two to
//! each other.
//!
//! It follows the deployed pallet's behaviour (`TASK_MARKET.md`, "Behaviour
//! details"): open queues in priority order, expiry in the deadline block,
//! one executor drawn per block (the randomness subject is a fixed string),
//! `TaskNotOpen` / `TaskNotAssigned` for status errors, empty attestation
//! CIDs refused on both lanes, the verification deadline enforced by the hook
//! before the block's extrinsics, and slashes where the deployed pallet
//! slashes: the executor's or requester's `fail_task` with `Preempted` or
//! `ExecutorFailed`, the preemption hook (`TaskAbandonmentSlash`), and a
//! rejection for a low score or a missed verification deadline
//! (`VerificationFailureSlash`).
//!
//! Decisions the interface leaves open are taken as the embedded dev chain
//! takes them: the 70 / 20 / 10 split floors the two shares and burns the
//! remainder; a slash takes at most the whole stake and pays it to the
//! treasury; the executor is picked stake-weighted among the lane's executors
//! (first `MaxAssignmentCandidates` by account id) from
//! `blake2_256("nsn-task-market/assign" ‖ parent hash)`.
//!
//! The deployed pallet has no genesis config (renderers are registered by
//! root after genesis); this one keeps one for tests, and it registers
//! renderers through the same code as `register_renderer`.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub use pallet::*;

#[frame::pallet(dev_mode)]
pub mod pallet {
    use alloc::vec::Vec;
    use codec::{Decode, DecodeWithMemTracking, Encode, MaxEncodedLen};
    use frame::prelude::*;
    use frame::traits::{BalanceStatus, Currency, ReservableCurrency};
    use scale_info::TypeInfo;

    /// The balance type of the currency.
    pub type BalanceOf<T> =
        <<T as Config>::Currency as Currency<<T as frame_system::Config>::AccountId>>::Balance;

    /// A model (renderer) id.
    pub type ModelIdOf<T> = BoundedVec<u8, <T as Config>::MaxModelIdLen>;
    /// A CID.
    pub type CidOf<T> = BoundedVec<u8, <T as Config>::MaxCidLen>;

    macro_rules! chain_enum {
        ($(#[$doc:meta])* $name:ident { $($variant:ident),* $(,)? }) => {
            $(#[$doc])*
            #[derive(
                Encode, Decode, DecodeWithMemTracking, Clone, Copy, PartialEq, Eq, Debug,
                TypeInfo, MaxEncodedLen, serde::Serialize, serde::Deserialize,
            )]
            pub enum $name { $($variant),* }
        };
    }

    chain_enum!(
        /// The two lanes.
        Lane { Lane0, Lane1 }
    );
    chain_enum!(
        /// A task's priority (weight 2, 1, 0).
        TaskPriority { High, Normal, Low }
    );
    chain_enum!(
        /// A task's status.
        TaskStatus {
            Open, Assigned, Executing, Completed, Failed, Expired, Submitted,
            PendingVerification, Verified, Rejected,
        }
    );
    chain_enum!(
        /// Why a task failed.
        FailReason { ExecutorFailed, Cancelled, DeadlineExceeded, Preempted, InvalidInput, Other }
    );

    impl TaskStatus {
        fn is_terminal(self) -> bool {
            matches!(
                self,
                TaskStatus::Completed
                    | TaskStatus::Failed
                    | TaskStatus::Expired
                    | TaskStatus::Verified
                    | TaskStatus::Rejected
            )
        }
    }

    /// The value of `Tasks(id)`.
    #[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo)]
    #[scale_info(skip_type_params(T))]
    pub struct TaskIntent<T: Config> {
        /// The task id.
        pub id: u64,
        /// Its lane.
        pub lane: Lane,
        /// Its priority.
        pub priority: TaskPriority,
        /// Who created it.
        pub requester: T::AccountId,
        /// Its executor, once assigned.
        pub executor: Option<T::AccountId>,
        /// Its status.
        pub status: TaskStatus,
        /// The escrow reserved.
        pub escrow: BalanceOf<T>,
        /// The block it was created in.
        pub created_at: BlockNumberFor<T>,
        /// Its deadline block.
        pub deadline: BlockNumberFor<T>,
        /// The model it needs.
        pub model_requirements: ModelIdOf<T>,
        /// Its input's CID.
        pub input_cid: CidOf<T>,
        /// The compute budget.
        pub compute_budget: u64,
        /// The result's CID.
        pub output_cid: Option<CidOf<T>>,
        /// The attestation's CID.
        pub attestation_cid: Option<CidOf<T>>,
    }

    /// A registered renderer.
    #[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
    #[scale_info(skip_type_params(T))]
    pub struct RendererInfo<T: Config> {
        /// Its lane.
        pub lane: Lane,
        /// Whether its output is deterministic.
        pub deterministic: bool,
        /// Its declared worst-case latency.
        pub max_latency_ms: u32,
        /// The VRAM it needs.
        pub vram_required_mb: u32,
        /// The block it was registered in.
        pub registered_at: BlockNumberFor<T>,
    }

    #[pallet::pallet]
    pub struct Pallet<T>(_);

    #[pallet::config]
    pub trait Config: frame_system::Config<RuntimeEvent: From<Event<Self>>> {
        /// Holds escrow and stake.
        type Currency: ReservableCurrency<Self::AccountId>;
        /// Receives the treasury share and slashes.
        #[pallet::constant]
        type TreasuryAccount: Get<Self::AccountId>;
        /// Most open tasks per lane (also bounds the other task lists).
        #[pallet::constant]
        type MaxPendingTasks: Get<u32>;
        /// Most assigned or executing Lane 1 tasks.
        #[pallet::constant]
        type MaxAssignedLane1Tasks: Get<u32>;
        /// Most executors considered for an assignment.
        #[pallet::constant]
        type MaxAssignmentCandidates: Get<u32>;
        /// Most tasks expired (and verifications timed out) per block.
        #[pallet::constant]
        type MaxExpiredPerBlock: Get<u32>;
        /// Most Lane 1 tasks preempted per block.
        #[pallet::constant]
        type MaxPreemptionsPerBlock: Get<u32>;
        /// Most renderers.
        #[pallet::constant]
        type MaxRegisteredRenderers: Get<u32>;
        /// Longest model id.
        #[pallet::constant]
        type MaxModelIdLen: Get<u32>;
        /// Longest CID.
        #[pallet::constant]
        type MaxCidLen: Get<u32>;
        /// Highest Lane 0 renderer latency.
        #[pallet::constant]
        type MaxLane0LatencyMs: Get<u32>;
        /// Highest Lane 1 renderer latency.
        #[pallet::constant]
        type MaxLane1LatencyMs: Get<u32>;
        /// Most VRAM a renderer may need.
        #[pallet::constant]
        type MaxRendererVramMb: Get<u32>;
        /// Least escrow.
        #[pallet::constant]
        type MinEscrow: Get<BalanceOf<Self>>;
        /// Most attestations per task.
        #[pallet::constant]
        type MaxAttestations: Get<u32>;
        /// Attestations needed.
        #[pallet::constant]
        type VerificationQuorum: Get<u32>;
        /// Blocks validators have to attest.
        #[pallet::constant]
        type VerificationPeriod: Get<BlockNumberFor<Self>>;
        /// Lowest passing average score.
        #[pallet::constant]
        type MinAttestationScore: Get<u8>;
        /// What a slash for a result that failed verification takes.
        #[pallet::constant]
        type VerificationFailureSlash: Get<BalanceOf<Self>>;
        /// What a slash for abandoned (failed or preempted) work takes.
        #[pallet::constant]
        type TaskAbandonmentSlash: Get<BalanceOf<Self>>;
    }

    #[pallet::storage]
    pub type NextTaskId<T> = StorageValue<_, u64, ValueQuery>;

    #[pallet::storage]
    pub type Tasks<T: Config> = StorageMap<_, Twox64Concat, u64, TaskIntent<T>>;

    #[pallet::storage]
    pub type OpenLane0Tasks<T: Config> =
        StorageValue<_, BoundedVec<u64, T::MaxPendingTasks>, ValueQuery>;

    #[pallet::storage]
    pub type OpenLane1Tasks<T: Config> =
        StorageValue<_, BoundedVec<u64, T::MaxPendingTasks>, ValueQuery>;

    #[pallet::storage]
    pub type AssignedLane1Tasks<T: Config> =
        StorageValue<_, BoundedVec<u64, T::MaxAssignedLane1Tasks>, ValueQuery>;

    #[pallet::storage]
    pub type PendingVerificationTasks<T: Config> =
        StorageValue<_, BoundedVec<u64, T::MaxPendingTasks>, ValueQuery>;

    /// Attestations: (validator, score, attestation CID).
    #[pallet::storage]
    pub type Attestations<T: Config> = StorageMap<
        _,
        Twox64Concat,
        u64,
        BoundedVec<(T::AccountId, u8, Option<CidOf<T>>), T::MaxAttestations>,
        ValueQuery,
    >;

    #[pallet::storage]
    pub type RequiredQuorum<T> = StorageMap<_, Twox64Concat, u64, u32>;

    #[pallet::storage]
    pub type VerificationDeadline<T: Config> = StorageMap<_, Twox64Concat, u64, BlockNumberFor<T>>;

    #[pallet::storage]
    pub type RendererRegistry<T: Config> =
        StorageValue<
            _,
            BoundedBTreeMap<ModelIdOf<T>, RendererInfo<T>, T::MaxRegisteredRenderers>,
            ValueQuery,
        >;

    /// Executors, ordered by account id: (account, stake, lanes).
    #[pallet::storage]
    pub type Executors<T: Config> =
        StorageValue<_, Vec<(T::AccountId, BalanceOf<T>, Vec<Lane>)>, ValueQuery>;

    /// Validators.
    #[pallet::storage]
    pub type Validators<T: Config> = StorageValue<_, Vec<T::AccountId>, ValueQuery>;

    #[pallet::genesis_config]
    #[derive(frame::prelude::DefaultNoBound)]
    pub struct GenesisConfig<T: Config> {
        /// Renderers: (id, lane, deterministic, max latency ms, VRAM MB).
        pub renderers: Vec<(Vec<u8>, Lane, bool, u32, u32)>,
        /// Executors: (account, stake reserved from its balance, lanes).
        pub executors: Vec<(T::AccountId, BalanceOf<T>, Vec<Lane>)>,
        /// Validators.
        pub validators: Vec<T::AccountId>,
    }

    #[pallet::genesis_build]
    impl<T: Config> BuildGenesisConfig for GenesisConfig<T> {
        fn build(&self) {
            for (id, lane, deterministic, max_latency_ms, vram_required_mb) in &self.renderers {
                let id: ModelIdOf<T> = id.clone().try_into().expect("genesis renderer id fits");
                Pallet::<T>::do_register_renderer(
                    id,
                    *lane,
                    *deterministic,
                    *max_latency_ms,
                    *vram_required_mb,
                )
                .expect("genesis renderer is valid");
            }
            let mut executors = self.executors.clone();
            executors.sort_by(|a, b| a.0.encode().cmp(&b.0.encode()));
            for (who, stake, _) in &executors {
                T::Currency::reserve(who, *stake).expect("genesis executor covers its stake");
            }
            Executors::<T>::put(executors);
            Validators::<T>::put(self.validators.clone());
        }
    }

    #[pallet::event]
    #[pallet::generate_deposit(pub(super) fn deposit_event)]
    pub enum Event<T: Config> {
        TaskCreated {
            task_id: u64,
            requester: T::AccountId,
            escrow: BalanceOf<T>,
            deadline: BlockNumberFor<T>,
            lane: Lane,
            priority: TaskPriority,
            model_requirements: ModelIdOf<T>,
        },
        TaskAssigned { task_id: u64, executor: T::AccountId },
        TaskStarted { task_id: u64, executor: T::AccountId },
        TaskSubmitted {
            task_id: u64,
            executor: T::AccountId,
            output_cid: CidOf<T>,
            attestation_cid: Option<CidOf<T>>,
            verification_deadline: BlockNumberFor<T>,
            required_quorum: u32,
        },
        AttestationSubmitted { task_id: u64, validator: T::AccountId, score: u8 },
        TaskVerified {
            task_id: u64,
            executor: T::AccountId,
            payment: BalanceOf<T>,
            average_score: u8,
        },
        TaskRejected {
            task_id: u64,
            executor: Option<T::AccountId>,
            average_score: Option<u8>,
            deadline_exceeded: bool,
        },
        TaskFailed { task_id: u64, reason: FailReason },
        TaskExpired { task_id: u64 },
        RendererRegistered {
            renderer_id: ModelIdOf<T>,
            lane: Lane,
            deterministic: bool,
            max_latency_ms: u32,
            vram_required_mb: u32,
        },
        RendererDeregistered { renderer_id: ModelIdOf<T> },
    }

    #[pallet::error]
    pub enum Error<T> {
        TaskNotFound,
        TaskNotOpen,
        TaskNotAssigned,
        TaskNotExecuting,
        TaskNotSubmitted,
        NotExecutor,
        NotValidator,
        DuplicateAttestation,
        TooManyAttestations,
        InvalidAttestationScore,
        InvalidVerificationQuorum,
        VerificationDeadlinePassed,
        VerificationPending,
        NotRequester,
        TooManyPendingTasks,
        TooManyAssignedLane1Tasks,
        TooManyPendingVerifications,
        Overflow,
        InsufficientBalance,
        InsufficientEscrow,
        InvalidDeadline,
        TaskAlreadyAssigned,
        NoEligibleExecutors,
        Lane0Priority,
        BurnFailed,
        RendererRegistryFull,
        RendererAlreadyRegistered,
        InvalidRendererId,
        RendererNotRegistered,
        RendererLaneMismatch,
        RendererLatencyExceeded,
        RendererNotDeterministic,
        RendererVramExceeded,
        MissingAttestation,
        InvalidAttestationCid,
    }

    #[pallet::hooks]
    impl<T: Config> Hooks<BlockNumberFor<T>> for Pallet<T> {
        fn on_initialize(now: BlockNumberFor<T>) -> Weight {
            Self::expire_open(now);
            Self::reject_timed_out(now);
            Self::preempt_lane1();
            Weight::zero()
        }
    }

    #[pallet::call]
    impl<T: Config> Pallet<T> {
        #[pallet::call_index(0)]
        #[allow(clippy::too_many_arguments)]
        pub fn create_task_intent(
            origin: OriginFor<T>,
            lane: Lane,
            priority: TaskPriority,
            model_requirements: ModelIdOf<T>,
            input_cid: CidOf<T>,
            compute_budget: u64,
            deadline_blocks: BlockNumberFor<T>,
            escrow_amount: BalanceOf<T>,
        ) -> DispatchResult {
            let requester = ensure_signed(origin)?;
            ensure!(!deadline_blocks.is_zero(), Error::<T>::InvalidDeadline);
            ensure!(escrow_amount >= T::MinEscrow::get(), Error::<T>::InsufficientEscrow);
            let renderer = RendererRegistry::<T>::get()
                .get(&model_requirements)
                .cloned()
                .ok_or(Error::<T>::RendererNotRegistered)?;
            ensure!(renderer.lane == lane, Error::<T>::RendererLaneMismatch);
            let open_len = match lane {
                Lane::Lane0 => OpenLane0Tasks::<T>::decode_len(),
                Lane::Lane1 => OpenLane1Tasks::<T>::decode_len(),
            }
            .unwrap_or(0);
            ensure!(open_len < T::MaxPendingTasks::get() as usize, Error::<T>::TooManyPendingTasks);
            let now = frame_system::Pallet::<T>::block_number();
            let deadline = now.checked_add(&deadline_blocks).ok_or(Error::<T>::Overflow)?;
            let id = NextTaskId::<T>::get();
            let next = id.checked_add(1).ok_or(Error::<T>::Overflow)?;
            T::Currency::reserve(&requester, escrow_amount)
                .map_err(|_| Error::<T>::InsufficientBalance)?;
            NextTaskId::<T>::put(next);
            // Insert first so the queue can order the new task among the others.
            Tasks::<T>::insert(
                id,
                TaskIntent::<T> {
                    id,
                    lane,
                    priority,
                    requester: requester.clone(),
                    executor: None,
                    status: TaskStatus::Open,
                    escrow: escrow_amount,
                    created_at: now,
                    deadline,
                    model_requirements: model_requirements.clone(),
                    input_cid,
                    compute_budget,
                    output_cid: None,
                    attestation_cid: None,
                },
            );
            let inserted = match lane {
                Lane::Lane0 => OpenLane0Tasks::<T>::try_mutate(|v| Self::insert_ordered(v, id)),
                Lane::Lane1 => OpenLane1Tasks::<T>::try_mutate(|v| Self::insert_ordered(v, id)),
            };
            inserted.map_err(|_| Error::<T>::TooManyPendingTasks)?;
            Self::deposit_event(Event::TaskCreated {
                task_id: id,
                requester,
                escrow: escrow_amount,
                deadline,
                lane,
                priority,
                model_requirements,
            });
            Ok(())
        }

        #[pallet::call_index(1)]
        pub fn accept_assignment(origin: OriginFor<T>, task_id: u64) -> DispatchResult {
            ensure_signed(origin)?;
            let mut task = Tasks::<T>::get(task_id).ok_or(Error::<T>::TaskNotFound)?;
            ensure!(task.status == TaskStatus::Open, Error::<T>::TaskNotOpen);
            if task.lane == Lane::Lane1 {
                ensure!(!Self::lane0_open(), Error::<T>::Lane0Priority);
                ensure!(
                    AssignedLane1Tasks::<T>::decode_len().unwrap_or(0)
                        < T::MaxAssignedLane1Tasks::get() as usize,
                    Error::<T>::TooManyAssignedLane1Tasks
                );
            }
            let executor = Self::select_executor(task.lane)
                .ok_or(Error::<T>::NoEligibleExecutors)?;
            match task.lane {
                Lane::Lane0 => OpenLane0Tasks::<T>::mutate(|v| v.retain(|id| *id != task_id)),
                Lane::Lane1 => {
                    OpenLane1Tasks::<T>::mutate(|v| v.retain(|id| *id != task_id));
                    AssignedLane1Tasks::<T>::try_append(task_id)
                        .map_err(|_| Error::<T>::TooManyAssignedLane1Tasks)?;
                }
            }
            task.status = TaskStatus::Assigned;
            task.executor = Some(executor.clone());
            Tasks::<T>::insert(task_id, task);
            Self::deposit_event(Event::TaskAssigned { task_id, executor });
            Ok(())
        }

        #[pallet::call_index(2)]
        pub fn start_task(origin: OriginFor<T>, task_id: u64) -> DispatchResult {
            let who = ensure_signed(origin)?;
            let mut task = Tasks::<T>::get(task_id).ok_or(Error::<T>::TaskNotFound)?;
            ensure!(task.status == TaskStatus::Assigned, Error::<T>::TaskNotAssigned);
            ensure!(task.executor.as_ref() == Some(&who), Error::<T>::NotExecutor);
            ensure!(
                task.lane != Lane::Lane1 || !Self::lane0_open(),
                Error::<T>::Lane0Priority
            );
            task.status = TaskStatus::Executing;
            Tasks::<T>::insert(task_id, task);
            Self::deposit_event(Event::TaskStarted { task_id, executor: who });
            Ok(())
        }

        #[pallet::call_index(3)]
        pub fn submit_result(
            origin: OriginFor<T>,
            task_id: u64,
            output_cid: CidOf<T>,
            attestation_cid: Option<CidOf<T>>,
        ) -> DispatchResult {
            let who = ensure_signed(origin)?;
            let mut task = Tasks::<T>::get(task_id).ok_or(Error::<T>::TaskNotFound)?;
            ensure!(
                matches!(task.status, TaskStatus::Assigned | TaskStatus::Executing),
                Error::<T>::TaskNotAssigned
            );
            ensure!(task.executor.as_ref() == Some(&who), Error::<T>::NotExecutor);
            match &attestation_cid {
                None if task.lane == Lane::Lane0 => {
                    return Err(Error::<T>::MissingAttestation.into());
                }
                Some(a) if a.is_empty() => return Err(Error::<T>::InvalidAttestationCid.into()),
                _ => {}
            }
            let now = frame_system::Pallet::<T>::block_number();
            let verification_deadline = now
                .checked_add(&T::VerificationPeriod::get())
                .ok_or(Error::<T>::Overflow)?;
            PendingVerificationTasks::<T>::try_append(task_id)
                .map_err(|_| Error::<T>::TooManyPendingVerifications)?;
            if task.lane == Lane::Lane1 {
                AssignedLane1Tasks::<T>::mutate(|v| v.retain(|id| *id != task_id));
            }
            let quorum = T::VerificationQuorum::get();
            RequiredQuorum::<T>::insert(task_id, quorum);
            VerificationDeadline::<T>::insert(task_id, verification_deadline);
            task.status = TaskStatus::Submitted;
            task.output_cid = Some(output_cid.clone());
            task.attestation_cid = attestation_cid.clone();
            Tasks::<T>::insert(task_id, task);
            Self::deposit_event(Event::TaskSubmitted {
                task_id,
                executor: who,
                output_cid,
                attestation_cid,
                verification_deadline,
                required_quorum: quorum,
            });
            Ok(())
        }

        #[pallet::call_index(4)]
        pub fn fail_task(origin: OriginFor<T>, task_id: u64, reason: FailReason) -> DispatchResult {
            let who = ensure_signed(origin)?;
            let task = Tasks::<T>::get(task_id).ok_or(Error::<T>::TaskNotFound)?;
            match task.status {
                TaskStatus::Open => ensure!(task.requester == who, Error::<T>::NotRequester),
                s if s.is_terminal() => return Err(Error::<T>::TaskNotAssigned.into()),
                _ => ensure!(
                    task.requester == who || task.executor.as_ref() == Some(&who),
                    Error::<T>::NotExecutor
                ),
            }
            let slash = matches!(reason, FailReason::ExecutorFailed | FailReason::Preempted)
                .then(|| task.executor.clone())
                .flatten();
            Self::close_task(task_id, TaskStatus::Failed);
            if let Some(executor) = slash {
                Self::slash(&executor, T::TaskAbandonmentSlash::get());
            }
            Self::deposit_event(Event::TaskFailed { task_id, reason });
            Ok(())
        }

        #[pallet::call_index(5)]
        pub fn register_renderer(
            origin: OriginFor<T>,
            renderer_id: ModelIdOf<T>,
            lane: Lane,
            deterministic: bool,
            max_latency_ms: u32,
            vram_required_mb: u32,
        ) -> DispatchResult {
            ensure_root(origin)?;
            Self::do_register_renderer(renderer_id, lane, deterministic, max_latency_ms, vram_required_mb)?;
            Ok(())
        }

        #[pallet::call_index(6)]
        pub fn deregister_renderer(origin: OriginFor<T>, renderer_id: ModelIdOf<T>) -> DispatchResult {
            ensure_root(origin)?;
            let mut registry = RendererRegistry::<T>::get();
            registry
                .remove(&renderer_id)
                .ok_or(Error::<T>::RendererNotRegistered)?;
            RendererRegistry::<T>::put(registry);
            Self::deposit_event(Event::RendererDeregistered { renderer_id });
            Ok(())
        }

        #[pallet::call_index(7)]
        pub fn submit_attestation(
            origin: OriginFor<T>,
            task_id: u64,
            score: u8,
            attestation_cid: Option<CidOf<T>>,
        ) -> DispatchResult {
            let validator = ensure_signed(origin)?;
            ensure!(Validators::<T>::get().contains(&validator), Error::<T>::NotValidator);
            let mut task = Tasks::<T>::get(task_id).ok_or(Error::<T>::TaskNotFound)?;
            ensure!(
                matches!(task.status, TaskStatus::Submitted | TaskStatus::PendingVerification),
                Error::<T>::TaskNotSubmitted
            );
            let now = frame_system::Pallet::<T>::block_number();
            let deadline = VerificationDeadline::<T>::get(task_id).unwrap_or_default();
            // The deadline block belongs to the hook, which rejects first.
            ensure!(now < deadline, Error::<T>::VerificationDeadlinePassed);
            ensure!(score <= 100, Error::<T>::InvalidAttestationScore);
            ensure!(
                !attestation_cid.as_ref().is_some_and(|c| c.is_empty()),
                Error::<T>::InvalidAttestationCid
            );
            let mut atts = Attestations::<T>::get(task_id);
            ensure!(
                !atts.iter().any(|(v, _, _)| *v == validator),
                Error::<T>::DuplicateAttestation
            );
            atts.try_push((validator.clone(), score, attestation_cid))
                .map_err(|_| Error::<T>::TooManyAttestations)?;
            let quorum = RequiredQuorum::<T>::get(task_id).unwrap_or(T::VerificationQuorum::get());
            let reaches = atts.len() >= quorum as usize;
            Attestations::<T>::insert(task_id, atts);
            task.status = TaskStatus::PendingVerification;
            Tasks::<T>::insert(task_id, task);
            Self::deposit_event(Event::AttestationSubmitted { task_id, validator, score });
            if reaches {
                Self::settle(task_id)?;
            }
            Ok(())
        }

        #[pallet::call_index(8)]
        pub fn finalize_task(origin: OriginFor<T>, task_id: u64) -> DispatchResult {
            ensure_signed(origin)?;
            let task = Tasks::<T>::get(task_id).ok_or(Error::<T>::TaskNotFound)?;
            ensure!(
                matches!(task.status, TaskStatus::Submitted | TaskStatus::PendingVerification),
                Error::<T>::TaskNotSubmitted
            );
            let now = frame_system::Pallet::<T>::block_number();
            let deadline = VerificationDeadline::<T>::get(task_id).unwrap_or_default();
            if now >= deadline {
                // Past the deadline the task is rejected, quorum or not.
                Self::reject_after_deadline(task_id);
                return Ok(());
            }
            let quorum = RequiredQuorum::<T>::get(task_id).unwrap_or(T::VerificationQuorum::get());
            ensure!(
                Attestations::<T>::decode_len(task_id).unwrap_or(0) >= quorum as usize,
                Error::<T>::VerificationPending
            );
            Self::settle(task_id)
        }
    }

    impl<T: Config> Pallet<T> {
        fn lane0_open() -> bool {
            OpenLane0Tasks::<T>::decode_len().unwrap_or(0) > 0
        }

        /// Registers a renderer: what `register_renderer` does after its
        /// origin check, and what the test genesis does for its renderers.
        pub fn do_register_renderer(
            renderer_id: ModelIdOf<T>,
            lane: Lane,
            deterministic: bool,
            max_latency_ms: u32,
            vram_required_mb: u32,
        ) -> DispatchResult {
            let info = RendererInfo::<T> {
                lane,
                deterministic,
                max_latency_ms,
                vram_required_mb,
                registered_at: frame_system::Pallet::<T>::block_number(),
            };
            let mut registry = RendererRegistry::<T>::get();
            Self::check_renderer(&registry, &renderer_id, &info)?;
            registry
                .try_insert(renderer_id.clone(), info)
                .map_err(|_| Error::<T>::RendererRegistryFull)?;
            RendererRegistry::<T>::put(registry);
            Self::deposit_event(Event::RendererRegistered {
                renderer_id,
                lane,
                deterministic,
                max_latency_ms,
                vram_required_mb,
            });
            Ok(())
        }

        /// Puts a task into an open queue in the pallet's order: priority
        /// (High first), then earlier deadline, then arrival.
        fn insert_ordered<S: Get<u32>>(queue: &mut BoundedVec<u64, S>, id: u64) -> Result<(), ()> {
            let key = |id: &u64| {
                Tasks::<T>::get(id).map(|t| (t.priority as u8, t.deadline))
            };
            let new = key(&id);
            let at = queue.iter().position(|other| key(other) > new).unwrap_or(queue.len());
            queue.try_insert(at, id).map_err(|_| ())
        }

        fn check_renderer(
            registry: &BoundedBTreeMap<ModelIdOf<T>, RendererInfo<T>, T::MaxRegisteredRenderers>,
            id: &ModelIdOf<T>,
            info: &RendererInfo<T>,
        ) -> Result<(), Error<T>> {
            ensure!(!id.is_empty(), Error::<T>::InvalidRendererId);
            ensure!(!registry.contains_key(id), Error::<T>::RendererAlreadyRegistered);
            ensure!(
                (registry.len() as u32) < T::MaxRegisteredRenderers::get(),
                Error::<T>::RendererRegistryFull
            );
            let max_latency = match info.lane {
                Lane::Lane0 => {
                    ensure!(info.deterministic, Error::<T>::RendererNotDeterministic);
                    T::MaxLane0LatencyMs::get()
                }
                Lane::Lane1 => T::MaxLane1LatencyMs::get(),
            };
            ensure!(info.max_latency_ms <= max_latency, Error::<T>::RendererLatencyExceeded);
            ensure!(
                info.vram_required_mb <= T::MaxRendererVramMb::get(),
                Error::<T>::RendererVramExceeded
            );
            Ok(())
        }

        /// Stake-weighted choice among the lane's executors, seeded by the
        /// parent hash under a fixed subject: every assignment in a block
        /// draws the same number.
        fn select_executor(lane: Lane) -> Option<T::AccountId> {
            let candidates: Vec<(T::AccountId, u128)> = Executors::<T>::get()
                .into_iter()
                .filter(|(_, stake, lanes)| !stake.is_zero() && lanes.contains(&lane))
                .take(T::MaxAssignmentCandidates::get() as usize)
                .map(|(a, s, _)| (a, s.saturated_into::<u128>()))
                .collect();
            let total: u128 = candidates.iter().map(|(_, s)| *s).sum();
            if total == 0 {
                return None;
            }
            let mut input = b"nsn-task-market/assign".to_vec();
            input.extend_from_slice(frame_system::Pallet::<T>::parent_hash().as_ref());
            let seed = frame::hashing::blake2_256(&input);
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&seed[..16]);
            let mut r = u128::from_le_bytes(bytes) % total;
            for (who, stake) in candidates {
                if r < stake {
                    return Some(who);
                }
                r -= stake;
            }
            None
        }

        /// 70 / 20 / 10 with the two shares floored and the burn taking the rest.
        pub fn payment_split(escrow: u128) -> (u128, u128, u128) {
            let executor = escrow / 100 * 70 + escrow % 100 * 70 / 100;
            let treasury = escrow / 100 * 20 + escrow % 100 * 20 / 100;
            (executor, treasury, escrow - executor - treasury)
        }

        fn average_score(task_id: u64) -> Option<u8> {
            let atts = Attestations::<T>::get(task_id);
            if atts.is_empty() {
                return None;
            }
            let sum: u32 = atts.iter().map(|(_, s, _)| u32::from(*s)).sum();
            u8::try_from(sum / atts.len() as u32).ok()
        }

        fn remove_verification(task_id: u64) {
            PendingVerificationTasks::<T>::mutate(|v| v.retain(|id| *id != task_id));
            VerificationDeadline::<T>::remove(task_id);
            RequiredQuorum::<T>::remove(task_id);
        }

        fn set_status(task_id: u64, status: TaskStatus) {
            Tasks::<T>::mutate(task_id, |t| {
                if let Some(t) = t {
                    t.status = status;
                }
            });
        }

        fn settle(task_id: u64) -> DispatchResult {
            let task = Tasks::<T>::get(task_id).ok_or(Error::<T>::TaskNotFound)?;
            let average = Self::average_score(task_id).unwrap_or(0);
            Self::remove_verification(task_id);
            if average >= T::MinAttestationScore::get() {
                let escrow: u128 = task.escrow.saturated_into();
                let (to_executor, to_treasury, burn) = Self::payment_split(escrow);
                let executor = task.executor.clone().unwrap_or(task.requester.clone());
                T::Currency::repatriate_reserved(
                    &task.requester,
                    &executor,
                    to_executor.saturated_into(),
                    BalanceStatus::Free,
                )?;
                T::Currency::repatriate_reserved(
                    &task.requester,
                    &T::TreasuryAccount::get(),
                    to_treasury.saturated_into(),
                    BalanceStatus::Free,
                )?;
                let (_burnt, left) = T::Currency::slash_reserved(&task.requester, burn.saturated_into());
                ensure!(left.is_zero(), Error::<T>::BurnFailed);
                Self::set_status(task_id, TaskStatus::Verified);
                Self::deposit_event(Event::TaskVerified {
                    task_id,
                    executor,
                    payment: to_executor.saturated_into(),
                    average_score: average,
                });
            } else {
                T::Currency::unreserve(&task.requester, task.escrow);
                if let Some(executor) = &task.executor {
                    Self::slash(executor, T::VerificationFailureSlash::get());
                }
                Self::set_status(task_id, TaskStatus::Rejected);
                Self::deposit_event(Event::TaskRejected {
                    task_id,
                    executor: task.executor,
                    average_score: Some(average),
                    deadline_exceeded: false,
                });
            }
            Ok(())
        }

        fn reject_after_deadline(task_id: u64) {
            let Some(task) = Tasks::<T>::get(task_id) else { return };
            let average_score = Self::average_score(task_id);
            Self::remove_verification(task_id);
            T::Currency::unreserve(&task.requester, task.escrow);
            if let Some(executor) = &task.executor {
                Self::slash(executor, T::VerificationFailureSlash::get());
            }
            Self::set_status(task_id, TaskStatus::Rejected);
            Self::deposit_event(Event::TaskRejected {
                task_id,
                executor: task.executor,
                average_score,
                deadline_exceeded: true,
            });
        }

        /// Ends a task outside verification: refunds its escrow and takes it
        /// off every list.
        fn close_task(task_id: u64, status: TaskStatus) {
            let Some(task) = Tasks::<T>::get(task_id) else { return };
            match task.lane {
                Lane::Lane0 => OpenLane0Tasks::<T>::mutate(|v| v.retain(|id| *id != task_id)),
                Lane::Lane1 => OpenLane1Tasks::<T>::mutate(|v| v.retain(|id| *id != task_id)),
            }
            AssignedLane1Tasks::<T>::mutate(|v| v.retain(|id| *id != task_id));
            Self::remove_verification(task_id);
            T::Currency::unreserve(&task.requester, task.escrow);
            Self::set_status(task_id, status);
        }

        fn slash(who: &T::AccountId, amount: BalanceOf<T>) {
            let amount = Executors::<T>::mutate(|execs| {
                let Some(entry) = execs.iter_mut().find(|(a, _, _)| a == who) else {
                    return None;
                };
                let amount = amount.min(entry.1);
                entry.1 -= amount;
                Some(amount)
            });
            if let Some(amount) = amount {
                let _ = T::Currency::repatriate_reserved(
                    who,
                    &T::TreasuryAccount::get(),
                    amount,
                    BalanceStatus::Free,
                );
            }
        }

        fn expire_open(now: BlockNumberFor<T>) {
            let max = T::MaxExpiredPerBlock::get() as usize;
            let expired: Vec<u64> = OpenLane0Tasks::<T>::get()
                .into_iter()
                .chain(OpenLane1Tasks::<T>::get())
                .filter(|id| Tasks::<T>::get(id).is_some_and(|t| t.deadline <= now))
                .take(max)
                .collect();
            for task_id in expired {
                Self::close_task(task_id, TaskStatus::Expired);
                Self::deposit_event(Event::TaskExpired { task_id });
            }
        }

        fn reject_timed_out(now: BlockNumberFor<T>) {
            let max = T::MaxExpiredPerBlock::get() as usize;
            let timed_out: Vec<u64> = PendingVerificationTasks::<T>::get()
                .into_iter()
                .filter(|id| VerificationDeadline::<T>::get(id).is_some_and(|d| d <= now))
                .take(max)
                .collect();
            for task_id in timed_out {
                Self::reject_after_deadline(task_id);
            }
        }

        fn preempt_lane1() {
            if !Self::lane0_open() {
                return;
            }
            let max = T::MaxPreemptionsPerBlock::get() as usize;
            let preempted: Vec<u64> = AssignedLane1Tasks::<T>::get().into_iter().take(max).collect();
            for task_id in preempted {
                let executor = Tasks::<T>::get(task_id).and_then(|t| t.executor);
                Self::close_task(task_id, TaskStatus::Failed);
                if let Some(executor) = executor {
                    Self::slash(&executor, T::TaskAbandonmentSlash::get());
                }
                Self::deposit_event(Event::TaskFailed {
                    task_id,
                    reason: FailReason::Preempted,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
