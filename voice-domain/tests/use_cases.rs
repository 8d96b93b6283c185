//! Use-case tests of `VoiceService` over mockall mocks of every port.
//!
//! Each use case is scripted step by step (one port call per step). The tests make each step
//! fail, retryably and permanently, and check three things: the error the caller gets (variant,
//! wire code, retryable flag, which port), that nothing after the failing step runs (a mock
//! panics on any call it was not told to expect, and `never()` makes the important ones
//! explicit), and the clean-up (a channel created before the failure is deleted, exactly once).
//! Further tests cover races (compare-and-set conflicts, a concurrent start), the access gate
//! (refused before any channel exists) and "gone" connections found while publishing.
//!
//! Runtime-agnostic on purpose: the futures are driven by `futures::executor::block_on`, so
//! voice-domain needs no tokio, not even for its tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::executor::block_on;
use mockall::mock;
use mockall::predicate::{always, eq};
use voice_domain::errors::{
    DependencyError, DisconnectError, EndVoiceError, GetVoiceRoomError, JoinVoiceError,
    LeaveVoiceError, PortName, SetMuteError, StartVoiceError, SweepError, UseCaseError,
};
use voice_domain::ports::{
    Adapters, ChannelEndpoints, ChannelError, ChannelTags, ChatDirectory, Clock, CredentialError,
    CredentialIssuer, CredentialRequest, Credentials, DirectoryError, IdGenerator,
    IssuedCredentials, ListedChannel, MemberState, Membership, Notifier, NotifyError, PortFailure,
    Ports, Secret, SignalingChannels, StoreError, VoiceRoomStore,
};
use voice_domain::room::{ChannelGrant, EndReason, LeaveReason, RoomStatus};
use voice_domain::{
    Capacity, ChannelArn, ChannelName, ChannelRole, ChatRoomId, ClientId, ConnectionId,
    ServiceConfig, SignalingChannel, Timestamp, UserId, VoiceEvent, VoiceRoom, VoiceRoomId,
    VoiceService,
};

mock! {
    pub Store {}
    #[async_trait]
    impl VoiceRoomStore for Store {
        async fn create_if_none_active(&self, room: &VoiceRoom) -> Result<(), StoreError>;
        async fn get(&self, id: &VoiceRoomId) -> Result<Option<VoiceRoom>, StoreError>;
        async fn active_in_chat_room(
            &self,
            chat_room: &ChatRoomId,
        ) -> Result<Option<VoiceRoom>, StoreError>;
        async fn active_with_connection(
            &self,
            connection: &ConnectionId,
        ) -> Result<Vec<VoiceRoom>, StoreError>;
        async fn update(&self, room: &VoiceRoom) -> Result<(), StoreError>;
        async fn list_active(&self) -> Result<Vec<VoiceRoom>, StoreError>;
    }
}

mock! {
    pub Directory {}
    #[async_trait]
    impl ChatDirectory for Directory {
        async fn user_of(&self, connection: &ConnectionId) -> Result<Option<UserId>, DirectoryError>;
        async fn membership(
            &self,
            chat_room: &ChatRoomId,
            user: &UserId,
        ) -> Result<Option<Membership>, DirectoryError>;
        async fn connections_of(
            &self,
            chat_room: &ChatRoomId,
        ) -> Result<Vec<ConnectionId>, DirectoryError>;
    }
}

mock! {
    pub Channels {}
    #[async_trait]
    impl SignalingChannels for Channels {
        async fn create(
            &self,
            name: &ChannelName,
            tags: &ChannelTags,
        ) -> Result<SignalingChannel, ChannelError>;
        async fn delete(&self, channel: &SignalingChannel) -> Result<(), ChannelError>;
        async fn endpoints(
            &self,
            channel: &SignalingChannel,
            role: ChannelRole,
            client_id: &ClientId,
        ) -> Result<ChannelEndpoints, ChannelError>;
        async fn list(&self) -> Result<Vec<ListedChannel>, ChannelError>;
    }
}

mock! {
    pub Issuer {}
    #[async_trait]
    impl CredentialIssuer for Issuer {
        async fn issue(
            &self,
            request: &CredentialRequest,
        ) -> Result<IssuedCredentials, CredentialError>;
    }
}

mock! {
    pub Notify {}
    #[async_trait]
    impl Notifier for Notify {
        async fn send(&self, to: &ConnectionId, event: &VoiceEvent) -> Result<(), NotifyError>;
    }
}

const NOW_MS: u64 = 1_700_000_000_000;

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(NOW_MS)
    }
}

/// `vr-new` for the room, `voice-new-1`, `voice-new-2`, ... for channels.
#[derive(Default)]
struct SeqIds(AtomicU64);

impl IdGenerator for SeqIds {
    fn voice_room_id(&self) -> VoiceRoomId {
        VoiceRoomId::parse("vr-new").unwrap()
    }
    fn channel_name(&self) -> ChannelName {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        ChannelName::from_unique(&format!("new-{n}")).unwrap()
    }
}

struct TestPorts;

impl Ports for TestPorts {
    type Store = MockStore;
    type Directory = MockDirectory;
    type Channels = MockChannels;
    type Credentials = MockIssuer;
    type Notifier = MockNotify;
    type Clock = FixedClock;
    type Ids = SeqIds;
    type Pool = voice_domain::pool::NoPool;
}

#[derive(Default)]
struct Mocks {
    store: MockStore,
    dir: MockDirectory,
    chans: MockChannels,
    creds: MockIssuer,
    notify: MockNotify,
}

impl Mocks {
    /// A service with a zero reconnect grace: these mock tests pin each step of the
    /// leave-at-once path (which the sweep's expiry and a zero grace still take). The resume
    /// path, with the default grace, is tested over the memory adapters
    /// (voice-adapters-memory/tests/resume.rs) and in the proptest model.
    fn service(self) -> VoiceService<TestPorts> {
        self.service_with(ServiceConfig {
            reconnect_grace: Duration::ZERO,
            ..ServiceConfig::default()
        })
    }

    fn service_with(self, config: ServiceConfig) -> VoiceService<TestPorts> {
        VoiceService::new(
            Adapters::<TestPorts> {
                store: self.store,
                directory: self.dir,
                channels: self.chans,
                credentials: self.creds,
                notifier: self.notify,
                clock: FixedClock,
                ids: SeqIds::default(),
                pool: voice_domain::pool::NoPool,
            },
            config,
        )
    }

    /// Every event is told to `targets` of chat-1; returns the log of what was sent to whom.
    fn publish_to(&mut self, targets: &[&str], events: usize) -> Sent {
        let targets: Vec<ConnectionId> = targets.iter().map(|t| conn(t)).collect();
        let n = targets.len();
        self.dir
            .expect_connections_of()
            .with(eq(chat()))
            .times(events)
            .returning(move |_| Ok(targets.clone()));
        let log = Sent::default();
        let sink = log.clone();
        self.notify
            .expect_send()
            .times(events * n)
            .returning(move |to, ev| {
                sink.0.lock().unwrap().push((to.clone(), ev.clone()));
                Ok(())
            });
        log
    }

    fn no_publish(&mut self) {
        self.dir.expect_connections_of().never();
        self.notify.expect_send().never();
    }
}

/// What the notifier was asked to send, in order.
#[derive(Clone, Default)]
struct Sent(Arc<Mutex<Vec<(ConnectionId, VoiceEvent)>>>);

impl Sent {
    fn events_to(&self, to: &str) -> Vec<VoiceEvent> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c.as_str() == to)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
fn conn(s: &str) -> ConnectionId {
    ConnectionId::parse(s).unwrap()
}
fn chat() -> ChatRoomId {
    ChatRoomId::parse("chat-1").unwrap()
}
fn vr() -> VoiceRoomId {
    VoiceRoomId::parse("vr-1").unwrap()
}
fn vr_new() -> VoiceRoomId {
    VoiceRoomId::parse("vr-new").unwrap()
}
/// The channel the adapter returns for a name (the mock's `create` is consistent with it).
fn chan_named(name: &ChannelName) -> SignalingChannel {
    SignalingChannel {
        name: name.clone(),
        arn: ChannelArn::parse(format!("arn:test:{name}")).unwrap(),
    }
}
/// Channel `voice-{s}`.
fn ch(s: &str) -> SignalingChannel {
    chan_named(&ChannelName::from_unique(s).unwrap())
}
/// The first channel the service creates.
fn new_ch() -> SignalingChannel {
    ch("new-1")
}
fn approved() -> Option<Membership> {
    Some(Membership {
        state: MemberState::Approved,
        is_admin: false,
    })
}
fn as_admin() -> Option<Membership> {
    Some(Membership {
        state: MemberState::Approved,
        is_admin: true,
    })
}
fn endpoints() -> ChannelEndpoints {
    ChannelEndpoints {
        wss: "wss://signal.test".into(),
        https: None,
        ice_servers: vec![],
    }
}
fn issued() -> IssuedCredentials {
    IssuedCredentials {
        credentials: Credentials::Token {
            token: Secret::new("t0k3n"),
        },
        expires_at: Timestamp::from_millis(NOW_MS + 3_600_000),
    }
}
fn pf(retryable: bool) -> PortFailure {
    PortFailure {
        retryable,
        message: "scripted failure".into(),
    }
}
fn store_err(r: bool) -> StoreError {
    StoreError::Unavailable(pf(r))
}
fn dir_err(r: bool) -> DirectoryError {
    DirectoryError::Unavailable(pf(r))
}
fn chan_err(r: bool) -> ChannelError {
    ChannelError::Unavailable(pf(r))
}
fn cred_err(r: bool) -> CredentialError {
    CredentialError::Unavailable(pf(r))
}

