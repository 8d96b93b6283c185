//! Fuzzing the Lambda's event parsing and handler entry (`event::classify` and
//! `VoiceLambda::handle`), with proptest, over the in-memory adapters:
//!
//! - arbitrary JSON values as the whole invocation payload (what `lambda_runtime` hands over
//!   once the bytes are JSON at all), and arbitrary bytes where they happen to be JSON;
//! - near-miss API Gateway WebSocket events: a real event's shape with route keys, connection
//!   ids, bodies (arbitrary bytes, JSON of the wrong type, real actions with fields of random
//!   types), `isBase64Encoded` and `requestContext` fields replaced, dropped or mistyped;
//! - near-miss EventBridge events.
//!
//! The property, for every input: no panic, and unless the payload is exactly a scheduled
//! event (which runs the sweep), a proxy response with a status the protocol documents, a JSON
//! `Reply` body (`type: reply`, `ok` true exactly on 200), and on refusal an `error` with a
//! known `code`, a non-empty `message` and a boolean `retryable`.
//!
//! Cases: `PROPTEST_CASES` (scripts/test sets 1000), else 1000, per property.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lambda_events::encodings::Body;
use common::ws_event;
use lambda_runtime::{Context, LambdaEvent};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use voice_adapters_memory::{memory_service, MemoryPorts};
use voice_domain::protocol::VOICE_ACTIONS;
use voice_domain::{ChatRoomId, ConnectionId, ServiceConfig, UserId};
use voice_lambda::{LambdaOutput, VoiceLambda};

const KNOWN: [&str; 3] = ["L0SM9cOFvHcCIhw=", "L0SNEdbXvHcCFxQ=", "L0SNdc0LvHcCF2Q="];

/// Every code a Lambda reply may carry (docs/protocol.md, minus the self-hosted-only ones).
const CODES: &[&str] = &[
    "BAD_REQUEST",
    "UNKNOWN_ACTION",
    "NOT_IDENTIFIED",
    "CHAT_ROOM_NOT_FOUND",
    "NOT_MEMBER",
    "NOT_APPROVED",
    "ALREADY_ACTIVE",
    "VOICE_ROOM_NOT_FOUND",
    "VOICE_ROOM_ENDED",
    "ROOM_FULL",
    "NOT_PARTICIPANT",
    "NOT_ALLOWED",
    "ALREADY_RECORDING",
    "NOT_RECORDING",
    "RECORDING_UNAVAILABLE",
    "UNAVAILABLE",
    "INTERNAL",
];

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    lambda: VoiceLambda<MemoryPorts>,
    /// How many replies had each status (or 0 for a sweep), to show the generators reach
    /// both refusals and successes.
    seen: RefCell<BTreeMap<i64, u32>>,
}

/// A chat room with a known admin, member and pending user, so that some fuzzed requests get
/// past the gate and reach the use cases.
fn harness() -> Harness {
    let (service, h) = memory_service(ServiceConfig::default());
    let users = ["alice", "bob", "carol"];
    for (c, u) in KNOWN.iter().zip(users) {
        h.directory
            .connect(ConnectionId::parse(*c).unwrap(), UserId::parse(u).unwrap());
    }
    let room = ChatRoomId::parse("chat-1").unwrap();
    h.directory
        .create_room(room.clone(), UserId::parse("alice").unwrap())
        .unwrap();
    h.directory
        .request_join(&room, UserId::parse("bob").unwrap())
        .unwrap();
    h.directory
        .approve(&room, &UserId::parse("bob").unwrap())
        .unwrap();
    h.directory
        .request_join(&room, UserId::parse("carol").unwrap())
        .unwrap();
    Harness {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        lambda: VoiceLambda::new(voice_executor::Executor::new(Arc::new(service))),
        seen: RefCell::default(),
    }
}

fn is_schedule(payload: &Value) -> bool {
    payload.get("source").and_then(Value::as_str) == Some("aws.events")
        && payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
}

