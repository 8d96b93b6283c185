//! DynamoPool against moto: the pool contract (quarantine, release by the holding room only,
//! conditional eviction, most recently freed first, concurrent claims never sharing a channel)
//! on a table laid out as the template creates it, plus many Lambdas' worth of concurrent claims.

use std::collections::HashSet;

use voice_adapters_aws::testing::create_pool_table;
use voice_adapters_aws::DynamoPool;
use voice_domain::pool::{ChannelLease, ChannelPool, LeaseHolder};
use voice_domain::Timestamp;

use crate::support::*;

async fn pool(m: &Moto) -> DynamoPool {
    let table = format!("ChannelPool-{}", uuid::Uuid::new_v4().simple());
    create_pool_table(&m.dynamodb, &table)
        .await
        .expect("create pool table");
    DynamoPool::new(m.dynamodb.clone(), table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_pool_keeps_the_pool_contract() {
    let Some(m) = moto().await else { return };
    voice_domain::contract::pool_contract(&pool(&m).await, "dynamo").await;
}

/// Twenty claimants on separate tasks (as separate Lambda instances would be) race for eight
/// free channels: each channel goes to exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_from_many_tasks_take_each_channel_once() {
    let Some(m) = moto().await else { return };
    let pool = pool(&m).await;
    let t = Timestamp::from_millis(T0);
    for i in 0..8 {
        let holder = LeaseHolder {
            voice_room: vr(&format!("vr-{i}")),
            user: user("u"),
        };
        let ch = channel(&format!("pool-{i}"));
        pool.add(&ChannelLease {
            channel: ch.clone(),
            holder: holder.clone(),
            claimed_at: t,
        })
        .await
        .unwrap();
        pool.release(&ch, &holder.voice_room, t, t).await.unwrap();
    }
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let holder = LeaseHolder {
                    voice_room: vr(&format!("claimant-{i}")),
                    user: user("v"),
                };
                pool.claim(&holder, t)
                    .await
                    .unwrap()
                    .map(|(l, _)| l.channel)
            })
        })
        .collect();
    let mut won = Vec::new();
    for t in tasks {
        if let Some(ch) = t.await.unwrap() {
            won.push(ch);
        }
    }
    let distinct: HashSet<_> = won.iter().map(|c| c.arn.clone()).collect();
    assert_eq!(
        distinct.len(),
        won.len(),
        "a channel was claimed twice: {won:?}"
    );
    // Every claimant that lost all its candidates creates a channel instead; with 8 free
    // channels and 3 rounds of 8 candidates, most should be taken.
    assert!(
        won.len() >= 6,
        "only {} of 8 free channels claimed",
        won.len()
    );
}
