//! The authorization matrix against the self-hosted server, over real sockets.
//!
//! - Voice actions: every cell of `tests/authz/matrix.rs` (every caller kind × every voice
//!   action), each on a fresh world. An allowed call must do what it says (checked through the
//!   reply and a fresh `getVoiceRoom`); a refused one must carry exactly the table's code and
//!   change nothing: the room reads the same afterwards and no voice event reaches anyone.
//! - Both entrypoints, byte for byte: every refused cell, and every `getVoiceRoom`, is also sent
//!   as an API Gateway WebSocket event through the Lambda handler (`voice_lambda::VoiceLambda`)
//!   over this same server's executor and state, and the Lambda's reply body must equal the
//!   socket's reply frame exactly. The Lambda and the server share one executor; this proves
//!   neither entrypoint's transport adaptation changes a reply.
//! - The signaling relay, the one place tokens exist: every sender kind with its own or a
//!   borrowed token, expired, forged, tampered, malformed tokens, tokens of another room or of
//!   another role, and signals addressed outside the mesh plan. A refused signal is dropped
//!   (no connection receives it) and reported (the sender gets the typed refusal; the server
//!   logs a line, checked in `tests/logs.rs`).

#[path = "api/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "../../tests/authz/matrix.rs"]
mod matrix;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use voice_domain::ports::Secret;
use voice_domain::ChannelRole;
use voice_lambda::{LambdaOutput, VoiceLambda};
use voice_server::adapters::token::{Claims, TokenGrant, TokenKey};

use matrix::{cells, Action, Caller, Expect};
use support::{approve, spawn_app_with, Client, TestApp};

/// The secret `support::spawn_app_with` configures: lets the test sign tokens the server trusts
/// (expired ones, ones granting the wrong role) to reach the checks behind the signature.
const SERVER_SECRET: &str = "integration-test-token-secret-0123";

const VOICE_EVENTS: [&str; 9] = [
    "voiceStarted",
    "participantJoined",
    "participantLeft",
    "muteChanged",
    "masterChanged",
    "voiceEnded",
    "screenShareStarted",
    "screenShareStopped",
    "screenSharePolicyChanged",
];

async fn app() -> TestApp {
    // Many requests per connection: keep the rate limit out of the way (it has its own tests);
    // many connections from 127.0.0.1: likewise the per-address cap (tested in abuse.rs).
    spawn_app_with(|c| {
        c.rate_limit = voice_server::RateLimit {
            burst: 100_000,
            per_second: 100_000.0,
        };
        c.max_connections_per_ip = 10_000;
    })
    .await
}

/// The world of `tests/authz/matrix.rs`, over real sockets.
struct World {
    ada: Client,
    mo: Client,
    pia: Client,
    bo: Client,
    pat: Client,
    out: Client,
    oz: Client,
    anon: Client,
    room_a: String,
    vr: String,
    vr_b: String,
    mo_token: String,
    pia_token: String,
    oz_token: String,
}

fn s(v: &Value) -> String {
    v.as_str().expect("a string").to_owned()
}

async fn world(app: &TestApp, n: usize) -> World {
    let mut ada = app.user("Ada").await;
    let mut mo = app.user("Mo").await;
    let mut pia = app.user("Pia").await;
    let mut bo = app.user("Bo").await;
    let mut pat = app.user("Pat").await;
    let out = app.user("Out").await;
    let mut oz = app.user("Oz").await;
    let anon = app.connect().await;

    let room_a = s(&ada
        .ok("createRoom", json!({"name": format!("A-{n}")}))
        .await["roomId"]);
    for m in [&mut mo, &mut pia, &mut bo] {
        approve(&mut ada, m, &room_a).await;
    }
    pat.ok("requestJoin", json!({"roomId": room_a})).await;
    ada.event("joinRequested").await;

    let room_b = s(&oz.ok("createRoom", json!({"name": format!("B-{n}")})).await["roomId"]);
    let vr_b = s(&oz.ok("createVoiceRoom", json!({"roomId": room_b})).await["voiceRoomId"]);
    let oz_token = s(&oz
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr_b}))
        .await["credentials"]["token"]);

    let vr = s(&mo.ok("createVoiceRoom", json!({"roomId": room_a})).await["voiceRoomId"]);
    let mo_token = s(&mo
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await["credentials"]["token"]);
    let g = pia
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    assert_eq!(g["newlyJoined"], true);
    let pia_token = s(&g["credentials"]["token"]);

    let mut w = World {
        ada,
        mo,
        pia,
        bo,
        pat,
        out,
        oz,
        anon,
        room_a,
        vr,
        vr_b,
        mo_token,
        pia_token,
        oz_token,
    };
    // Everything the set-up caused has arrived: drop it, so that later events are the case's.
    for c in w.all() {
        c.no_event("signal", Duration::ZERO).await;
        c.clear_events();
    }
    w
}

