//! A task's whole life on the embedded dev chain, driven by hand: a requester
//! creates it, the chain assigns it, the executor starts it and submits a
//! result, the dev validators attest and the chain pays.
//!
//! Run: `cargo run --example dev_chain_lifecycle`

use futures::StreamExt;
use nsn_lane1::chain::SubmitExt;
use nsn_lane1::chain::dev::{DevChain, DevConfig, Market};
use nsn_lane1::chain::{ChainPort, MarketCall, MarketEvent, created_task_id};
use nsn_lane1::task::{AccountId, Lane, Priority, UNIT};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Instant blocks; the dev validators attest every result with a score of 90.
    let chain = DevChain::new(DevConfig::default())?;
    let requester = chain.submitter(AccountId::ALICE);
    let executor = chain.submitter(AccountId::BOB);
    let mut blocks = chain.finalized_blocks(None);

    let escrow = 2 * UNIT;
    let created = requester
        .clone()
        .submit(MarketCall::CreateTaskIntent {
            lane: Lane::Lane1,
            priority: Priority::High,
            model_requirements: b"sha256".to_vec(),
            input_cid: b"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy".to_vec(),
            compute_budget: 10_000,
            deadline_blocks: 20,
            escrow_amount: escrow,
        })
        .await?;
    let task_id = created_task_id(&created.events).ok_or("no TaskCreated event")?;

    requester
        .clone()
        .submit(MarketCall::AcceptAssignment { task_id })
        .await?;
    executor
        .clone()
        .submit(MarketCall::StartTask { task_id })
        .await?;
    executor
        .clone()
        .submit(MarketCall::SubmitResult {
            task_id,
            output_cid: b"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku".to_vec(),
            attestation_cid: None,
        })
        .await?;

    // Follow the finalized blocks until the task is settled.
    while let Some(block) = blocks.next().await {
        let block = block?;
        for record in block.events.iter() {
            println!("#{:<3} {:?}", block.number, record.event);
            if matches!(record.event, MarketEvent::TaskVerified { task_id: id, .. } if id == task_id)
            {
                let (to_executor, to_treasury, burned) = Market::payment_split(escrow);
                println!(
                    "task {task_id} verified: executor {to_executor}, treasury {to_treasury}, burned {burned}"
                );
                return Ok(());
            }
        }
    }
    Err("chain ended before the task was verified".into())
}
