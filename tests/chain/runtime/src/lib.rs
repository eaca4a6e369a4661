//! The dev runtime for the real-chain tests: System, Timestamp, Balances,
//! Sudo, TransactionPayment and the NSN task market as `NsnTaskMarket` at
//! pallet index 56, with a `development` genesis preset matching the crate's
//! embedded dev chain (dev accounts endowed, Bob an executor of both lanes,
//! Dave and Eve validators, the reference sidecar's models registered).
//!
//! With the `parachain` feature it is the flavour `polkadot-omni-node` runs
//! in its dev mode: Aura at index 5 (one authority, Alice; 6 s slots, the
//! timestamp set by the node's seal) and `AuraApi`, which the node asks for
//! before it seals a block. The node's mocked relay-chain inherent goes
//! unused: the flavour has no parachain-system pallet, which dev mode does
//! not need.

#![cfg_attr(not(feature = "std"), no_std)]

#[cfg(feature = "std")]
include!(concat!(env!("OUT_DIR"), "/wasm_binary.rs"));

extern crate alloc;

use alloc::vec::Vec;
use frame::deps::{frame_support, sp_genesis_builder};
use frame::prelude::*;
use frame::runtime::apis;
use frame::runtime::prelude::*;
use pallet_nsn_task_market::Lane;
use pallet_transaction_payment::{FeeDetails, RuntimeDispatchInfo};

/// One unit of the token (12 decimals).
pub const UNIT: u128 = 1_000_000_000_000;

#[runtime_version]
pub const VERSION: RuntimeVersion = RuntimeVersion {
    spec_name: alloc::borrow::Cow::Borrowed("nsn-dev"),
    impl_name: alloc::borrow::Cow::Borrowed("nsn-dev"),
    authoring_version: 1,
    spec_version: 1,
    impl_version: 1,
    apis: RUNTIME_API_VERSIONS,
    transaction_version: 1,
    system_version: 1,
};

type TxExtension = (
    frame_system::CheckNonZeroSender<Runtime>,
    frame_system::CheckSpecVersion<Runtime>,
    frame_system::CheckTxVersion<Runtime>,
    frame_system::CheckGenesis<Runtime>,
    frame_system::CheckEra<Runtime>,
    frame_system::CheckNonce<Runtime>,
    frame_system::CheckWeight<Runtime>,
    pallet_transaction_payment::ChargeTransactionPayment<Runtime>,
    frame_system::WeightReclaim<Runtime>,
);

#[frame_construct_runtime]
mod runtime {
    #[runtime::runtime]
    #[runtime::derive(
        RuntimeCall,
        RuntimeEvent,
        RuntimeError,
        RuntimeOrigin,
        RuntimeFreezeReason,
        RuntimeHoldReason,
        RuntimeSlashReason,
        RuntimeLockId,
        RuntimeTask,
        RuntimeViewFunction
    )]
    pub struct Runtime;

    #[runtime::pallet_index(0)]
    pub type System = frame_system::Pallet<Runtime>;

    #[runtime::pallet_index(1)]
    pub type Timestamp = pallet_timestamp::Pallet<Runtime>;

    #[runtime::pallet_index(2)]
    pub type Balances = pallet_balances::Pallet<Runtime>;

    #[runtime::pallet_index(3)]
    pub type Sudo = pallet_sudo::Pallet<Runtime>;

    #[runtime::pallet_index(4)]
    pub type TransactionPayment = pallet_transaction_payment::Pallet<Runtime>;

    #[cfg(feature = "parachain")]
    #[runtime::pallet_index(5)]
    pub type Aura = pallet_aura::Pallet<Runtime>;

    #[runtime::pallet_index(56)]
    pub type NsnTaskMarket = pallet_nsn_task_market::Pallet<Runtime>;
}

parameter_types! {
    pub const Version: RuntimeVersion = VERSION;
    pub TreasuryAccount: AccountId = {
        let mut id = [0u8; 32];
        id[..12].copy_from_slice(b"modlpy/trsry");
        AccountId::from(id)
    };
}

#[derive_impl(frame_system::config_preludes::SolochainDefaultConfig)]
impl frame_system::Config for Runtime {
    type Block = Block;
    type Version = Version;
    type AccountData = pallet_balances::AccountData<u128>;
}

#[derive_impl(pallet_balances::config_preludes::TestDefaultConfig)]
impl pallet_balances::Config for Runtime {
    type AccountStore = System;
    type Balance = u128;
}

#[derive_impl(pallet_sudo::config_preludes::TestDefaultConfig)]
impl pallet_sudo::Config for Runtime {}

#[cfg(not(feature = "parachain"))]
#[derive_impl(pallet_timestamp::config_preludes::TestDefaultConfig)]
impl pallet_timestamp::Config for Runtime {}

#[cfg(feature = "parachain")]
#[derive_impl(pallet_timestamp::config_preludes::TestDefaultConfig)]
impl pallet_timestamp::Config for Runtime {
    type OnTimestampSet = Aura;
}