impl World {
    fn all(&mut self) -> [&mut Client; 8] {
        [
            &mut self.ada,
            &mut self.mo,
            &mut self.pia,
            &mut self.bo,
            &mut self.pat,
            &mut self.out,
            &mut self.oz,
            &mut self.anon,
        ]
    }

    fn client(&mut self, c: Caller) -> &mut Client {
        match c {
            Caller::NoIdentity => &mut self.anon,
            Caller::NotMember => &mut self.out,
            Caller::Pending => &mut self.pat,
            Caller::ApprovedMember => &mut self.bo,
            Caller::ChatAdmin => &mut self.ada,
            Caller::VoiceMaster => &mut self.mo,
            Caller::Participant => &mut self.pia,
            Caller::OtherChatMember => &mut self.oz,
        }
    }

    /// Chat room A's active voice room as Ada (approved) reads it; `null` when none.
    async fn active(&mut self) -> Value {
        let room = self.room_a.clone();
        self.ada.ok("getVoiceRoom", json!({"roomId": room})).await["voiceRoom"].clone()
    }

    fn fields(&self, action: Action) -> Value {
        match action {
            Action::CreateWhileActive | Action::CreateWhenIdle | Action::GetVoiceRoom => {
                json!({"roomId": self.room_a})
            }
            Action::GetCredentials | Action::End | Action::Leave => {
                json!({"voiceRoomId": self.vr})
            }
            Action::SetMute => json!({"voiceRoomId": self.vr, "muted": true}),
            Action::ServerMute => {
                json!({"voiceRoomId": self.vr, "userId": self.pia.user_id, "muted": true})
            }
            Action::StartShare | Action::StartShareHosts | Action::StopShare => {
                json!({"voiceRoomId": self.vr})
            }
            Action::SetSharePolicy => json!({"voiceRoomId": self.vr, "policy": "hosts"}),
        }
    }

    /// Asserts that no voice event reached any connection since the last check.
    async fn nobody_told(&mut self) {
        for c in self.all() {
            for name in VOICE_EVENTS {
                // The refused request's reply has arrived, and a use case publishes before it
                // replies, so a round trip on each connection is enough to see any event.
                c.no_event(name, Duration::ZERO).await;
            }
        }
    }
}

fn participant<'a>(view: &'a Value, user: &str) -> Option<&'a Value> {
    view["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .find(|p| p["userId"] == user)
}