/// A stored room in chat-1 with `members` in join order (the first is master); member `x` is
/// on connection `c-x` with channel `voice-x`; one version per stored change.
fn room_of(id: &str, capacity: u8, members: &[&str]) -> VoiceRoom {
    let (mut room, _) = VoiceRoom::start(
        VoiceRoomId::parse(id).unwrap(),
        chat(),
        user(members[0]),
        conn(&format!("c-{}", members[0])),
        ch(members[0]),
        Capacity::new(capacity).unwrap(),
        Timestamp::from_millis(NOW_MS - 60_000),
    );
    for m in &members[1..] {
        room.join(
            user(m),
            conn(&format!("c-{m}")),
            ch(m),
            Timestamp::from_millis(NOW_MS - 30_000),
        )
        .unwrap();
        room.bump_version();
    }
    room
}
fn room(members: &[&str]) -> VoiceRoom {
    room_of("vr-1", 10, members)
}
fn ended(mut r: VoiceRoom) -> VoiceRoom {
    r.abandon(Timestamp::from_millis(NOW_MS - 1)).unwrap();
    r.bump_version();
    r
}

/// The part of an error the entrypoints use, uniform over the use cases.
trait Dep: UseCaseError {
    fn dep(&self) -> Option<&DependencyError>;
}
macro_rules! dep_for {
    ($($t:ty),*) => {$(
        impl Dep for $t {
            fn dep(&self) -> Option<&DependencyError> {
                match self {
                    Self::Dependency(d) => Some(d),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }
    )*};
}
dep_for!(
    StartVoiceError,
    GetVoiceRoomError,
    JoinVoiceError,
    LeaveVoiceError,
    SetMuteError,
    EndVoiceError,
    DisconnectError,
    SweepError
);

/// `err` is a dependency failure of `port` with the right code and retryable flag.
fn assert_dependency(case: &str, err: &impl Dep, port: PortName, retryable: bool) {
    let d = err
        .dep()
        .unwrap_or_else(|| panic!("{case}: expected a dependency error, got {err:?}"));
    assert_eq!(d.port, port, "{case}: port");
    assert_eq!(err.retryable(), retryable, "{case}: retryable");
    assert_eq!(
        err.code(),
        if retryable { "UNAVAILABLE" } else { "INTERNAL" },
        "{case}: code"
    );
    // The caller's message says what to do, never the port's own words.
    assert!(!err.to_string().contains("scripted failure"), "{case}");
}

/// `Some(retryable)` if step `i` is the one scripted to fail.
type Fail = Option<(usize, bool)>;
fn fails(fail: Fail, i: usize) -> Option<bool> {
    fail.filter(|(s, _)| *s == i).map(|(_, r)| r)
}
/// Whether step `i` runs at all (no failure before it).
fn reaches(fail: Fail, i: usize) -> bool {
    fail.is_none_or(|(s, _)| s >= i)
}

// ---------------------------------------------------------------------------------------------
// start_voice
// ---------------------------------------------------------------------------------------------

/// alice (c-alice) starts voice in chat-1. Steps: 0 user_of, 1 membership, 2 active_in_chat_room,
/// 3 channels.create, 4 store.create_if_none_active; then the events go to c-alice and c-bob.
fn start_script(fail: Fail) -> (Mocks, Sent) {
    let mut m = Mocks::default();
    m.dir
        .expect_user_of()
        .with(eq(conn("c-alice")))
        .times(1)
        .returning(move |_| match fails(fail, 0) {
            Some(r) => Err(dir_err(r)),
            None => Ok(Some(user("alice"))),
        });
    if reaches(fail, 1) {
        m.dir
            .expect_membership()
            .with(eq(chat()), eq(user("alice")))
            .times(1)
            .returning(move |_, _| match fails(fail, 1) {
                Some(r) => Err(dir_err(r)),
                None => Ok(approved()),
            });
    }
    if reaches(fail, 2) {
        m.store
            .expect_active_in_chat_room()
            .with(eq(chat()))
            .times(1)
            .returning(move |_| match fails(fail, 2) {
                Some(r) => Err(store_err(r)),
                None => Ok(None),
            });
    }
    if reaches(fail, 3) {
        m.chans
            .expect_create()
            .withf(|name, tags| {
                name == &new_ch().name
                    && tags
                        == &ChannelTags {
                            chat_room: chat(),
                            voice_room: vr_new(),
                            owner: user("alice"),
                        }
            })
            .times(1)
            .returning(move |name, _| match fails(fail, 3) {
                Some(r) => Err(chan_err(r)),
                None => Ok(chan_named(name)),
            });
    } else {
        m.chans.expect_create().never();
    }
    if reaches(fail, 4) {
        m.store
            .expect_create_if_none_active()
            .withf(|room| {
                room.id() == &vr_new()
                    && room.master() == &user("alice")
                    && room.version() == 1
                    && room.participants().len() == 1
                    && room.participants()[0].channel == new_ch()
                    && room.participants()[0].connection == conn("c-alice")
            })
            .times(1)
            .returning(move |_| match fails(fail, 4) {
                Some(r) => Err(store_err(r)),
                None => Ok(()),
            });
    } else {
        m.store.expect_create_if_none_active().never();
    }
    let sent = if fail.is_none() {
        m.chans.expect_delete().never();
        m.publish_to(&["c-alice", "c-bob"], 2)
    } else {
        m.no_publish();
        Sent::default()
    };
    (m, sent)
}

#[test]
fn start_voice_creates_a_channel_stores_the_room_then_tells_the_chat_room() {
    let (m, sent) = start_script(None);
    let room = block_on(m.service().start_voice(&conn("c-alice"), &chat())).unwrap();
    assert_eq!(room.id(), &vr_new());
    assert_eq!(room.master(), &user("alice"));
    assert_eq!(room.participants()[0].channel, new_ch());
    for to in ["c-alice", "c-bob"] {
        assert_eq!(
            sent.events_to(to),
            vec![
                VoiceEvent::VoiceStarted {
                    voice_room_id: vr_new(),
                    chat_room_id: chat(),
                    master: user("alice"),
                },
                VoiceEvent::ParticipantJoined {
                    voice_room_id: vr_new(),
                    chat_room_id: chat(),
                    user: user("alice"),
                    client_id: Some(voice_domain::ClientId::parse("c-alice").unwrap()),
                    muted: false,
                },
            ]
        );
    }
}

#[test]
fn start_voice_fails_cleanly_at_each_step() {
    let steps = [
        (0, PortName::Directory),
        (1, PortName::Directory),
        (2, PortName::Store),
        (3, PortName::Channels),
        (4, PortName::Store),
    ];
    for (step, port) in steps {
        for retryable in [true, false] {
            let case = format!("start_voice step {step} retryable {retryable}");
            let (mut m, _) = start_script(Some((step, retryable)));
            if step == 4 {
                // The failed create is read back (a timeout may hide a landed write): not
                // there, so the channel made for it is deleted, once.
                m.store
                    .expect_get()
                    .with(eq(vr_new()))
                    .times(1)
                    .returning(|_| Ok(None));
                m.chans
                    .expect_delete()
                    .with(eq(new_ch()))
                    .times(1)
                    .returning(|_| Ok(()));
            } else {
                m.chans.expect_delete().never();
            }
            let svc = m.service();
            let err = block_on(svc.start_voice(&conn("c-alice"), &chat())).unwrap_err();
            assert_dependency(&case, &err, port, retryable);
            drop(svc); // verifies every expectation
        }
    }
}

#[test]
fn start_voice_reports_a_full_channel_quota_as_not_retryable() {
    let mut m = Mocks::default();
    m.dir
        .expect_user_of()
        .returning(|_| Ok(Some(user("alice"))));
    m.dir.expect_membership().returning(|_, _| Ok(approved()));
    m.store.expect_active_in_chat_room().returning(|_| Ok(None));
    m.chans
        .expect_create()
        .times(1)
        .returning(|_, _| Err(ChannelError::LimitExceeded));
    m.store.expect_create_if_none_active().never();
    m.chans.expect_delete().never();
    m.no_publish();
    let err = block_on(m.service().start_voice(&conn("c-alice"), &chat())).unwrap_err();
    assert_dependency("quota", &err, PortName::Channels, false);
}

#[test]
fn start_voice_keeps_the_original_error_when_the_clean_up_fails_too() {
    let (mut m, _) = start_script(Some((4, true)));
    m.store.expect_get().times(1).returning(|_| Ok(None));
    m.chans
        .expect_delete()
        .with(eq(new_ch()))
        .times(1)
        .returning(|_| Err(chan_err(false)));
    let err = block_on(m.service().start_voice(&conn("c-alice"), &chat())).unwrap_err();
    assert_dependency("clean-up failed", &err, PortName::Store, true);
}

#[test]
fn start_voice_whose_failed_create_landed_after_all_succeeds_and_keeps_the_channel() {
    let mut m = Mocks::default();
    m.dir
        .expect_user_of()
        .returning(|_| Ok(Some(user("alice"))));
    m.dir.expect_membership().returning(|_, _| Ok(approved()));
    m.store.expect_active_in_chat_room().returning(|_| Ok(None));
    m.chans
        .expect_create()
        .times(1)
        .returning(|name, _| Ok(chan_named(name)));
    let stored = Arc::new(Mutex::new(None));
    let keep = stored.clone();
    m.store
        .expect_create_if_none_active()
        .times(1)
        .returning(move |room| {
            *keep.lock().unwrap() = Some(room.clone());
            Err(store_err(true)) // the write landed, the answer timed out
        });
    m.store
        .expect_get()
        .with(eq(vr_new()))
        .times(1)
        .returning(move |_| Ok(stored.lock().unwrap().clone()));
    m.chans.expect_delete().never();
    let sent = m.publish_to(&["c-bob"], 2);
    let room = block_on(m.service().start_voice(&conn("c-alice"), &chat())).unwrap();
    assert_eq!(room.participants()[0].channel, new_ch());
    assert_eq!(sent.events_to("c-bob").len(), 2);
}

#[test]
fn start_voice_that_cannot_tell_whether_the_room_was_stored_leaves_the_channel_to_the_sweep() {
    let (mut m, _) = start_script(Some((4, true)));
    m.store
        .expect_get()
        .times(1)
        .returning(|_| Err(store_err(true)));
    // Deleting it could leave a stored master without its channel; an orphan is swept later.
    m.chans.expect_delete().never();
    let err = block_on(m.service().start_voice(&conn("c-alice"), &chat())).unwrap_err();
    assert_dependency("unknown", &err, PortName::Store, true);
}

#[test]
fn start_voice_in_a_chat_room_with_an_active_room_names_it_and_creates_nothing() {
    let mut m = Mocks::default();
    m.dir
        .expect_user_of()
        .returning(|_| Ok(Some(user("alice"))));
    m.dir.expect_membership().returning(|_, _| Ok(approved()));
    m.store
        .expect_active_in_chat_room()
        .times(1)
        .returning(|_| Ok(Some(room(&["bob"]))));
    m.chans.expect_create().never();
    m.store.expect_create_if_none_active().never();
    m.no_publish();
    let err = block_on(m.service().start_voice(&conn("c-alice"), &chat())).unwrap_err();
    assert_eq!(
        err,
        StartVoiceError::AlreadyActive {
            voice_room_id: vr()
        }
    );
    assert_eq!(err.code(), "ALREADY_ACTIVE");
    assert!(!err.retryable());
}

#[test]
fn start_voice_losing_the_race_deletes_its_channel_and_names_the_winner() {
    let mut m = Mocks::default();
    m.dir
        .expect_user_of()
        .returning(|_| Ok(Some(user("alice"))));
    m.dir.expect_membership().returning(|_, _| Ok(approved()));
    m.store.expect_active_in_chat_room().returning(|_| Ok(None));
    m.chans
        .expect_create()
        .times(1)
        .returning(|name, _| Ok(chan_named(name)));
    m.store
        .expect_create_if_none_active()
        .times(1)
        .returning(|_| {
            Err(StoreError::AlreadyActive {
                existing: VoiceRoomId::parse("vr-winner").unwrap(),
            })
        });
    m.store.expect_get().never();
    m.chans
        .expect_delete()
        .with(eq(new_ch()))
        .times(1)
        .returning(|_| Ok(()));
    m.no_publish();
    let err = block_on(m.service().start_voice(&conn("c-alice"), &chat())).unwrap_err();
    assert_eq!(
        err,
        StartVoiceError::AlreadyActive {
            voice_room_id: VoiceRoomId::parse("vr-winner").unwrap()
        }
    );
    assert_eq!(err.code(), "ALREADY_ACTIVE");
    assert!(!err.retryable());
}

/// The gate's refusals, and the membership answer that causes each.
fn refusals() -> Vec<(Option<Option<Membership>>, &'static str)> {
    let state = |state| {
        Some(Some(Membership {
            state,
            is_admin: false,
        }))
    };
    vec![
        (None, "NOT_IDENTIFIED"),
        (Some(None), "CHAT_ROOM_NOT_FOUND"),
        (state(MemberState::None), "NOT_MEMBER"),
        (state(MemberState::Pending), "NOT_APPROVED"),
    ]
}

/// `user_of` and `membership` answering for `who` so that the gate says `membership`
/// (`None`: the connection is unknown).
fn gate(m: &mut Mocks, who: &'static str, membership: Option<Option<Membership>>) {
    let identified = membership.is_some();
    m.dir
        .expect_user_of()
        .times(1)
        .returning(move |_| Ok(identified.then(|| user(who))));
    match membership {
        Some(ms) => {
            m.dir
                .expect_membership()
                .with(eq(chat()), eq(user(who)))
                .times(1)
                .returning(move |_, _| Ok(ms));
        }
        None => {
            m.dir.expect_membership().never();
        }
    }
}

#[test]
fn start_voice_refuses_outsiders_before_creating_anything() {
    for (membership, code) in refusals() {
        let mut m = Mocks::default();
        gate(&mut m, "alice", membership);
        m.store.expect_active_in_chat_room().never();
        m.chans.expect_create().never();
        m.store.expect_create_if_none_active().never();
        m.no_publish();
        let svc = m.service();
        let err = block_on(svc.start_voice(&conn("c-alice"), &chat())).unwrap_err();
        assert_eq!(err.code(), code);
        assert!(matches!(err, StartVoiceError::Access(_)), "{code}: {err:?}");
        assert!(!err.retryable(), "{code}");
        drop(svc);
    }
}

#[test]
fn the_chat_admin_passes_the_gate_even_while_its_own_state_says_pending() {
    let mut m = Mocks::default();
    gate(
        &mut m,
        "alice",
        Some(Some(Membership {
            state: MemberState::Pending,
            is_admin: true,
        })),
    );
    m.store
        .expect_active_in_chat_room()
        .times(1)
        .returning(|_| Ok(None));
    let svc = m.service();
    assert_eq!(
        block_on(svc.active_voice(&conn("c-alice"), &chat())).unwrap(),
        None
    );
}

// ---------------------------------------------------------------------------------------------
// join_voice
// ---------------------------------------------------------------------------------------------

fn client_id(c: &str) -> ClientId {
    ClientId::from_connection(&conn(c)).unwrap()
}

/// bob (c-bob) joins vr-1 = [alice, carol]. Steps: 0 user_of, 1 store.get, 2 membership,
/// 3 channels.create, 4 endpoints(own, master), 5 endpoints(alice, viewer), 6 endpoints(carol,
/// viewer), 7 credentials.issue, 8 store.update.
fn join_script(fail: Fail) -> Mocks {
    let mut m = Mocks::default();
    m.dir
        .expect_user_of()
        .with(eq(conn("c-bob")))
        .times(1)
        .returning(move |_| match fails(fail, 0) {
            Some(r) => Err(dir_err(r)),
            None => Ok(Some(user("bob"))),
        });
    // Step 1 runs together with step 0 (the caller and the room are read at once).
    m.store
        .expect_get()
        .with(eq(vr()))
        .times(1)
        .returning(move |_| match fails(fail, 1) {
            Some(r) => Err(store_err(r)),
            None => Ok(Some(room(&["alice", "carol"]))),
        });
    if reaches(fail, 2) {
        m.dir
            .expect_membership()
            .with(eq(chat()), eq(user("bob")))
            .times(1)
            .returning(move |_, _| match fails(fail, 2) {
                Some(r) => Err(dir_err(r)),
                None => Ok(approved()),
            });
    }
    if reaches(fail, 3) {
        m.chans
            .expect_create()
            .withf(|name, tags| {
                name == &new_ch().name
                    && tags
                        == &ChannelTags {
                            chat_room: chat(),
                            voice_room: vr(),
                            owner: user("bob"),
                        }
            })
            .times(1)
            .returning(move |name, _| match fails(fail, 3) {
                Some(r) => Err(chan_err(r)),
                None => Ok(chan_named(name)),
            });
    } else {
        m.chans.expect_create().never();
    }
    for (i, (channel, role)) in [
        (new_ch(), ChannelRole::Master),
        (ch("alice"), ChannelRole::Viewer),
        (ch("carol"), ChannelRole::Viewer),
    ]
    .into_iter()
    .enumerate()
    {
        let step = 4 + i;
        if reaches(fail, step) {
            m.chans
                .expect_endpoints()
                .with(eq(channel), eq(role), eq(client_id("c-bob")))
                .times(1)
                .returning(move |_, _, _| match fails(fail, step) {
                    Some(r) => Err(chan_err(r)),
                    None => Ok(endpoints()),
                });
        }
    }
    if reaches(fail, 7) {
        m.creds
            .expect_issue()
            .withf(|req| {
                req.voice_room == vr()
                    && req.user == user("bob")
                    && req.connection == conn("c-bob")
                    && req.client_id == client_id("c-bob")
                    && req.ttl == Duration::from_secs(3600)
                    && req.grants
                        == vec![
                            ChannelGrant {
                                channel: new_ch().arn,
                                role: ChannelRole::Master,
                            },
                            ChannelGrant {
                                channel: ch("alice").arn,
                                role: ChannelRole::Viewer,
                            },
                            ChannelGrant {
                                channel: ch("carol").arn,
                                role: ChannelRole::Viewer,
                            },
                        ]
            })
            .times(1)
            .returning(move |_| match fails(fail, 7) {
                Some(r) => Err(cred_err(r)),
                None => Ok(issued()),
            });
    }
    if reaches(fail, 8) {
        m.store
            .expect_update()
            .withf(|r| {
                r.version() == 3
                    && r.participants().len() == 3
                    && r.participants()[2].user == user("bob")
                    && r.participants()[2].channel == new_ch()
            })
            .times(1)
            .returning(move |_| match fails(fail, 8) {
                Some(r) => Err(store_err(r)),
                None => Ok(()),
            });
    } else {
        m.store.expect_update().never();
    }
    m
}

#[test]
fn join_voice_adds_the_caller_with_its_mesh_plan_and_scoped_credentials() {
    let mut m = join_script(None);
    m.chans.expect_delete().never();
    let sent = m.publish_to(&["c-alice", "c-carol"], 1);
    let grant = block_on(m.service().join_voice(&conn("c-bob"), &vr())).unwrap();
    assert!(grant.newly_joined);
    assert_eq!(grant.user, user("bob"));
    assert_eq!(grant.client_id, client_id("c-bob"));
    assert_eq!(grant.own.channel, new_ch());
    assert_eq!(grant.own.role, ChannelRole::Master);
    assert_eq!(grant.own.endpoints, endpoints());
    let peers: Vec<_> = grant
        .peers
        .iter()
        .map(|p| (p.user.as_str(), p.access.channel.clone(), p.access.role))
        .collect();
    assert_eq!(
        peers,
        vec![
            ("alice", ch("alice"), ChannelRole::Viewer),
            ("carol", ch("carol"), ChannelRole::Viewer),
        ]
    );
    assert_eq!(grant.credentials, issued());
    assert_eq!(grant.room.version(), 3);
    assert_eq!(
        sent.events_to("c-alice"),
        vec![VoiceEvent::ParticipantJoined {
            voice_room_id: vr(),
            chat_room_id: chat(),
            user: user("bob"),
            client_id: Some(voice_domain::ClientId::parse("c-bob").unwrap()),
            muted: false,
        }]
    );
}

#[test]
fn join_voice_fails_cleanly_at_each_step() {
    let steps = [
        (0, PortName::Directory),
        (1, PortName::Store),
        (2, PortName::Directory),
        (3, PortName::Channels),
        (4, PortName::Channels),
        (5, PortName::Channels),
        (6, PortName::Channels),
        (7, PortName::Credentials),
        (8, PortName::Store),
    ];
    for (step, port) in steps {
        for retryable in [true, false] {
            let case = format!("join_voice step {step} retryable {retryable}");
            let mut m = join_script(Some((step, retryable)));
            if step == 8 {
                // Read back: the join is not stored.
                m.store
                    .expect_get()
                    .with(eq(vr()))
                    .times(1)
                    .returning(|_| Ok(Some(room(&["alice", "carol"]))));
            }
            if step >= 4 {
                // A channel was created before the failure: deleted, once, and never recorded
                // (the script expects `update` only at step 8).
                m.chans
                    .expect_delete()
                    .with(eq(new_ch()))
                    .times(1)
                    .returning(|_| Ok(()));
            } else {
                m.chans.expect_delete().never();
            }
            m.no_publish();
            let svc = m.service();
            let err = block_on(svc.join_voice(&conn("c-bob"), &vr())).unwrap_err();
            assert_dependency(&case, &err, port, retryable);
            drop(svc);
        }
    }
}

#[test]
fn join_voice_whose_failed_update_landed_after_all_succeeds_and_keeps_the_channel() {
    let mut m = join_script(Some((8, true)));
    m.store.expect_get().with(eq(vr())).times(1).returning(|_| {
        let mut r = room(&["alice", "carol"]);
        r.join(
            user("bob"),
            conn("c-bob"),
            new_ch(),
            Timestamp::from_millis(NOW_MS),
        )
        .unwrap();
        r.bump_version();
        Ok(Some(r))
    });
    m.chans.expect_delete().never();
    m.publish_to(&["c-alice"], 1);
    let grant = block_on(m.service().join_voice(&conn("c-bob"), &vr())).unwrap();
    assert!(grant.newly_joined);
    assert_eq!(grant.own.channel, new_ch());
}

#[test]
fn join_voice_that_cannot_tell_whether_the_join_was_stored_leaves_the_channel_to_the_sweep() {
    let mut m = join_script(Some((8, true)));
    m.store
        .expect_get()
        .with(eq(vr()))
        .times(1)
        .returning(|_| Err(store_err(true)));
    m.chans.expect_delete().never();
    m.no_publish();
    let err = block_on(m.service().join_voice(&conn("c-bob"), &vr())).unwrap_err();
    assert_dependency("unknown", &err, PortName::Store, true);
}

/// Expectations for bob joining whatever room `get` returns, with `update` scripted by the
/// caller; endpoints and credentials always succeed.
fn join_basics(m: &mut Mocks) {
    m.dir.expect_user_of().returning(|_| Ok(Some(user("bob"))));
    m.dir.expect_membership().returning(|_, _| Ok(approved()));
    m.chans
        .expect_endpoints()
        .returning(|_, _, _| Ok(endpoints()));
    m.creds.expect_issue().returning(|_| Ok(issued()));
}

#[test]
fn join_voice_retries_after_a_concurrent_change_with_the_same_channel() {
    let mut m = Mocks::default();
    join_basics(&mut m);
    // First read: [alice]. After the conflict: carol joined meanwhile.
    m.store
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(room(&["alice"]))));
    m.store
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(room(&["alice", "carol"]))));
    m.chans
        .expect_create()
        .times(1)
        .returning(|name, _| Ok(chan_named(name)));
    m.store
        .expect_update()
        .withf(|r| r.version() == 2)
        .times(1)
        .returning(|_| Err(StoreError::VersionConflict));
    m.store
        .expect_update()
        .withf(|r| {
            r.version() == 3
                && r.participants()
                    .iter()
                    .map(|p| p.user.as_str())
                    .collect::<Vec<_>>()
                    == ["alice", "carol", "bob"]
                && r.participants()[2].channel == new_ch()
        })
        .times(1)
        .returning(|_| Ok(()));
    m.chans.expect_delete().never();
    m.publish_to(&["c-alice"], 1);
    let grant = block_on(m.service().join_voice(&conn("c-bob"), &vr())).unwrap();
    assert_eq!(grant.own.channel, new_ch());
    assert_eq!(
        grant.peers.len(),
        2,
        "the retry plans against the fresh room"
    );
}