impl Harness {
    /// Invokes the handler and checks the property; `Err` says what broke.
    fn check(&self, payload: Value) -> Result<(), TestCaseError> {
        let schedule = is_schedule(&payload);
        let out = self.rt.block_on(
            self.lambda
                .handle(LambdaEvent::new(payload.clone(), Context::default())),
        );
        if schedule {
            *self.seen.borrow_mut().entry(0).or_default() += 1;
            prop_assert!(
                matches!(out, Ok(LambdaOutput::Sweep(_))),
                "a schedule runs the sweep: {out:?}"
            );
            return Ok(());
        }
        let response = match out {
            Ok(LambdaOutput::WebSocket(r)) => r,
            other => {
                return Err(TestCaseError::fail(format!(
                    "{payload} got {other:?}, not a WebSocket response"
                )))
            }
        };
        let status = response.status_code;
        *self.seen.borrow_mut().entry(status).or_default() += 1;
        prop_assert!(
            [200, 400, 401, 403, 404, 409, 500, 503].contains(&status),
            "status {status} for {payload}"
        );
        prop_assert_eq!(
            response
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let Some(Body::Text(text)) = &response.body else {
            return Err(TestCaseError::fail(format!("no text body for {payload}")));
        };
        let body: Value = serde_json::from_str(text)
            .map_err(|e| TestCaseError::fail(format!("body is not JSON ({e}): {text}")))?;
        prop_assert_eq!(&body["type"], "reply", "{}", text);
        prop_assert!(body["action"].is_string(), "action: {text}");
        prop_assert!(
            body.get("requestId").is_none_or(Value::is_string),
            "requestId: {text}"
        );
        let ok = body["ok"]
            .as_bool()
            .ok_or_else(|| TestCaseError::fail(format!("ok is not a bool: {text}")))?;
        prop_assert_eq!(ok, status == 200, "ok vs status {}: {}", status, text);
        if !ok {
            let e = &body["error"];
            let code = e["code"].as_str().unwrap_or("");
            prop_assert!(CODES.contains(&code), "code {code:?}: {text}");
            prop_assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "message: {text}"
            );
            prop_assert!(e["retryable"].is_boolean(), "retryable: {text}");
            prop_assert!(body.get("data").is_none(), "data on a refusal: {text}");
        }
        Ok(())
    }
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
        prop::sample::select(vec![
            "requestContext",
            "routeKey",
            "connectionId",
            "body",
            "aws.events",
            "Scheduled Event",
            "$disconnect",
            "$default",
            "createVoiceRoom",
            "getVoiceCredentials",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    ".{0,12}",
                    prop::sample::select(vec![
                        "requestContext".to_owned(),
                        "routeKey".to_owned(),
                        "connectionId".to_owned(),
                        "body".to_owned(),
                        "isBase64Encoded".to_owned(),
                        "source".to_owned(),
                        "detail-type".to_owned(),
                    ])
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn route() -> impl Strategy<Value = Value> {
    let mut names: Vec<&'static str> = VOICE_ACTIONS.to_vec();
    names.extend(["$disconnect", "$default", "$connect", "sendMessage", ""]);
    prop_oneof![
        12 => prop::sample::select(names).prop_map(Value::from),
        1 => ".{0,30}".prop_map(Value::from),
        1 => any_json(),
    ]
}

fn connection() -> impl Strategy<Value = Value> {
    prop_oneof![
        10 => prop::sample::select(KNOWN.to_vec()).prop_map(Value::from),
        2 => "[A-Za-z0-9=_-]{1,40}".prop_map(Value::from),
        1 => ".{0,120}".prop_map(Value::from),
        1 => any_json(),
    ]
}

/// A value for an id field: often a plausible one, else anything.
fn field() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop::sample::select(vec!["chat-1", "chat-1", "chat-2", "vr-1", "", " ", "a b"]).prop_map(Value::from),
        1 => "[ -~]{0,200}".prop_map(Value::from),
        2 => any_json(),
    ]
}

/// A body: a near-miss request object (serialised later, maybe with the route as its action),
/// or a raw value (JSON of another type, any text, not a string at all).
#[derive(Debug, Clone)]
enum BodyGen {
    Request(Map<String, Value>),
    Raw(Value),
}

fn body() -> impl Strategy<Value = BodyGen> {
    let request = (
        prop_oneof![
            3 => prop::sample::select(VOICE_ACTIONS.to_vec()).prop_map(Value::from),
            1 => any_json(),
        ],
        prop::option::weighted(0.8, field()),
        prop::option::weighted(0.8, field()),
        prop::option::weighted(
            0.7,
            prop_oneof![3 => any::<bool>().prop_map(Value::from), 1 => any_json()],
        ),
        // Mostly no requestId: a mistyped one is a 400 before any rule runs, and the refusals
        // past the gate (403 above all) need the rest of the request to be right.
        prop::option::weighted(0.2, any_json()),
        any::<bool>(),
    )
        .prop_map(|(action, room, vroom, muted, rid, with_action)| {
            let mut m = Map::new();
            if with_action {
                m.insert("action".into(), action);
            }
            for (k, v) in [
                ("roomId", room),
                ("voiceRoomId", vroom),
                ("muted", muted),
                ("requestId", rid),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            BodyGen::Request(m)
        });
    prop_oneof![
        6 => request,
        1 => any_json().prop_map(|v| BodyGen::Raw(Value::String(v.to_string()))),
        1 => prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| BodyGen::Raw(Value::String(String::from_utf8_lossy(&b).into_owned()))),
        1 => any_json().prop_map(BodyGen::Raw),
    ]
}

/// A real-looking WebSocket event with parts replaced, mistyped or dropped.
fn near_miss_event() -> impl Strategy<Value = Value> {
    (
        route(),
        connection(),
        prop::option::weighted(0.95, body()),
        any::<bool>(),
        prop::option::weighted(0.05, any_json()),
        prop::option::weighted(
            0.25,
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "eventType",
                        "stage",
                        "domainName",
                        "apiId",
                        "connectedAt",
                        "requestTimeEpoch",
                        "identity",
                        "requestId",
                        "messageDirection",
                    ]),
                    prop::option::of(any_json()),
                ),
                1..3,
            ),
        ),
        prop::option::weighted(0.05, any_json()),
    )
        .prop_map(
            |(route, conn, body, align, b64, context_edits, context_swap)| {
                let mut e = ws_event("createVoiceRoom", KNOWN[0], None);
                if let Some(b) = body {
                    e["body"] = match b {
                        BodyGen::Request(mut m) => {
                            // Often the body names the route's action, as a client would.
                            if align && route.is_string() {
                                m.insert("action".into(), route.clone());
                            }
                            Value::String(Value::Object(m).to_string())
                        }
                        BodyGen::Raw(v) => v,
                    };
                }
                e["requestContext"]["routeKey"] = route;
                e["requestContext"]["connectionId"] = conn;
                if let Some(b) = b64 {
                    e["isBase64Encoded"] = b;
                }
                let ctx = e["requestContext"].as_object_mut().unwrap();
                for (k, v) in context_edits.unwrap_or_default() {
                    match v {
                        Some(v) => {
                            ctx.insert(k.to_owned(), v);
                        }
                        None => {
                            ctx.remove(k);
                        }
                    }
                }
                if let Some(swap) = context_swap {
                    if swap.is_null() {
                        e.as_object_mut().unwrap().remove("requestContext");
                    } else if !swap.is_object() {
                        e["requestContext"] = swap;
                    }
                }
                e
            },
        )
}