/// Aura's slot: a relay chain's 6 s, as a parachain's.
#[cfg(feature = "parachain")]
pub const SLOT_DURATION_MS: u64 = 6_000;

#[cfg(feature = "parachain")]
impl pallet_aura::Config for Runtime {
    type AuthorityId = sp_consensus_aura::sr25519::AuthorityId;
    type DisabledValidators = ();
    type MaxAuthorities = ConstU32<32>;
    type AllowMultipleBlocksPerSlot = ConstBool<false>;
    type SlotDuration = ConstU64<SLOT_DURATION_MS>;
}

#[derive_impl(pallet_transaction_payment::config_preludes::TestDefaultConfig)]
impl pallet_transaction_payment::Config for Runtime {
    type OnChargeTransaction = pallet_transaction_payment::FungibleAdapter<Balances, ()>;
    type WeightToFee = NoFee<u128>;
    type LengthToFee = FixedFee<1, u128>;
}

impl pallet_nsn_task_market::Config for Runtime {
    type Currency = Balances;
    type TreasuryAccount = TreasuryAccount;
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
    type MinEscrow = ConstU128<{ UNIT / 10 }>;
    type MaxAttestations = ConstU32<5>;
    type VerificationQuorum = ConstU32<2>;
    type VerificationPeriod = ConstU32<100>;
    type MinAttestationScore = ConstU8<70>;
    type VerificationFailureSlash = ConstU128<{ 5 * UNIT }>;
    type TaskAbandonmentSlash = ConstU128<{ 5 * UNIT }>;
}

type Block = frame::runtime::types_common::BlockOf<Runtime, TxExtension>;
type Header = HeaderFor<Runtime>;
type AccountId = <Runtime as frame_system::Config>::AccountId;
type Nonce = <Runtime as frame_system::Config>::Nonce;

type RuntimeExecutive =
    Executive<Runtime, Block, frame_system::ChainContext<Runtime>, Runtime, AllPalletsWithSystem>;

/// The `development` genesis preset.
pub mod presets {
    use super::*;
    use alloc::vec;

    /// The development preset as a JSON patch over the default genesis.
    pub fn development() -> serde_json::Value {
        let accounts = [
            Sr25519Keyring::Alice,
            Sr25519Keyring::Bob,
            Sr25519Keyring::Charlie,
            Sr25519Keyring::Dave,
            Sr25519Keyring::Eve,
            Sr25519Keyring::Ferdie,
        ];
        let lane1: Vec<(Vec<u8>, Lane, bool, u32, u32)> =
            ["noop", "sha256", "uppercase", "sleep", "fail", "mandelbrot"]
                .iter()
                .map(|m| (m.as_bytes().to_vec(), Lane::Lane1, true, 60_000, 0))
                .collect();
        let mut renderers = lane1;
        renderers.push((b"video-render".to_vec(), Lane::Lane0, true, 10_000, 8_000));
        #[allow(unused_mut)]
        let mut patch = frame_support::build_struct_json_patch!(RuntimeGenesisConfig {
            balances: pallet_balances::GenesisConfig {
                // The treasury exists from genesis, so shares and slashes can
                // be paid to it.
                balances: accounts
                    .iter()
                    .map(|a| (a.to_account_id(), 1_000_000 * UNIT))
                    .chain([(TreasuryAccount::get(), UNIT)])
                    .collect::<Vec<_>>(),
            },
            sudo: pallet_sudo::GenesisConfig {
                key: Some(Sr25519Keyring::Alice.to_account_id()),
            },
            nsn_task_market: pallet_nsn_task_market::GenesisConfig {
                renderers,
                executors: vec![(
                    Sr25519Keyring::Bob.to_account_id(),
                    100 * UNIT,
                    vec![Lane::Lane0, Lane::Lane1],
                )],
                validators: vec![
                    Sr25519Keyring::Dave.to_account_id(),
                    Sr25519Keyring::Eve.to_account_id(),
                ],
            },
        });
        #[cfg(feature = "parachain")]
        {
            // Aura needs one authority (its slot picks one); the node's dev
            // seal does not sign, so Alice's key is never asked for.
            let authorities = vec![sp_consensus_aura::sr25519::AuthorityId::from(
                Sr25519Keyring::Alice.public(),
            )];
            patch["aura"] = serde_json::json!({
                "authorities": serde_json::to_value(authorities).unwrap_or_default(),
            });
        }
        patch
    }

    /// The id of [`multi_executor`].
    pub const MULTI_EXECUTOR: &str = "multi-executor";

    /// As [`development`], with three executors of equal stake (Bob,
    /// Charlie and Ferdie), for running several nodes on one chain.
    pub fn multi_executor() -> serde_json::Value {
        let mut patch = development();
        let executors: Vec<_> = [
            Sr25519Keyring::Bob,
            Sr25519Keyring::Charlie,
            Sr25519Keyring::Ferdie,
        ]
        .iter()
        .map(|a| {
            (
                a.to_account_id(),
                100 * UNIT,
                vec![Lane::Lane0, Lane::Lane1],
            )
        })
        .collect();
        if let Some(market) = patch.get_mut("nsnTaskMarket") {
            market["executors"] = serde_json::to_value(executors).unwrap_or_default();
        }
        patch
    }