#[test]
fn join_voice_that_loses_to_its_own_other_tab_deletes_the_spare_channel() {
    let mut m = Mocks::default();
    join_basics(&mut m);
    m.store
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(room(&["alice"]))));
    // Meanwhile bob joined from c-bob-2 with its own channel.
    m.store.expect_get().times(1).returning(|_| {
        let mut r = room(&["alice"]);
        r.join(
            user("bob"),
            conn("c-bob-2"),
            ch("bob-2"),
            Timestamp::from_millis(NOW_MS),
        )
        .unwrap();
        r.bump_version();
        Ok(Some(r))
    });
    m.chans
        .expect_create()
        .times(1)
        .returning(|name, _| Ok(chan_named(name)));
    m.store
        .expect_update()
        .times(1)
        .returning(|_| Err(StoreError::VersionConflict));
    m.store
        .expect_update()
        .withf(|r| {
            r.participant(&user("bob"))
                .is_some_and(|p| p.channel == ch("bob-2") && p.connection == conn("c-bob"))
        })
        .times(1)
        .returning(|_| Ok(()));
    m.chans
        .expect_delete()
        .with(eq(new_ch()))
        .times(1)
        .returning(|_| Ok(()));
    // The move from c-bob-2 to c-bob is a resume, announced to the chat room.
    let sent = m.publish_to(&["c-alice"], 1);
    let grant = block_on(m.service().join_voice(&conn("c-bob"), &vr())).unwrap();
    assert_eq!(grant.own.channel, ch("bob-2"));
    assert!(!grant.newly_joined);
    assert_eq!(
        sent.events_to("c-alice"),
        vec![VoiceEvent::ParticipantResumed {
            voice_room_id: vr(),
            chat_room_id: chat(),
            user: user("bob"),
            client_id: Some(voice_domain::ClientId::parse("c-bob").unwrap()),
        }]
    );
}