/// Checks that an allowed call did what it says, from its reply and the room read afterwards.
async fn check_effect(w: &mut World, caller: Caller, action: Action, before: &Value, data: &Value) {
    let case = format!("{caller:?} × {action:?}");
    let me = w.client(caller).user_id.clone();
    let (mo, pia) = (w.mo.user_id.clone(), w.pia.user_id.clone());
    let after = w.active().await;
    match action {
        Action::CreateWhileActive => {
            unreachable!("{case}: the table allows no create while active")
        }
        Action::CreateWhenIdle => {
            assert_eq!(data["status"], "active", "{case}: {data}");
            assert_eq!(data["masterUserId"], me.as_str(), "{case}");
            assert_ne!(data["voiceRoomId"], w.vr.as_str(), "{case}: a new room");
            assert_eq!(after["voiceRoomId"], data["voiceRoomId"], "{case}");
            let ps = after["participants"].as_array().unwrap();
            assert_eq!(ps.len(), 1, "{case}: only the starter");
            assert_eq!(ps[0]["userId"], me.as_str(), "{case}");
            // Every approved member hears it, the starter included.
            for c in [&mut w.ada, &mut w.mo, &mut w.pia, &mut w.bo] {
                assert_eq!(
                    c.event("voiceStarted").await["master"],
                    me.as_str(),
                    "{case}"
                );
            }
        }
        Action::GetCredentials => {
            let was_in = participant(before, &me).is_some();
            assert_eq!(data["userId"], me.as_str(), "{case}");
            assert_eq!(data["newlyJoined"], !was_in, "{case}");
            assert_eq!(data["credentials"]["kind"], "token", "{case}");
            assert_eq!(data["self"]["role"], "MASTER", "{case}");
            // Peers: exactly the participants who joined earlier, in join order.
            let order: Vec<Value> = after["participants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["userId"].clone())
                .collect();
            let pos = order
                .iter()
                .position(|u| u == me.as_str())
                .unwrap_or_else(|| panic!("{case}: caller is a participant afterwards"));
            let peers: Vec<Value> = data["peers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["userId"].clone())
                .collect();
            assert_eq!(peers, order[..pos].to_vec(), "{case}");
            let n_before = before["participants"].as_array().unwrap().len();
            let n_after = order.len();
            assert_eq!(n_after, n_before + usize::from(!was_in), "{case}");
            if !was_in {
                for c in [&mut w.ada, &mut w.mo, &mut w.pia, &mut w.bo] {
                    assert_eq!(c.event("participantJoined").await["user"], me.as_str());
                }
            }
        }
        Action::End => {
            assert_eq!(data["status"], "ended", "{case}: {data}");
            assert_eq!(data["participants"], json!([]), "{case}");
            let kind = if caller == Caller::ChatAdmin {
                "endedByAdmin"
            } else {
                "endedByMaster"
            };
            assert_eq!(
                data["endedReason"],
                json!({"kind": kind, "by": me}),
                "{case}"
            );
            assert_eq!(after, Value::Null, "{case}: no active room afterwards");
            for c in [&mut w.ada, &mut w.mo, &mut w.pia, &mut w.bo] {
                assert_eq!(c.event("voiceEnded").await["reason"]["kind"], kind);
            }
            // Nobody can get credentials for it any more.
            let vr = w.vr.clone();
            assert_eq!(
                w.pia
                    .err("getVoiceCredentials", json!({"voiceRoomId": vr}))
                    .await,
                "VOICE_ROOM_ENDED",
                "{case}"
            );
        }
        Action::Leave => {
            assert!(participant(data, &me).is_none(), "{case}: {data}");
            assert!(participant(&after, &me).is_none(), "{case}");
            let want_master = if caller == Caller::VoiceMaster {
                &pia
            } else {
                &mo
            };
            assert_eq!(after["masterUserId"], want_master.as_str(), "{case}");
            for c in [&mut w.ada, &mut w.bo] {
                let ev = c.event("participantLeft").await;
                assert_eq!(
                    (ev["user"].as_str(), ev["reason"].as_str()),
                    (Some(me.as_str()), Some("left"))
                );
            }
            if caller == Caller::VoiceMaster {
                assert_eq!(w.ada.event("masterChanged").await["master"], pia.as_str());
            }
        }
        Action::SetMute => {
            assert_eq!(participant(data, &me).unwrap()["muted"], true, "{case}");
            assert_eq!(participant(&after, &me).unwrap()["muted"], true, "{case}");
            let ev = w.bo.event("muteChanged").await;
            assert_eq!(
                (ev["user"].as_str(), ev["muted"].as_bool()),
                (Some(me.as_str()), Some(true))
            );
        }
        Action::ServerMute => {
            for view in [data, &after] {
                let p = participant(view, &pia).unwrap();
                assert_eq!(
                    (&p["muted"], &p["serverMuted"]),
                    (&json!(true), &json!(true)),
                    "{case}"
                );
            }
            for c in [&mut w.ada, &mut w.mo, &mut w.pia, &mut w.bo] {
                let ev = c.event("muteChanged").await;
                assert_eq!(
                    (
                        ev["user"].as_str(),
                        ev["muted"].as_bool(),
                        ev["serverMuted"].as_bool()
                    ),
                    (Some(pia.as_str()), Some(true), Some(true)),
                    "{case}"
                );
            }
            // Pia cannot unmute herself while it holds.
            let vr = w.vr.clone();
            assert_eq!(
                w.pia
                    .err("setMute", json!({"voiceRoomId": vr, "muted": false}))
                    .await,
                "SERVER_MUTED",
                "{case}"
            );
        }
        Action::StartShare | Action::StartShareHosts => {
            for view in [data, &after] {
                assert_eq!(view["screenShare"]["userId"], me.as_str(), "{case}: {view}");
            }
            for c in [&mut w.ada, &mut w.mo, &mut w.pia, &mut w.bo] {
                let ev = c.event("screenShareStarted").await;
                assert_eq!(ev["user"], me.as_str(), "{case}");
            }
            // One sharer at a time: the other participant is refused while it lasts.
            let other = if caller == Caller::VoiceMaster {
                &mut w.pia
            } else {
                &mut w.mo
            };
            let vr = w.vr.clone();
            let code = other
                .err("startScreenShare", json!({"voiceRoomId": vr}))
                .await;
            let want = if action == Action::StartShareHosts {
                "NOT_ALLOWED"
            } else {
                "SCREEN_SHARE_BUSY"
            };
            assert_eq!(code, want, "{case}");
        }
        Action::StopShare => {
            for view in [data, &after] {
                assert!(view.get("screenShare").is_none(), "{case}: {view}");
            }
            for c in [&mut w.ada, &mut w.mo, &mut w.pia, &mut w.bo] {
                let ev = c.event("screenShareStopped").await;
                assert_eq!(
                    (ev["user"].as_str(), &ev["reason"]),
                    (Some(pia.as_str()), &json!({"kind": "stopped", "by": me})),
                    "{case}"
                );
            }
        }
        Action::SetSharePolicy => {
            for view in [data, &after] {
                assert_eq!(view["screenSharePolicy"], "hosts", "{case}: {view}");
            }
            for c in [&mut w.ada, &mut w.mo, &mut w.pia, &mut w.bo] {
                let ev = c.event("screenSharePolicyChanged").await;
                assert_eq!(
                    (ev["policy"].as_str(), ev["by"].as_str()),
                    (Some("hosts"), Some(me.as_str()))
                );
            }
            // Pia may no longer share.
            let vr = w.vr.clone();
            assert_eq!(
                w.pia
                    .err("startScreenShare", json!({"voiceRoomId": vr}))
                    .await,
                "NOT_ALLOWED",
                "{case}"
            );
        }
        Action::GetVoiceRoom => {
            assert_eq!(data["voiceRoom"]["voiceRoomId"], w.vr.as_str(), "{case}");
            assert_eq!(
                &data["voiceRoom"], before,
                "{case}: reading changes nothing"
            );
            assert_eq!(&after, before, "{case}");
        }
    }
}

/// The request frame of a cell, with a fixed `requestId` (both entrypoints echo it).
fn frame(action: Action, fields: &Value, n: usize) -> String {
    let mut frame = fields.clone();
    frame["action"] = json!(action.wire());
    frame["requestId"] = json!(format!("same-{n}"));
    frame.to_string()
}

/// `frame` from connection `conn`, as API Gateway hands it to the Lambda (route = the body's
/// action), through the Lambda handler over the running server's executor; the reply body.
async fn lambda_reply(app: &TestApp, conn: &str, frame: &str) -> String {
    let lambda = VoiceLambda::new(app.server.executor().clone());
    let route: Value =
        serde_json::from_str::<Value>(frame).expect("a JSON frame")["action"].clone();
    let event = json!({
        "requestContext": {
            "routeKey": route,
            "eventType": "MESSAGE",
            "messageDirection": "IN",
            "stage": "prod",
            "requestId": "Xk2IbF_doAMFhDg=",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "connectionId": conn,
            "apiId": "abc123"
        },
        "isBase64Encoded": false,
        "body": frame,
    });
    let out = lambda
        .handle(lambda_runtime::LambdaEvent::new(
            event,
            lambda_runtime::Context::default(),
        ))
        .await
        .expect("a WebSocket event always gets a response");
    let LambdaOutput::WebSocket(response) = out else {
        panic!("a WebSocket event got a sweep report")
    };
    match response.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => t,
        other => panic!("the Lambda replied without a text body: {other:?}"),
    }
}

/// One cell on a fresh world; returns whether it was allowed.
async fn run_cell(app: &TestApp, n: usize, caller: Caller, action: Action, expect: Expect) -> bool {
    let case = format!("{caller:?} × {action:?}");
    let mut w = world(app, n).await;
    if action == Action::CreateWhenIdle {
        let vr = w.vr.clone();
        w.mo.ok("endVoiceRoom", json!({"voiceRoomId": vr})).await;
        for c in w.all() {
            c.no_event("signal", Duration::ZERO).await;
            c.clear_events();
        }
    }
    let vr = w.vr.clone();
    let set_up = match action {
        Action::StartShareHosts => Some((
            &mut w.mo,
            "setScreenSharePolicy",
            json!({"voiceRoomId": vr, "policy": "hosts"}),
            "screenSharePolicyChanged",
        )),
        Action::StopShare => Some((
            &mut w.pia,
            "startScreenShare",
            json!({"voiceRoomId": vr}),
            "screenShareStarted",
        )),
        _ => None,
    };
    if let Some((who, setup, fields, heard)) = set_up {
        who.ok(setup, fields).await;
        // Everyone has heard the set-up before the case starts.
        for c in [&mut w.ada, &mut w.mo, &mut w.pia, &mut w.bo] {
            c.event(heard).await;
        }
        for c in w.all() {
            c.no_event("signal", Duration::ZERO).await;
            c.clear_events();
        }
    }
    let before = w.active().await;
    let fields = w.fields(action);
    // A request that changes nothing is also sent through the Lambda first (same executor, same
    // state), and both replies must be the same bytes.
    let via_lambda = if matches!(expect, Expect::Refuse(_)) || !action.mutates() {
        let client = w.client(caller);
        let conn = if client.connection_id.is_empty() {
            // The anonymous caller never said hello: an unknown connection on both sides.
            "never-said-hello".to_owned()
        } else {
            client.connection_id.clone()
        };
        Some(lambda_reply(app, &conn, &frame(action, &fields, n)).await)
    } else {
        None
    };
    let reply = match &via_lambda {
        Some(_) => {
            let c = w.client(caller);
            c.send_text(frame(action, &fields, n)).await;
            let reply = c.next_reply().await;
            assert_eq!(reply["requestId"], format!("same-{n}"), "{case}");
            reply
        }
        None => w.client(caller).request(action.wire(), fields).await,
    };
    if let Some(lambda_body) = via_lambda {
        assert_eq!(
            w.client(caller).last_text,
            lambda_body,
            "{case}: the Lambda and the server answer the same request with different bytes"
        );
    }
    match expect {
        Expect::Allow => {
            assert_eq!(reply["ok"], true, "{case}: expected allowed, got {reply}");
            check_effect(&mut w, caller, action, &before, &reply["data"]).await;
            true
        }
        Expect::Refuse(code) => {
            assert_eq!(reply["ok"], false, "{case}: expected {code}, got {reply}");
            assert_eq!(reply["error"]["code"], code, "{case}: {reply}");
            assert_eq!(reply["error"]["retryable"], false, "{case}");
            assert!(
                reply["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{case}: says why"
            );
            assert_eq!(
                w.active().await,
                before,
                "{case}: a refusal changed the room"
            );
            w.nobody_told().await;
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_kind_gets_the_tables_answer_for_every_voice_action() {
    use futures_util::StreamExt as _;
    let app = app().await;
    let started = std::time::Instant::now();
    // Cells are independent (each has its own users and chat rooms), so they run a few at a
    // time on the one server.
    let outcomes: Vec<bool> = futures_util::stream::iter(cells().into_iter().enumerate())
        .map(|(n, (caller, action, expect))| run_cell(&app, n, caller, action, expect))
        .buffer_unordered(8)
        .collect()
        .await;
    let allowed = outcomes.iter().filter(|a| **a).count();
    let refused = outcomes.len() - allowed;
    eprintln!(
        "authz matrix (server, real sockets): {} cells, {allowed} allowed, {refused} refused, {:?}",
        outcomes.len(),
        started.elapsed()
    );
    assert_eq!((allowed, refused), (28, 68));
}

// ---------------------------------------------------------------------------------------------
// The signaling relay
// ---------------------------------------------------------------------------------------------

/// Which token the sender presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// The sender's own, from its `getVoiceCredentials`.
    Own,
    /// Another participant's (Pia's or Mo's), i.e. stolen.
    Pias,
    Mos,
    /// Oz's, issued for chat room B's voice room.
    OtherRooms,
    /// Pia's claims, signed by the server's key, but expired a minute ago.
    Expired,
    /// Pia's token with its signature altered.
    BadSignature,
    /// Pia's claims rewritten (role VIEWER → MASTER on Mo's channel), signature kept.
    TamperedClaims,
    /// Pia's claims signed with another key.
    ForeignKey,
    /// Pia's claims, correctly signed, granting MASTER (not VIEWER) on Mo's channel: a token of
    /// another role for this link.
    WrongRole,
    /// Not a token at all.
    Garbage,
}

/// Who the signal is for.
#[derive(Debug, Clone, Copy)]
enum To {
    Mo,
    Pia,
    Bo,
    Out,
    Nobody,
}

/// One signal case: `from` sends `kind` to `to` in `room` (V unless `in_vb`) with `token`.
struct SignalCase {
    from: Caller,
    token: Token,
    to: To,
    kind: &'static str,
    in_vb: bool,
    expect: Expect,
}

const fn sig(from: Caller, token: Token, to: To, kind: &'static str, expect: Expect) -> SignalCase {
    SignalCase {
        from,
        token,
        to,
        kind,
        in_vb: false,
        expect,
    }
}

const NOT_PEER: Expect = Expect::Refuse("NOT_PEER");
const UNAUTHORIZED: Expect = Expect::Refuse("UNAUTHORIZED");

/// The relay's table. Mo joined V first and Pia second, so on their one link Mo's channel is
/// used, Mo as master and Pia as viewer: Pia offers, Mo answers, candidates go both ways.
fn signal_cases() -> Vec<SignalCase> {
    use Caller::*;
    let mut cases = vec![
        // The mesh plan, as it should flow.
        sig(Participant, Token::Own, To::Mo, "offer", Expect::Allow),
        sig(Participant, Token::Own, To::Mo, "candidate", Expect::Allow),
        sig(VoiceMaster, Token::Own, To::Pia, "answer", Expect::Allow),
        sig(VoiceMaster, Token::Own, To::Pia, "candidate", Expect::Allow),
        // The right people, the wrong direction for the kind.
        sig(VoiceMaster, Token::Own, To::Pia, "offer", NOT_PEER),
        sig(Participant, Token::Own, To::Mo, "answer", NOT_PEER),
        // Addressed outside the mesh plan.
        sig(Participant, Token::Own, To::Pia, "candidate", NOT_PEER),
        sig(Participant, Token::Own, To::Bo, "candidate", NOT_PEER),
        sig(Participant, Token::Own, To::Out, "candidate", NOT_PEER),
        sig(Participant, Token::Own, To::Nobody, "candidate", NOT_PEER),
        // Every caller kind that is not a participant, with a participant's token.
        sig(
            NoIdentity,
            Token::Pias,
            To::Mo,
            "offer",
            Expect::Refuse("NOT_IDENTIFIED"),
        ),
        sig(NotMember, Token::Pias, To::Mo, "offer", UNAUTHORIZED),
        sig(Pending, Token::Pias, To::Mo, "offer", UNAUTHORIZED),
        sig(ApprovedMember, Token::Pias, To::Mo, "offer", UNAUTHORIZED),
        sig(ChatAdmin, Token::Pias, To::Mo, "offer", UNAUTHORIZED),
        sig(ChatAdmin, Token::Mos, To::Pia, "answer", UNAUTHORIZED),
        sig(OtherChatMember, Token::Pias, To::Mo, "offer", UNAUTHORIZED),
        // A participant with another participant's token.
        sig(Participant, Token::Mos, To::Mo, "offer", UNAUTHORIZED),
        sig(VoiceMaster, Token::Pias, To::Pia, "answer", UNAUTHORIZED),
        // A member of another chat room with its own (valid) token for that room's voice room.
        sig(
            OtherChatMember,
            Token::OtherRooms,
            To::Mo,
            "offer",
            UNAUTHORIZED,
        ),
        // Bad tokens in a participant's hands.
        sig(Participant, Token::Expired, To::Mo, "offer", UNAUTHORIZED),
        sig(
            Participant,
            Token::BadSignature,
            To::Mo,
            "offer",
            UNAUTHORIZED,
        ),
        sig(
            Participant,
            Token::TamperedClaims,
            To::Mo,
            "offer",
            UNAUTHORIZED,
        ),
        sig(
            Participant,
            Token::ForeignKey,
            To::Mo,
            "offer",
            UNAUTHORIZED,
        ),
        sig(Participant, Token::WrongRole, To::Mo, "offer", UNAUTHORIZED),
        sig(Participant, Token::Garbage, To::Mo, "offer", UNAUTHORIZED),
    ];
    // Pia's valid token for V, presented for chat room B's voice room: another room's token.
    cases.push(SignalCase {
        in_vb: true,
        ..sig(Participant, Token::Own, To::Mo, "offer", UNAUTHORIZED)
    });
    // Oz in its own room, to Mo, who is not in it: the token is right, the peer is not.
    cases.push(SignalCase {
        in_vb: true,
        ..sig(OtherChatMember, Token::Own, To::Mo, "offer", NOT_PEER)
    });
    cases
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims_of(token: &str) -> Claims {
    let (payload, _) = token.split_once('.').unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn token_for(w: &World, from: Caller, token: Token) -> String {
    let server_key = TokenKey::new(Secret::new(SERVER_SECRET));
    let pia = claims_of(&w.pia_token);
    match token {
        Token::Own => match from {
            Caller::VoiceMaster => w.mo_token.clone(),
            Caller::Participant => w.pia_token.clone(),
            Caller::OtherChatMember => w.oz_token.clone(),
            other => panic!("{other:?} has no token of its own"),
        },
        Token::Pias => w.pia_token.clone(),
        Token::Mos => w.mo_token.clone(),
        Token::OtherRooms => w.oz_token.clone(),
        Token::Expired => {
            let mut c = pia;
            c.exp = now_secs() - 60;
            server_key.sign(&c).expose().to_owned()
        }
        Token::BadSignature => {
            let (payload, sig) = w.pia_token.split_once('.').unwrap();
            let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
            sig[0] ^= 1;
            format!("{payload}.{}", URL_SAFE_NO_PAD.encode(sig))
        }
        Token::TamperedClaims => {
            let mut c = pia;
            for g in &mut c.grants {
                g.role = ChannelRole::Master;
            }
            let (_, sig) = w.pia_token.split_once('.').unwrap();
            format!(
                "{}.{sig}",
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap())
            )
        }
        Token::ForeignKey => TokenKey::new(Secret::new("a-different-server-secret-0123"))
            .sign(&pia)
            .expose()
            .to_owned(),
        Token::WrongRole => {
            let mo_channel = claims_of(&w.mo_token).grants[0].channel_arn.clone();
            let mut c = pia;
            c.grants = vec![TokenGrant {
                channel_arn: mo_channel,
                role: ChannelRole::Master,
            }];
            server_key.sign(&c).expose().to_owned()
        }
        Token::Garbage => "not-a-token".into(),
    }
}

#[tokio::test]
async fn the_relay_passes_exactly_the_mesh_plan_and_drops_and_reports_the_rest() {
    let app = app().await;
    let mut w = world(&app, 0).await;
    // The token shapes the cases rely on.
    let pia_claims = claims_of(&w.pia_token);
    assert_eq!(pia_claims.user_id, w.pia.user_id);
    assert_eq!(pia_claims.voice_room_id, w.vr);
    assert_eq!(
        pia_claims.grants.iter().map(|g| g.role).collect::<Vec<_>>(),
        vec![ChannelRole::Master, ChannelRole::Viewer],
        "own channel as master, Mo's as viewer"
    );
    assert_eq!(
        pia_claims.grants[1].channel_arn,
        claims_of(&w.mo_token).grants[0].channel_arn
    );

    let cases = signal_cases();
    let (mut allowed, mut refused) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        let name = format!(
            "signal #{i}: {:?} with {:?} token, {} to {:?}{}",
            case.from,
            case.token,
            case.kind,
            case.to,
            if case.in_vb { " in VB" } else { "" }
        );
        let token = token_for(&w, case.from, case.token);
        let to = match case.to {
            To::Mo => w.mo.user_id.clone(),
            To::Pia => w.pia.user_id.clone(),
            To::Bo => w.bo.user_id.clone(),
            To::Out => w.out.user_id.clone(),
            To::Nobody => "nobody-at-all".into(),
        };
        let room = if case.in_vb { &w.vr_b } else { &w.vr }.clone();
        let payload = json!({"case": i, "sdp": "v=0\r\n"});
        let sender_id = w.client(case.from).user_id.clone();
        let reply = w
            .client(case.from)
            .request(
                "signal",
                json!({"voiceRoomId": room, "token": token, "to": to, "kind": case.kind, "payload": payload}),
            )
            .await;
        match case.expect {
            Expect::Allow => {
                allowed += 1;
                assert_eq!(reply["ok"], true, "{name}: {reply}");
                assert_eq!(reply["data"], json!({}), "{name}");
                let recipient = match case.to {
                    To::Mo => &mut w.mo,
                    To::Pia => &mut w.pia,
                    _ => unreachable!("allowed signals go to Mo or Pia"),
                };
                let ev = recipient.event("signal").await;
                assert_eq!(
                    ev,
                    json!({"type": "event", "event": "signal", "voiceRoomId": room,
                           "from": sender_id, "kind": case.kind, "payload": payload}),
                    "{name}"
                );
            }
            Expect::Refuse(code) => {
                refused += 1;
                assert_eq!(reply["ok"], false, "{name}: expected {code}, got {reply}");
                assert_eq!(reply["error"]["code"], code, "{name}: {reply}");
                assert_eq!(reply["error"]["retryable"], false, "{name}");
            }
        }
        // Dropped: nobody (else) received anything.
        for c in w.all() {
            c.no_event("signal", Duration::ZERO).await;
        }
    }
    eprintln!(
        "authz matrix (server relay): {} signal cases, {allowed} relayed, {refused} dropped and reported",
        cases.len()
    );
    assert_eq!(allowed, 4);
}