    /// A preset by id.
    pub fn get(id: &PresetId) -> Option<Vec<u8>> {
        let patch = match id.as_ref() {
            sp_genesis_builder::DEV_RUNTIME_PRESET => development(),
            MULTI_EXECUTOR => multi_executor(),
            _ => return None,
        };
        serde_json::to_vec(&patch).ok()
    }

    /// The presets there are.
    pub fn names() -> Vec<PresetId> {
        vec![
            PresetId::from(sp_genesis_builder::DEV_RUNTIME_PRESET),
            PresetId::from(MULTI_EXECUTOR),
        ]
    }
}

impl_runtime_apis! {
    impl apis::Core<Block> for Runtime {
        fn version() -> RuntimeVersion {
            VERSION
        }

        fn execute_block(block: <Block as frame::traits::Block>::LazyBlock) {
            RuntimeExecutive::execute_block(block)
        }

        fn initialize_block(header: &Header) -> ExtrinsicInclusionMode {
            RuntimeExecutive::initialize_block(header)
        }
    }

    impl apis::Metadata<Block> for Runtime {
        fn metadata() -> OpaqueMetadata {
            OpaqueMetadata::new(Runtime::metadata().into())
        }

        fn metadata_at_version(version: u32) -> Option<OpaqueMetadata> {
            Runtime::metadata_at_version(version)
        }

        fn metadata_versions() -> Vec<u32> {
            Runtime::metadata_versions()
        }
    }

    impl apis::BlockBuilder<Block> for Runtime {
        fn apply_extrinsic(extrinsic: ExtrinsicFor<Runtime>) -> ApplyExtrinsicResult {
            RuntimeExecutive::apply_extrinsic(extrinsic)
        }

        fn finalize_block() -> HeaderFor<Runtime> {
            RuntimeExecutive::finalize_block()
        }

        fn inherent_extrinsics(data: InherentData) -> Vec<ExtrinsicFor<Runtime>> {
            data.create_extrinsics()
        }

        fn check_inherents(
            block: <Block as frame::traits::Block>::LazyBlock,
            data: InherentData,
        ) -> CheckInherentsResult {
            data.check_extrinsics(&block)
        }
    }

    impl apis::TaggedTransactionQueue<Block> for Runtime {
        fn validate_transaction(
            source: TransactionSource,
            tx: ExtrinsicFor<Runtime>,
            block_hash: <Runtime as frame_system::Config>::Hash,
        ) -> TransactionValidity {
            RuntimeExecutive::validate_transaction(source, tx, block_hash)
        }
    }

    impl apis::OffchainWorkerApi<Block> for Runtime {
        fn offchain_worker(header: &HeaderFor<Runtime>) {
            RuntimeExecutive::offchain_worker(header)
        }
    }

    impl apis::AccountNonceApi<Block, AccountId, Nonce> for Runtime {
        fn account_nonce(account: AccountId) -> Nonce {
            System::account_nonce(account)
        }
    }

    impl pallet_transaction_payment_rpc_runtime_api::TransactionPaymentApi<Block, u128> for Runtime {
        fn query_info(uxt: ExtrinsicFor<Runtime>, len: u32) -> RuntimeDispatchInfo<u128> {
            TransactionPayment::query_info(uxt, len)
        }
        fn query_fee_details(uxt: ExtrinsicFor<Runtime>, len: u32) -> FeeDetails<u128> {
            TransactionPayment::query_fee_details(uxt, len)
        }
        fn query_weight_to_fee(weight: Weight) -> u128 {
            TransactionPayment::weight_to_fee(weight)
        }
        fn query_length_to_fee(length: u32) -> u128 {
            TransactionPayment::length_to_fee(length)
        }
    }

    #[cfg(feature = "parachain")]
    impl sp_consensus_aura::AuraApi<Block, sp_consensus_aura::sr25519::AuthorityId> for Runtime {
        fn slot_duration() -> sp_consensus_aura::SlotDuration {
            sp_consensus_aura::SlotDuration::from_millis(Aura::slot_duration())
        }

        fn authorities() -> Vec<sp_consensus_aura::sr25519::AuthorityId> {
            pallet_aura::Authorities::<Runtime>::get().into_inner()
        }
    }

    impl apis::GenesisBuilder<Block> for Runtime {
        fn build_state(config: Vec<u8>) -> GenesisBuilderResult {
            build_state::<RuntimeGenesisConfig>(config)
        }

        fn get_preset(id: &Option<PresetId>) -> Option<Vec<u8>> {
            get_preset::<RuntimeGenesisConfig>(id, presets::get)
        }

        fn preset_names() -> Vec<PresetId> {
            presets::names()
        }
    }
}