#[test]
fn join_voice_gives_up_after_the_configured_retries_and_says_retry() {
    let mut m = Mocks::default();
    join_basics(&mut m);
    // One read, then one after each of the three conflicts.
    m.store
        .expect_get()
        .times(4)
        .returning(|_| Ok(Some(room(&["alice"]))));
    m.chans
        .expect_create()
        .times(1)
        .returning(|name, _| Ok(chan_named(name)));
    m.store
        .expect_update()
        .times(3)
        .returning(|_| Err(StoreError::VersionConflict));
    m.chans
        .expect_delete()
        .with(eq(new_ch()))
        .times(1)
        .returning(|_| Ok(()));
    m.no_publish();
    let svc = m.service_with(ServiceConfig {
        cas_retries: 2,
        ..ServiceConfig::default()
    });
    let err = block_on(svc.join_voice(&conn("c-bob"), &vr())).unwrap_err();
    assert_dependency("conflicts", &err, PortName::Store, true);
}

#[test]
fn join_voice_refresh_issues_credentials_without_writing_or_announcing() {
    let mut m = Mocks::default();
    m.dir.expect_user_of().returning(|_| Ok(Some(user("bob"))));
    m.dir.expect_membership().returning(|_, _| Ok(approved()));
    m.store
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(room(&["alice", "bob"]))));
    m.chans.expect_create().never();
    m.chans
        .expect_endpoints()
        .times(2)
        .returning(|_, _, _| Ok(endpoints()));
    m.creds
        .expect_issue()
        .withf(|req| {
            req.grants
                == vec![
                    ChannelGrant {
                        channel: ch("bob").arn,
                        role: ChannelRole::Master,
                    },
                    ChannelGrant {
                        channel: ch("alice").arn,
                        role: ChannelRole::Viewer,
                    },
                ]
        })
        .times(1)
        .returning(|_| Ok(issued()));
    m.store.expect_update().never();
    m.chans.expect_delete().never();
    m.no_publish();
    let grant = block_on(m.service().join_voice(&conn("c-bob"), &vr())).unwrap();
    assert!(!grant.newly_joined);
    assert_eq!(grant.own.channel, ch("bob"));
}