fn near_miss_schedule() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(json!("aws.events")), any_json()],
        prop_oneof![
            Just(json!("Scheduled Event")),
            Just(json!("scheduled event")),
            ".{0,30}".prop_map(Value::from),
            any_json()
        ],
        prop::option::of(any_json()),
    )
        .prop_map(|(source, detail_type, detail)| {
            let mut e = json!({"version": "0", "source": source, "detail-type": detail_type});
            if let Some(d) = detail {
                e["detail"] = d;
            }
            e
        })
}

#[test]
fn arbitrary_json_payloads_always_get_a_reply() {
    let h = harness();
    proptest!(config(), |(payload in any_json())| {
        h.check(payload)?;
    });
}

#[test]
fn arbitrary_bytes_that_parse_as_json_always_get_a_reply() {
    let h = harness();
    let parsed = Cell::new(0u32);
    proptest!(config(), |(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        // Bytes of a real event with a few flipped: often still JSON, rarely a valid event.
        (prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)).prop_map(|flips| {
            let mut b = ws_event("getVoiceRoom", KNOWN[1], Some(json!({"roomId": "chat-1"}))).to_string().into_bytes();
            for (i, v) in flips {
                let at = i.index(b.len());
                b[at] = v;
            }
            b
        }),
    ])| {
        // lambda_runtime refuses what is not JSON before the handler runs.
        if let Ok(payload) = serde_json::from_slice::<Value>(&bytes) {
            parsed.set(parsed.get() + 1);
            h.check(payload)?;
        }
    });
    assert!(
        parsed.get() > 0,
        "no generated byte string was JSON: the generator is broken"
    );
}

/// [`config`] with a fixed seed (unless `PROPTEST_RNG_SEED` is set): this test also asserts
/// that the generator reaches every status, and a 403 needs a rare combination (the pending
/// user, a voice action its route agrees with, the right room id, a valid request id): about
/// three in a thousand cases, so a random run of 1 000 missed it now and then. With the seed
/// fixed the coverage check cannot flake; the property itself is still checked on every case.
fn coverage_config() -> ProptestConfig {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEED);
    let base = config();
    ProptestConfig {
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        // At least 1 000 cases whatever PROPTEST_CASES says: with the seed fixed, the coverage
        // check depends on how many cases run, and fewer (a quick local run) missed the 403.
        // (Only honoured by a runner built from this config: `proptest!` re-reads the variable.)
        cases: base.cases.max(1000),
        ..base
    }
}

/// A seed whose first 1 000 cases reach every status the coverage check names.
const SEED: u64 = 6;

#[test]
fn near_miss_websocket_events_always_get_a_reply() {
    let h = harness();
    // A runner of its own, not `proptest!`: the macro lets PROPTEST_CASES override the case
    // count, and the coverage check needs the seeded 1 000.
    let mut runner = proptest::test_runner::TestRunner::new(coverage_config());
    if let Err(e) = runner.run(&near_miss_event(), |event| h.check(event)) {
        panic!("{e}");
    }
    let seen = h.seen.borrow();
    eprintln!("near-miss WebSocket events, replies by status: {seen:?}");
    for status in [200, 400, 401, 403] {
        assert!(
            seen.contains_key(&status),
            "no {status} reply over the run: the generator no longer reaches it ({seen:?})"
        );
    }
}

#[test]
fn near_miss_eventbridge_events_always_get_a_reply_or_run_the_sweep() {
    let h = harness();
    proptest!(config(), |(event in near_miss_schedule())| {
        h.check(event)?;
    });
    let seen = h.seen.borrow();
    assert!(seen.contains_key(&0) && seen.contains_key(&400), "{seen:?}");
}
