//! Handler time per route over the in-memory adapters: what the Lambda spends in its own code
//! for one WebSocket event once warm (event JSON → `VoiceService` → proxy response), without
//! DynamoDB, KVS, STS or API Gateway round trips. For BENCHMARKS.md; not a test.
//!
//! ```sh
//! cargo run --release -p voice-lambda --example handler_timing -- [CYCLES] [MAX_SECS]
//! ```
//!
//! One cycle, in one chat room (alice admin, bob approved; both connected):
//! createVoiceRoom (alice) → getVoiceRoom (bob) → getVoiceCredentials (alice, bob) → setMute
//! (bob) → leaveVoiceRoom (bob) → endVoiceRoom (alice), then a `$default` event with an unknown
//! action and a `$disconnect` of a connection in no room. Events are built before the clock
//! starts (the runtime hands the handler parsed JSON); the response body is decoded after it
//! stops. Bounded by CYCLES (default 20 000) and MAX_SECS (default 20).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::encodings::Body;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use voice_adapters_memory::{memory_service, MemoryPorts};
use voice_domain::{ChatRoomId, ConnectionId, ServiceConfig, UserId};
use voice_lambda::{LambdaOutput, VoiceLambda};

// The same API Gateway event builder the handler tests use, not a copy of it.
#[path = "../tests/common/mod.rs"]
mod common;
use common::ws_event;

const ALICE: &str = "L0SM9cOFvHcCIhw=";
const BOB: &str = "L0SNEdbXvHcCFxQ=";
const GONE: &str = "L0SO0000vHcCGEg=";
const CHAT: &str = "chat-1";

const ROUTES: [&str; 9] = [
    "createVoiceRoom",
    "getVoiceRoom",
    "getVoiceCredentials(master)",
    "getVoiceCredentials(join)",
    "setMute",
    "leaveVoiceRoom",
    "endVoiceRoom",
    "$default(unknown action)",
    "$disconnect",
];

/// Calls the handler; returns its duration and the decoded reply body.
async fn timed(lambda: &VoiceLambda<MemoryPorts>, payload: Value) -> (Duration, Value) {
    let event = LambdaEvent::new(payload, Context::default());
    let t = Instant::now();
    let out = lambda.handle(event).await;
    let took = t.elapsed();
    let body = match out {
        Ok(LambdaOutput::WebSocket(r)) => match r.body {
            Some(Body::Text(t)) => serde_json::from_str(&t).unwrap_or(Value::Null),
            _ => Value::Null,
        },
        _ => Value::Null,
    };
    (took, body)
}

fn ok(body: &Value, route: &str) {
    assert_eq!(body["ok"], json!(true), "{route}: {body}");
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let cycles: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let max = Duration::from_secs(args.next().and_then(|a| a.parse().ok()).unwrap_or(20));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (service, h) = memory_service(ServiceConfig::default());
        let chat = ChatRoomId::parse(CHAT).unwrap();
        let (alice, bob) = (UserId::parse("alice").unwrap(), UserId::parse("bob").unwrap());
        h.directory
            .connect(ConnectionId::parse(ALICE).unwrap(), alice.clone());
        h.directory
            .connect(ConnectionId::parse(BOB).unwrap(), bob.clone());
        h.directory.create_room(chat.clone(), alice).unwrap();
        h.directory.request_join(&chat, bob.clone()).unwrap();
        h.directory.approve(&chat, &bob).unwrap();
        let lambda = VoiceLambda::new(voice_executor::Executor::new(Arc::new(service)));
        let mut lat: Vec<Vec<u64>> = vec![Vec::new(); ROUTES.len()];
        let start = Instant::now();
        let mut done = 0;
        while done < cycles && start.elapsed() < max {
            // Cycle 0 warms up and is not counted.
            let mut rec = |i: usize, d: Duration| {
                if done > 0 {
                    lat[i].push(d.as_nanos() as u64);
                }
            };
            let (d, b) = timed(
                &lambda,
                ws_event("createVoiceRoom", ALICE, Some(json!({"roomId": CHAT}))),
            )
            .await;
            ok(&b, ROUTES[0]);
            rec(0, d);
            let vr = b["data"]["voiceRoomId"].as_str().unwrap().to_owned();
            let steps = [
                (1, "getVoiceRoom", BOB, json!({"roomId": CHAT})),
                (2, "getVoiceCredentials", ALICE, json!({"voiceRoomId": vr})),
                (3, "getVoiceCredentials", BOB, json!({"voiceRoomId": vr})),
                (
                    4,
                    "setMute",
                    BOB,
                    json!({"voiceRoomId": vr, "muted": true}),
                ),
                (5, "leaveVoiceRoom", BOB, json!({"voiceRoomId": vr})),
                (6, "endVoiceRoom", ALICE, json!({"voiceRoomId": vr})),
            ];
            for (i, route, who, body) in steps {
                let (d, b) = timed(&lambda, ws_event(route, who, Some(body))).await;
                ok(&b, ROUTES[i]);
                rec(i, d);
            }
            let (d, b) = timed(
                &lambda,
                ws_event("$default", ALICE, Some(json!({"action": "nope"}))),
            )
            .await;
            assert_eq!(b["error"]["code"], json!("UNKNOWN_ACTION"), "{b}");
            rec(7, d);
            let (d, _) = timed(&lambda, ws_event("$disconnect", GONE, None)).await;
            rec(8, d);
            // The in-memory notifier keeps every event; drop them outside the clock.
            h.notifier.take(&ConnectionId::parse(ALICE).unwrap());
            h.notifier.take(&ConnectionId::parse(BOB).unwrap());
            done += 1;
        }
        println!(
            "{:<28} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "route", "n", "p50 µs", "p99 µs", "mean µs", "ops/s"
        );
        let mut all = Vec::new();
        for (name, mut l) in ROUTES.iter().zip(lat) {
            if l.is_empty() {
                continue;
            }
            l.sort_unstable();
            let mean = l.iter().sum::<u64>() as f64 / l.len() as f64 / 1000.0;
            println!(
                "{name:<28} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.0}",
                l.len(),
                pct(&l, 0.5),
                pct(&l, 0.99),
                mean,
                1e6 / mean
            );
            all.push(json!({"route": name, "n": l.len(), "p50Us": pct(&l, 0.5), "p99Us": pct(&l, 0.99), "meanUs": mean}));
        }
        println!("{}", json!({"scenario": "lambda-handler", "cycles": done, "routes": all}));
    });
}