#[test]
fn join_voice_refusals_come_before_any_channel() {
    // The room's state refuses.
    let full = room_of("vr-1", 2, &["alice", "carol"]);
    let cases: Vec<(Option<VoiceRoom>, &str)> = vec![
        (None, "VOICE_ROOM_NOT_FOUND"),
        (Some(ended(room(&["alice"]))), "VOICE_ROOM_ENDED"),
        (Some(full), "ROOM_FULL"),
    ];
    for (stored, code) in cases {
        let mut m = Mocks::default();
        m.dir.expect_user_of().returning(|_| Ok(Some(user("bob"))));
        m.dir.expect_membership().returning(|_, _| Ok(approved()));
        m.store
            .expect_get()
            .times(1)
            .returning(move |_| Ok(stored.clone()));
        m.chans.expect_create().never();
        m.chans.expect_endpoints().never();
        m.creds.expect_issue().never();
        m.store.expect_update().never();
        m.no_publish();
        let svc = m.service();
        let err = block_on(svc.join_voice(&conn("c-bob"), &vr())).unwrap_err();
        assert_eq!(err.code(), code);
        assert!(!err.retryable(), "{code}");
        drop(svc);
    }
    // The gate refuses.
    for (membership, code) in refusals() {
        let mut m = Mocks::default();
        gate(&mut m, "bob", membership);
        // The room is read together with the caller, even one that is not identified.
        m.store
            .expect_get()
            .times(1)
            .returning(|_| Ok(Some(room(&["alice"]))));
        m.chans.expect_create().never();
        m.creds.expect_issue().never();
        m.store.expect_update().never();
        m.no_publish();
        let svc = m.service();
        let err = block_on(svc.join_voice(&conn("c-bob"), &vr())).unwrap_err();
        assert_eq!(err.code(), code);
        assert!(matches!(err, JoinVoiceError::Access(_)), "{code}");
        drop(svc);
    }
}

// ---------------------------------------------------------------------------------------------
// leave_voice
// ---------------------------------------------------------------------------------------------

/// alice (master) leaves vr-1 = [alice, bob, carol]. Steps: 0 user_of, 1 get, 2 update;
/// then channel `voice-alice` is deleted and two events go out.
fn leave_script(fail: Fail) -> Mocks {
    let mut m = Mocks::default();
    m.dir
        .expect_user_of()
        .with(eq(conn("c-alice")))
        .times(1)
        .returning(move |_| match fails(fail, 0) {
            Some(r) => Err(dir_err(r)),
            None => Ok(Some(user("alice"))),
        });
    if reaches(fail, 1) {
        m.store
            .expect_get()
            .with(eq(vr()))
            .times(1)
            .returning(move |_| match fails(fail, 1) {
                Some(r) => Err(store_err(r)),
                None => Ok(Some(room(&["alice", "bob", "carol"]))),
            });
    }
    if reaches(fail, 2) {
        m.store
            .expect_update()
            .withf(|r| {
                r.version() == 4
                    && r.master() == &user("bob")
                    && r.participants()
                        .iter()
                        .map(|p| p.user.as_str())
                        .collect::<Vec<_>>()
                        == ["bob", "carol"]
            })
            .times(1)
            .returning(move |_| match fails(fail, 2) {
                Some(r) => Err(store_err(r)),
                None => Ok(()),
            });
    } else {
        m.store.expect_update().never();
    }
    m
}

#[test]
fn leave_voice_hands_over_deletes_the_channel_and_announces() {
    let mut m = leave_script(None);
    m.chans
        .expect_delete()
        .with(eq(ch("alice")))
        .times(1)
        .returning(|_| Ok(()));
    let sent = m.publish_to(&["c-bob"], 2);
    let room = block_on(m.service().leave_voice(&conn("c-alice"), &vr())).unwrap();
    assert_eq!(room.master(), &user("bob"));
    assert_eq!(
        sent.events_to("c-bob"),
        vec![
            VoiceEvent::ParticipantLeft {
                voice_room_id: vr(),
                chat_room_id: chat(),
                user: user("alice"),
                reason: LeaveReason::Left,
            },
            VoiceEvent::MasterChanged {
                voice_room_id: vr(),
                chat_room_id: chat(),
                master: user("bob"),
            },
        ]
    );
}

#[test]
fn leave_voice_fails_cleanly_at_each_step() {
    for (step, port) in [
        (0, PortName::Directory),
        (1, PortName::Store),
        (2, PortName::Store),
    ] {
        for retryable in [true, false] {
            let case = format!("leave_voice step {step} retryable {retryable}");
            let mut m = leave_script(Some((step, retryable)));
            if step == 2 {
                // Read back: not stored, so nothing was released.
                m.store
                    .expect_get()
                    .times(1)
                    .returning(|_| Ok(Some(room(&["alice", "bob", "carol"]))));
            }
            m.chans.expect_delete().never();
            m.no_publish();
            let svc = m.service();
            let err = block_on(svc.leave_voice(&conn("c-alice"), &vr())).unwrap_err();
            assert_dependency(&case, &err, port, retryable);
            drop(svc);
        }
    }
}

#[test]
fn leave_voice_succeeds_when_only_the_channel_delete_or_the_notifications_fail() {
    let mut m = leave_script(None);
    m.chans
        .expect_delete()
        .with(eq(ch("alice")))
        .times(1)
        .returning(|_| Err(chan_err(true)));
    m.dir
        .expect_connections_of()
        .times(2)
        .returning(|_| Err(dir_err(true)));
    m.notify.expect_send().never();
    let room = block_on(m.service().leave_voice(&conn("c-alice"), &vr())).unwrap();
    assert_eq!(room.participants().len(), 2);
}

#[test]
fn leave_voice_whose_failed_update_landed_after_all_cleans_up_and_succeeds() {
    let mut m = leave_script(Some((2, true)));
    m.store.expect_get().times(1).returning(|_| {
        let mut r = room(&["alice", "bob", "carol"]);
        r.leave(
            &user("alice"),
            LeaveReason::Left,
            Timestamp::from_millis(NOW_MS),
        )
        .unwrap();
        r.bump_version();
        Ok(Some(r))
    });
    m.chans
        .expect_delete()
        .with(eq(ch("alice")))
        .times(1)
        .returning(|_| Ok(()));
    m.publish_to(&["c-bob"], 2);
    let room = block_on(m.service().leave_voice(&conn("c-alice"), &vr())).unwrap();
    assert_eq!(room.master(), &user("bob"));
}

#[test]
fn leave_voice_retries_a_concurrent_change_and_hands_over_by_the_fresh_order() {
    let mut m = Mocks::default();
    m.dir
        .expect_user_of()
        .returning(|_| Ok(Some(user("alice"))));
    m.store
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(room(&["alice", "bob", "carol"]))));
    // Meanwhile bob left: carol is next in line.
    m.store.expect_get().times(1).returning(|_| {
        let mut r = room(&["alice", "bob", "carol"]);
        r.leave(
            &user("bob"),
            LeaveReason::Left,
            Timestamp::from_millis(NOW_MS),
        )
        .unwrap();
        r.bump_version();
        Ok(Some(r))
    });
    m.store
        .expect_update()
        .times(1)
        .returning(|_| Err(StoreError::VersionConflict));
    m.store
        .expect_update()
        .withf(|r| r.master() == &user("carol") && r.version() == 5)
        .times(1)
        .returning(|_| Ok(()));
    m.chans
        .expect_delete()
        .with(eq(ch("alice")))
        .times(1)
        .returning(|_| Ok(()));
    m.publish_to(&["c-carol"], 2);
    let room = block_on(m.service().leave_voice(&conn("c-alice"), &vr())).unwrap();
    assert_eq!(room.master(), &user("carol"));
}

#[test]
fn the_last_one_to_leave_ends_the_room() {
    let mut m = Mocks::default();
    m.dir
        .expect_user_of()
        .returning(|_| Ok(Some(user("alice"))));
    m.store
        .expect_get()
        .returning(|_| Ok(Some(room(&["alice"]))));
    m.store
        .expect_update()
        .withf(|r| {
            !r.is_active()
                && r.participants().is_empty()
                && matches!(
                    r.status(),
                    RoomStatus::Ended {
                        reason: EndReason::LastParticipantLeft,
                        ..
                    }
                )
        })
        .times(1)
        .returning(|_| Ok(()));
    m.chans
        .expect_delete()
        .with(eq(ch("alice")))
        .times(1)
        .returning(|_| Ok(()));
    let sent = m.publish_to(&["c-bob"], 2);
    block_on(m.service().leave_voice(&conn("c-alice"), &vr())).unwrap();
    assert!(matches!(
        sent.events_to("c-bob")[1],
        VoiceEvent::VoiceEnded {
            reason: EndReason::LastParticipantLeft,
            ..
        }
    ));
}

/// The participant-only use cases' refusals: (who calls, what `get` returns, code).
fn participant_refusals() -> Vec<(Option<&'static str>, Option<VoiceRoom>, &'static str)> {
    vec![
        (None, None, "NOT_IDENTIFIED"),
        (Some("alice"), None, "VOICE_ROOM_NOT_FOUND"),
        (
            Some("alice"),
            Some(ended(room(&["alice"]))),
            "VOICE_ROOM_ENDED",
        ),
    ]
}

#[test]
fn leave_voice_refusals_change_nothing() {
    let mut cases = participant_refusals();
    cases.push((
        Some("dave"),
        Some(room(&["alice", "bob"])),
        "NOT_PARTICIPANT",
    ));
    for (who, stored, code) in cases {
        let mut m = Mocks::default();
        m.dir
            .expect_user_of()
            .times(1)
            .returning(move |_| Ok(who.map(user)));
        if who.is_some() {
            m.store
                .expect_get()
                .times(1)
                .returning(move |_| Ok(stored.clone()));
        }
        m.store.expect_update().never();
        m.chans.expect_delete().never();
        m.no_publish();
        let svc = m.service();
        let err = block_on(svc.leave_voice(&conn("c-x"), &vr())).unwrap_err();
        assert_eq!(err.code(), code);
        assert!(!err.retryable(), "{code}");
        drop(svc);
    }
}

// ---------------------------------------------------------------------------------------------
// set_mute
// ---------------------------------------------------------------------------------------------

/// bob mutes in vr-1 = [alice, bob]. Steps: 0 user_of, 1 get, 2 update; one event.
fn mute_script(fail: Fail) -> Mocks {
    let mut m = Mocks::default();
    m.dir
        .expect_user_of()
        .with(eq(conn("c-bob")))
        .times(1)
        .returning(move |_| match fails(fail, 0) {
            Some(r) => Err(dir_err(r)),
            None => Ok(Some(user("bob"))),
        });
    if reaches(fail, 1) {
        m.store
            .expect_get()
            .with(eq(vr()))
            .times(1)
            .returning(move |_| match fails(fail, 1) {
                Some(r) => Err(store_err(r)),
                None => Ok(Some(room(&["alice", "bob"]))),
            });
    }
    if reaches(fail, 2) {
        m.store
            .expect_update()
            .withf(|r| r.version() == 3 && r.participant(&user("bob")).is_some_and(|p| p.muted))
            .times(1)
            .returning(move |_| match fails(fail, 2) {
                Some(r) => Err(store_err(r)),
                None => Ok(()),
            });
    } else {
        m.store.expect_update().never();
    }
    m
}

#[test]
fn set_mute_records_and_announces() {
    let mut m = mute_script(None);
    let sent = m.publish_to(&["c-alice"], 1);
    let room = block_on(m.service().set_mute(&conn("c-bob"), &vr(), true)).unwrap();
    assert!(room.participant(&user("bob")).unwrap().muted);
    assert_eq!(
        sent.events_to("c-alice"),
        vec![VoiceEvent::MuteChanged {
            voice_room_id: vr(),
            chat_room_id: chat(),
            user: user("bob"),
            muted: true,
            server_muted: false,
        }]
    );
}

#[test]
fn set_mute_fails_cleanly_at_each_step() {
    for (step, port) in [
        (0, PortName::Directory),
        (1, PortName::Store),
        (2, PortName::Store),
    ] {
        for retryable in [true, false] {
            let case = format!("set_mute step {step} retryable {retryable}");
            let mut m = mute_script(Some((step, retryable)));
            if step == 2 {
                m.store
                    .expect_get()
                    .times(1)
                    .returning(|_| Ok(Some(room(&["alice", "bob"]))));
            }
            m.no_publish();
            let svc = m.service();
            let err = block_on(svc.set_mute(&conn("c-bob"), &vr(), true)).unwrap_err();
            assert_dependency(&case, &err, port, retryable);
            drop(svc);
        }
    }
}

#[test]
fn set_mute_to_the_current_state_writes_and_announces_nothing() {
    let mut m = Mocks::default();
    m.dir.expect_user_of().returning(|_| Ok(Some(user("bob"))));
    m.store
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(room(&["alice", "bob"]))));
    m.store.expect_update().never();
    m.no_publish();
    let room = block_on(m.service().set_mute(&conn("c-bob"), &vr(), false)).unwrap();
    assert_eq!(room.version(), 2);
}

#[test]
fn set_mute_refusals_change_nothing() {
    let mut cases = participant_refusals();
    cases.push((
        Some("dave"),
        Some(room(&["alice", "bob"])),
        "NOT_PARTICIPANT",
    ));
    for (who, stored, code) in cases {
        let mut m = Mocks::default();
        m.dir
            .expect_user_of()
            .times(1)
            .returning(move |_| Ok(who.map(user)));
        if who.is_some() {
            m.store
                .expect_get()
                .times(1)
                .returning(move |_| Ok(stored.clone()));
        }
        m.store.expect_update().never();
        m.no_publish();
        let svc = m.service();
        let err = block_on(svc.set_mute(&conn("c-x"), &vr(), true)).unwrap_err();
        assert_eq!(err.code(), code);
        drop(svc);
    }
}

// ---------------------------------------------------------------------------------------------
// end_voice
// ---------------------------------------------------------------------------------------------

/// `who` ends vr-1 = [alice, bob] (alice master). Steps: 0 user_of, 1 get, 2 membership,
/// 3 get (compare-and-set read), 4 update; then both channels are deleted and one event goes out.
fn end_script(who: &'static str, membership: Option<Membership>, fail: Fail) -> Mocks {
    let mut m = Mocks::default();
    m.dir
        .expect_user_of()
        .times(1)
        .returning(move |_| match fails(fail, 0) {
            Some(r) => Err(dir_err(r)),
            None => Ok(Some(user(who))),
        });
    for step in [1, 3] {
        // Step 1 runs together with step 0 (the caller and the room are read at once).
        if step == 1 || reaches(fail, step) {
            m.store
                .expect_get()
                .with(eq(vr()))
                .times(1)
                .returning(move |_| match fails(fail, step) {
                    Some(r) => Err(store_err(r)),
                    None => Ok(Some(room(&["alice", "bob"]))),
                });
        }
    }
    if reaches(fail, 2) {
        m.dir
            .expect_membership()
            .with(eq(chat()), eq(user(who)))
            .times(1)
            .returning(move |_, _| match fails(fail, 2) {
                Some(r) => Err(dir_err(r)),
                None => Ok(membership),
            });
    }
    m
}

fn expect_ended_update(m: &mut Mocks, reason: EndReason, fail: Option<bool>) {
    m.store
        .expect_update()
        .withf(move |r| {
            r.version() == 3
                && r.participants().is_empty()
                && matches!(r.status(), RoomStatus::Ended { reason: got, .. } if got == &reason)
        })
        .times(1)
        .returning(move |_| match fail {
            Some(r) => Err(store_err(r)),
            None => Ok(()),
        });
}

#[test]
fn end_voice_by_the_master_deletes_every_channel_and_announces() {
    let mut m = end_script("alice", approved(), None);
    expect_ended_update(&mut m, EndReason::EndedByMaster { by: user("alice") }, None);
    for who in ["alice", "bob"] {
        m.chans
            .expect_delete()
            .with(eq(ch(who)))
            .times(1)
            .returning(|_| Ok(()));
    }
    let sent = m.publish_to(&["c-alice", "c-bob"], 1);
    let room = block_on(m.service().end_voice(&conn("c-alice"), &vr())).unwrap();
    assert!(!room.is_active());
    assert_eq!(
        sent.events_to("c-bob"),
        vec![VoiceEvent::VoiceEnded {
            voice_room_id: vr(),
            chat_room_id: chat(),
            reason: EndReason::EndedByMaster { by: user("alice") },
        }]
    );
}

#[test]
fn end_voice_by_the_chat_admin_who_is_not_in_the_room() {
    let mut m = end_script("dave", as_admin(), None);
    expect_ended_update(&mut m, EndReason::EndedByAdmin { by: user("dave") }, None);
    m.chans.expect_delete().times(2).returning(|_| Ok(()));
    m.publish_to(&["c-alice"], 1);
    block_on(m.service().end_voice(&conn("c-dave"), &vr())).unwrap();
}

#[test]
fn end_voice_by_a_master_whose_chat_room_is_gone_still_works() {
    // The membership lookup says "no such chat room": the master may still close its room.
    let mut m = end_script("alice", None, None);
    expect_ended_update(&mut m, EndReason::EndedByMaster { by: user("alice") }, None);
    m.chans.expect_delete().times(2).returning(|_| Ok(()));
    m.publish_to(&[], 1);
    block_on(m.service().end_voice(&conn("c-alice"), &vr())).unwrap();
}

#[test]
fn end_voice_by_anyone_else_is_refused_and_changes_nothing() {
    for membership in [approved(), None] {
        let mut m = end_script("bob", membership, None);
        m.store.expect_update().never();
        m.chans.expect_delete().never();
        m.no_publish();
        let svc = m.service();
        let err = block_on(svc.end_voice(&conn("c-bob"), &vr())).unwrap_err();
        assert_eq!(err, EndVoiceError::NotAllowed);
        assert_eq!(err.code(), "NOT_ALLOWED");
        assert!(!err.retryable());
        drop(svc);
    }
}

#[test]
fn end_voice_fails_cleanly_at_each_step() {
    for (step, port) in [
        (0, PortName::Directory),
        (1, PortName::Store),
        (2, PortName::Directory),
        (3, PortName::Store),
        (4, PortName::Store),
    ] {
        for retryable in [true, false] {
            let case = format!("end_voice step {step} retryable {retryable}");
            let mut m = end_script("alice", approved(), Some((step, retryable)));
            if step == 4 {
                expect_ended_update(
                    &mut m,
                    EndReason::EndedByMaster { by: user("alice") },
                    Some(retryable),
                );
                // Read back: still active, so nothing was released.
                m.store
                    .expect_get()
                    .times(1)
                    .returning(|_| Ok(Some(room(&["alice", "bob"]))));
            } else {
                m.store.expect_update().never();
            }
            m.chans.expect_delete().never();
            m.no_publish();
            let svc = m.service();
            let err = block_on(svc.end_voice(&conn("c-alice"), &vr())).unwrap_err();
            assert_dependency(&case, &err, port, retryable);
            drop(svc);
        }
    }
}

#[test]
fn end_voice_deletes_the_remaining_channels_when_one_delete_fails() {
    let mut m = end_script("alice", approved(), None);
    expect_ended_update(&mut m, EndReason::EndedByMaster { by: user("alice") }, None);
    m.chans
        .expect_delete()
        .with(eq(ch("alice")))
        .times(1)
        .returning(|_| Err(chan_err(true)));
    m.chans
        .expect_delete()
        .with(eq(ch("bob")))
        .times(1)
        .returning(|_| Ok(()));
    m.publish_to(&["c-bob"], 1);
    block_on(m.service().end_voice(&conn("c-alice"), &vr())).unwrap();
}

#[test]
fn end_voice_refusals_change_nothing() {
    for (who, stored, code) in participant_refusals() {
        let mut m = Mocks::default();
        m.dir
            .expect_user_of()
            .times(1)
            .returning(move |_| Ok(who.map(user)));
        // The room is read together with the caller, even one that is not identified.
        m.store
            .expect_get()
            .times(1)
            .returning(move |_| Ok(stored.clone()));
        m.dir.expect_membership().never();
        m.store.expect_update().never();
        m.chans.expect_delete().never();
        m.no_publish();
        let svc = m.service();
        let err = block_on(svc.end_voice(&conn("c-x"), &vr())).unwrap_err();
        assert_eq!(err.code(), code);
        drop(svc);
    }
}

// ---------------------------------------------------------------------------------------------
// on_disconnect and "gone" connections
// ---------------------------------------------------------------------------------------------

/// c-bob goes away; it is in vr-1 = [alice, bob]. Steps: 0 active_with_connection, 1 get,
/// 2 update; then `voice-bob` is deleted and one event goes out.
fn disconnect_script(fail: Fail) -> Mocks {
    let mut m = Mocks::default();
    m.store
        .expect_active_with_connection()
        .with(eq(conn("c-bob")))
        .times(1)
        .returning(move |_| match fails(fail, 0) {
            Some(r) => Err(store_err(r)),
            None => Ok(vec![room(&["alice", "bob"])]),
        });
    if reaches(fail, 1) {
        m.store
            .expect_get()
            .with(eq(vr()))
            .times(1)
            .returning(move |_| match fails(fail, 1) {
                Some(r) => Err(store_err(r)),
                None => Ok(Some(room(&["alice", "bob"]))),
            });
    }
    if reaches(fail, 2) {
        m.store
            .expect_update()
            .withf(|r| r.participant(&user("bob")).is_none() && r.version() == 3)
            .times(1)
            .returning(move |_| match fails(fail, 2) {
                Some(r) => Err(store_err(r)),
                None => Ok(()),
            });
    } else {
        m.store.expect_update().never();
    }
    m
}

#[test]
fn on_disconnect_removes_the_participant_deletes_its_channel_and_announces() {
    let mut m = disconnect_script(None);
    m.chans
        .expect_delete()
        .with(eq(ch("bob")))
        .times(1)
        .returning(|_| Ok(()));
    let sent = m.publish_to(&["c-alice"], 1);
    let report = block_on(m.service().on_disconnect(&conn("c-bob"))).unwrap();
    assert_eq!(report.rooms_left, vec![vr()]);
    assert_eq!(
        sent.events_to("c-alice"),
        vec![VoiceEvent::ParticipantLeft {
            voice_room_id: vr(),
            chat_room_id: chat(),
            user: user("bob"),
            reason: LeaveReason::Disconnected,
        }]
    );
}

#[test]
fn on_disconnect_fails_cleanly_at_each_step() {
    for step in 0..=2 {
        for retryable in [true, false] {
            let case = format!("on_disconnect step {step} retryable {retryable}");
            let mut m = disconnect_script(Some((step, retryable)));
            if step == 2 {
                m.store
                    .expect_get()
                    .times(1)
                    .returning(|_| Ok(Some(room(&["alice", "bob"]))));
            }
            m.chans.expect_delete().never();
            m.no_publish();
            let svc = m.service();
            let err = block_on(svc.on_disconnect(&conn("c-bob"))).unwrap_err();
            assert_dependency(&case, &err, PortName::Store, retryable);
            drop(svc);
        }
    }
}

#[test]
fn on_disconnect_of_an_unknown_connection_does_nothing() {
    let mut m = Mocks::default();
    m.store
        .expect_active_with_connection()
        .times(1)
        .returning(|_| Ok(vec![]));
    m.store.expect_update().never();
    m.no_publish();
    let report = block_on(m.service().on_disconnect(&conn("c-nobody"))).unwrap();
    assert!(report.rooms_left.is_empty());
}

#[test]
fn on_disconnect_leaves_every_room_and_still_announces_what_it_did_when_one_fails() {
    // bob is in vr-1 and vr-2; leaving vr-2 fails. vr-1's departure happened: it must be
    // announced, and its channel deleted, even though the use case reports the failure.
    let mut m = Mocks::default();
    let vr2 = || VoiceRoomId::parse("vr-2").unwrap();
    let other = || {
        let mut r = room_of("vr-2", 10, &["carol"]);
        r.join(
            user("bob"),
            conn("c-bob"),
            ch("bob-2"),
            Timestamp::from_millis(NOW_MS),
        )
        .unwrap();
        r.bump_version();
        r
    };
    m.store
        .expect_active_with_connection()
        .times(1)
        .returning(move |_| Ok(vec![room(&["alice", "bob"]), other()]));
    m.store
        .expect_get()
        .with(eq(vr()))
        .returning(|_| Ok(Some(room(&["alice", "bob"]))));
    m.store
        .expect_get()
        .with(eq(vr2()))
        .returning(move |_| Ok(Some(other())));
    m.store
        .expect_update()
        .withf(|r| r.id() == &vr())
        .times(1)
        .returning(|_| Ok(()));
    m.store
        .expect_update()
        .withf(move |r| r.id() == &vr2())
        .times(1)
        .returning(|_| Err(store_err(true)));
    m.chans
        .expect_delete()
        .with(eq(ch("bob")))
        .times(1)
        .returning(|_| Ok(()));
    let sent = m.publish_to(&["c-alice"], 1);
    let err = block_on(m.service().on_disconnect(&conn("c-bob"))).unwrap_err();
    assert_dependency("second room", &err, PortName::Store, true);
    assert_eq!(
        sent.events_to("c-alice").len(),
        1,
        "vr-1's change was announced"
    );
}

#[test]
fn a_connection_reported_gone_while_publishing_is_removed_from_its_room() {
    // carol leaves vr-1 = [alice, bob, carol]; telling c-bob finds it gone: bob is removed as
    // if disconnected (channel deleted, announced to the others), and c-bob is not retried.
    let mut m = Mocks::default();
    m.dir
        .expect_user_of()
        .returning(|_| Ok(Some(user("carol"))));
    let after_carol = || {
        let mut r = room(&["alice", "bob", "carol"]);
        r.leave(
            &user("carol"),
            LeaveReason::Left,
            Timestamp::from_millis(NOW_MS),
        )
        .unwrap();
        r.bump_version();
        r
    };
    m.store
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(room(&["alice", "bob", "carol"]))));
    m.store
        .expect_update()
        .withf(|r| r.participants().len() == 2)
        .times(1)
        .returning(|_| Ok(()));
    m.chans
        .expect_delete()
        .with(eq(ch("carol")))
        .times(1)
        .returning(|_| Ok(()));
    // The "gone" path: on_disconnect for c-bob.
    m.store
        .expect_active_with_connection()
        .with(eq(conn("c-bob")))
        .times(1)
        .returning(move |_| Ok(vec![after_carol()]));
    m.store
        .expect_get()
        .times(1)
        .returning(move |_| Ok(Some(after_carol())));
    m.store
        .expect_update()
        .withf(|r| {
            r.participants()
                .iter()
                .map(|p| p.user.as_str())
                .collect::<Vec<_>>()
                == ["alice"]
        })
        .times(1)
        .returning(|_| Ok(()));
    m.chans
        .expect_delete()
        .with(eq(ch("bob")))
        .times(1)
        .returning(|_| Ok(()));
    m.dir
        .expect_connections_of()
        .times(2)
        .returning(|_| Ok(vec![conn("c-alice"), conn("c-bob")]));
    let sent = Sent::default();
    let sink = sent.clone();
    m.notify
        .expect_send()
        .with(eq(conn("c-bob")), always())
        .times(2)
        .returning(|_, _| Err(NotifyError::Gone));
    m.notify
        .expect_send()
        .with(eq(conn("c-alice")), always())
        .times(2)
        .returning(move |to, ev| {
            sink.0.lock().unwrap().push((to.clone(), ev.clone()));
            Ok(())
        });
    block_on(m.service().leave_voice(&conn("c-carol"), &vr())).unwrap();
    assert_eq!(
        sent.events_to("c-alice"),
        vec![
            VoiceEvent::ParticipantLeft {
                voice_room_id: vr(),
                chat_room_id: chat(),
                user: user("carol"),
                reason: LeaveReason::Left,
            },
            VoiceEvent::ParticipantLeft {
                voice_room_id: vr(),
                chat_room_id: chat(),
                user: user("bob"),
                reason: LeaveReason::Disconnected,
            },
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// sweep
// ---------------------------------------------------------------------------------------------

fn listed(c: SignalingChannel, age: Duration) -> ListedChannel {
    ListedChannel {
        channel: c,
        tags: None,
        created_at: Timestamp::from_millis(NOW_MS - u64::try_from(age.as_millis()).unwrap()),
    }
}

/// vr-1 = [alice (live), bob (gone)]; channels: alice's and bob's (held), an old orphan and a
/// young one. Steps: 0 list_active, 1 user_of(c-alice), 2 user_of(c-bob), 3
/// active_with_connection(c-bob), 4 get, 5 update, 6 delete(voice-bob), 7 list_active,
/// 8 channels.list, 9 delete(orphan).
fn sweep_script(fail: Fail) -> Mocks {
    let mut m = Mocks::default();
    let after = || {
        let mut r = room(&["alice", "bob"]);
        r.leave(
            &user("bob"),
            LeaveReason::Disconnected,
            Timestamp::from_millis(NOW_MS),
        )
        .unwrap();
        r.bump_version();
        r
    };
    m.store
        .expect_list_active()
        .times(1)
        .returning(move || match fails(fail, 0) {
            Some(r) => Err(store_err(r)),
            None => Ok(vec![room(&["alice", "bob"])]),
        });
    if reaches(fail, 1) {
        m.dir
            .expect_user_of()
            .with(eq(conn("c-alice")))
            .times(1)
            .returning(move |_| match fails(fail, 1) {
                Some(r) => Err(dir_err(r)),
                None => Ok(Some(user("alice"))),
            });
        m.dir
            .expect_user_of()
            .with(eq(conn("c-bob")))
            .times(1)
            .returning(move |_| match fails(fail, 2) {
                Some(r) => Err(dir_err(r)),
                None => Ok(None),
            });
    }
    // Which steps run when step `s` fails: a failed liveness check (2) skips bob's removal
    // (3-6), a failed removal step skips the rest of it, a failed listing (0, 7, 8) ends the
    // sweep.
    let runs = |skipped_by: &[usize]| fail.is_none_or(|(s, _)| !skipped_by.contains(&s));
    if runs(&[0, 2]) {
        m.store
            .expect_active_with_connection()
            .times(1)
            .returning(move |_| match fails(fail, 3) {
                Some(r) => Err(store_err(r)),
                None => Ok(vec![room(&["alice", "bob"])]),
            });
    }
    if runs(&[0, 2, 3]) {
        m.store
            .expect_get()
            .times(1)
            .returning(move |_| match fails(fail, 4) {
                Some(r) => Err(store_err(r)),
                None => Ok(Some(room(&["alice", "bob"]))),
            });
    }
    if runs(&[0, 2, 3, 4]) {
        m.store
            .expect_update()
            .times(1)
            .returning(move |_| match fails(fail, 5) {
                Some(r) => Err(store_err(r)),
                None => Ok(()),
            });
    }
    if runs(&[0, 2, 3, 4, 5]) {
        m.chans
            .expect_delete()
            .with(eq(ch("bob")))
            .times(1)
            .returning(move |_| match fails(fail, 6) {
                Some(r) => Err(chan_err(r)),
                None => Ok(()),
            });
    }
    let bob_removed = runs(&[0, 2, 3, 4, 5]);
    if runs(&[0]) {
        m.store
            .expect_list_active()
            .times(1)
            .returning(move || match fails(fail, 7) {
                Some(r) => Err(store_err(r)),
                None => Ok(vec![if bob_removed {
                    after()
                } else {
                    room(&["alice", "bob"])
                }]),
            });
    }
    if runs(&[0, 7]) {
        m.chans
            .expect_list()
            .times(1)
            .returning(move || match fails(fail, 8) {
                Some(r) => Err(chan_err(r)),
                None => Ok(vec![
                    listed(ch("alice"), Duration::from_secs(3600)),
                    listed(ch("old-orphan"), Duration::from_secs(3600)),
                    listed(ch("young"), Duration::from_secs(10)),
                ]),
            });
    }
    if runs(&[0, 7, 8]) {
        m.chans
            .expect_delete()
            .with(eq(ch("old-orphan")))
            .times(1)
            .returning(move |_| match fails(fail, 9) {
                Some(r) => Err(chan_err(r)),
                None => Ok(()),
            });
    }
    m.chans.expect_delete().with(eq(ch("young"))).never();
    m.chans.expect_delete().with(eq(ch("alice"))).never();
    m
}

#[test]
fn sweep_removes_dead_participants_and_old_orphans_only() {
    let mut m = sweep_script(None);
    let sent = m.publish_to(&["c-alice"], 1);
    let report = block_on(m.service().sweep()).unwrap();
    assert_eq!(report.participants_removed, 1);
    assert_eq!(report.channels_deleted, 1);
    assert_eq!(report.failures, 0);
    assert!(report.rooms_ended.is_empty());
    assert_eq!(
        sent.events_to("c-alice"),
        vec![VoiceEvent::ParticipantLeft {
            voice_room_id: vr(),
            chat_room_id: chat(),
            user: user("bob"),
            reason: LeaveReason::Disconnected,
        }]
    );
}

#[test]
fn sweep_fails_or_counts_at_each_step() {
    for step in 0..=9 {
        for retryable in [true, false] {
            let case = format!("sweep step {step} retryable {retryable}");
            let mut m = sweep_script(Some((step, retryable)));
            if step == 5 {
                // Read back after the failed update: not stored.
                m.store
                    .expect_get()
                    .times(1)
                    .returning(|_| Ok(Some(room(&["alice", "bob"]))));
            }
            // bob's departure is announced whenever it happened, even if a later step fails.
            let bob_removed = step == 1 || step >= 6;
            let sent = if bob_removed {
                m.publish_to(&["c-alice"], 1)
            } else {
                m.no_publish();
                Sent::default()
            };
            let svc = m.service();
            let result = block_on(svc.sweep());
            match step {
                // Listing failed: the sweep reports it.
                0 | 7 => assert_dependency(&case, &result.unwrap_err(), PortName::Store, retryable),
                8 => assert_dependency(&case, &result.unwrap_err(), PortName::Channels, retryable),
                // Anything else is counted and left to the next sweep.
                _ => {
                    let report = result.unwrap_or_else(|e| panic!("{case}: {e}"));
                    // A failed delete of a released channel is only logged (the orphan phase
                    // of a later sweep retries it); every other failure is counted.
                    assert_eq!(report.failures, usize::from(step != 6), "{case}");
                    assert_eq!(
                        report.participants_removed,
                        usize::from(bob_removed),
                        "{case}"
                    );
                }
            }
            assert_eq!(
                sent.events_to("c-alice").len(),
                usize::from(bob_removed),
                "{case}"
            );
            drop(svc);
        }
    }
}

#[test]
fn sweep_ends_a_room_in_which_nobody_is_live() {
    let mut m = Mocks::default();
    m.store
        .expect_list_active()
        .times(1)
        .returning(|| Ok(vec![room(&["alice", "bob"])]));
    m.dir.expect_user_of().times(2).returning(|_| Ok(None));
    m.store
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(room(&["alice", "bob"]))));
    m.store
        .expect_update()
        .withf(|r| {
            matches!(
                r.status(),
                RoomStatus::Ended {
                    reason: EndReason::Abandoned,
                    ..
                }
            )
        })
        .times(1)
        .returning(|_| Ok(()));
    m.chans.expect_delete().times(2).returning(|_| Ok(()));
    m.store
        .expect_list_active()
        .times(1)
        .returning(|| Ok(vec![]));
    m.chans.expect_list().times(1).returning(|| Ok(vec![]));
    m.publish_to(&["c-carol"], 1);
    let report = block_on(m.service().sweep()).unwrap();
    assert_eq!(report.rooms_ended, vec![vr()]);
}

#[test]
fn sweep_does_not_abandon_a_room_someone_joined_since_it_was_listed() {
    // Listed: [alice] with alice gone. By the time the sweep writes, dave (live) joined: the
    // room must not be ended under him; only alice is removed.
    let with_dave = || {
        let mut r = room(&["alice"]);
        r.join(
            user("dave"),
            conn("c-dave"),
            ch("dave"),
            Timestamp::from_millis(NOW_MS),
        )
        .unwrap();
        r.bump_version();
        r
    };
    let mut m = Mocks::default();
    m.store
        .expect_list_active()
        .times(1)
        .returning(|| Ok(vec![room(&["alice"])]));
    m.dir
        .expect_user_of()
        .with(eq(conn("c-alice")))
        .returning(|_| Ok(None));
    m.store
        .expect_active_with_connection()
        .returning(move |_| Ok(vec![with_dave()]));
    m.store
        .expect_get()
        .returning(move |_| Ok(Some(with_dave())));
    m.store
        .expect_update()
        .withf(|r| {
            r.is_active()
                && r.participants()
                    .iter()
                    .map(|p| p.user.as_str())
                    .collect::<Vec<_>>()
                    == ["dave"]
        })
        .times(1)
        .returning(|_| Ok(()));
    m.chans
        .expect_delete()
        .with(eq(ch("alice")))
        .times(1)
        .returning(|_| Ok(()));
    m.store
        .expect_list_active()
        .times(1)
        .returning(|| Ok(vec![]));
    m.chans.expect_list().times(1).returning(|| Ok(vec![]));
    m.dir.expect_connections_of().returning(|_| Ok(vec![]));
    let report = block_on(m.service().sweep()).unwrap();
    assert!(report.rooms_ended.is_empty(), "{report:?}");
    assert_eq!(report.participants_removed, 1);
}

// ---------------------------------------------------------------------------------------------
// active_voice
// ---------------------------------------------------------------------------------------------

#[test]
fn active_voice_answers_members_only_and_fails_cleanly_at_each_step() {
    // Happy path.
    let mut m = Mocks::default();
    gate(&mut m, "bob", Some(approved()));
    m.store
        .expect_active_in_chat_room()
        .times(1)
        .returning(|_| Ok(Some(room(&["alice"]))));
    let got = block_on(m.service().active_voice(&conn("c-bob"), &chat())).unwrap();
    assert_eq!(got.map(|r| r.id().clone()), Some(vr()));
    // Refusals: nothing read from the store.
    for (membership, code) in refusals() {
        let mut m = Mocks::default();
        gate(&mut m, "bob", membership);
        m.store.expect_active_in_chat_room().never();
        let svc = m.service();
        let err = block_on(svc.active_voice(&conn("c-bob"), &chat())).unwrap_err();
        assert_eq!(err.code(), code);
        assert!(matches!(err, GetVoiceRoomError::Access(_)), "{code}");
        drop(svc);
    }
    // Each step failing.
    for (step, port) in [
        (0, PortName::Directory),
        (1, PortName::Directory),
        (2, PortName::Store),
    ] {
        for retryable in [true, false] {
            let case = format!("active_voice step {step} retryable {retryable}");
            let fail = Some((step, retryable));
            let mut m = Mocks::default();
            m.dir
                .expect_user_of()
                .times(1)
                .returning(move |_| match fails(fail, 0) {
                    Some(r) => Err(dir_err(r)),
                    None => Ok(Some(user("bob"))),
                });
            if reaches(fail, 1) {
                m.dir
                    .expect_membership()
                    .times(1)
                    .returning(move |_, _| match fails(fail, 1) {
                        Some(r) => Err(dir_err(r)),
                        None => Ok(approved()),
                    });
            }
            if reaches(fail, 2) {
                m.store
                    .expect_active_in_chat_room()
                    .times(1)
                    .returning(move |_| match fails(fail, 2) {
                        Some(r) => Err(store_err(r)),
                        None => Ok(None),
                    });
            }
            let svc = m.service();
            let err = block_on(svc.active_voice(&conn("c-bob"), &chat())).unwrap_err();
            assert_dependency(&case, &err, port, retryable);
            drop(svc);
        }
    }
}
