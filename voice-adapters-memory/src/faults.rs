//! Fault injection: wrap any port in [`Faulty`] and tell a shared [`Faults`] plan "fail port X
//! at its N-th call". Used by the fault-injection tests to prove that every use case, failing
//! at every step, leaves no orphan channel and no half-written room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use voice_domain::errors::PortName;
use voice_domain::pool::{
    ChannelLease, ChannelPool, LeaseHolder, PoolError, PoolSlot, PooledChannel,
};
use voice_domain::ports::{
    ChannelEndpoints, ChannelError, ChannelTags, ChatDirectory, CredentialError, CredentialIssuer,
    CredentialRequest, DirectoryError, IssuedCredentials, ListedChannel, Membership, Notifier,
    NotifyError, PortFailure, SignalingChannels, StoreError, VoiceRoomStore,
};
use voice_domain::{
    ChannelArn, ChannelName, ChannelRole, ChatRoomId, ClientId, ConnectionId, SignalingChannel,
    Timestamp, UserId, VoiceEvent, VoiceRoom, VoiceRoomId,
};

/// How an injected fault behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails before doing anything (throttling, a refused connection).
    Fail {
        /// Whether the failure is reported as retryable.
        retryable: bool,
    },
    /// The call does its work, then reports a failure (a timeout after the write landed): the
    /// nastiest case for "no partial state".
    FailAfterEffect,
    /// The notifier reports the connection gone (other ports treat it as `Fail`).
    Gone,
}

#[derive(Default)]
struct Plan {
    calls: HashMap<PortName, u64>,
    faults: HashMap<(PortName, u64), Fault>,
    injected: u64,
}

/// A shared fault plan. Clones share it.
#[derive(Clone, Default)]
pub struct Faults {
    plan: Arc<Mutex<Plan>>,
}

impl Faults {
    /// No faults planned.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `call`-th call (1-based, counting every method) of `port` will fail with `fault`.
    pub fn fail_at(&self, port: PortName, call: u64, fault: Fault) {
        self.lock().faults.insert((port, call), fault);
    }

    /// Clears the plan and the call counters.
    pub fn reset(&self) {
        *self.lock() = Plan::default();
    }

    /// How many calls `port` has had.
    pub fn calls(&self, port: PortName) -> u64 {
        self.lock().calls.get(&port).copied().unwrap_or(0)
    }

    /// How many faults have fired.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// Counts a call and says which fault, if any, it gets.
    fn next(&self, port: PortName) -> Option<Fault> {
        let mut plan = self.lock();
        let n = plan.calls.entry(port).or_insert(0);
        *n += 1;
        let key = (port, *n);
        let fault = plan.faults.remove(&key);
        if fault.is_some() {
            plan.injected += 1;
        }
        fault
    }
}

fn failure(fault: Fault) -> PortFailure {
    match fault {
        Fault::Fail { retryable: true } => PortFailure::retryable("injected fault"),
        _ => PortFailure::permanent("injected fault"),
    }
}

/// A port wrapped so that it fails when the [`Faults`] plan says.
#[derive(Clone)]
pub struct Faulty<T> {
    inner: T,
    faults: Faults,
    port: PortName,
}

impl<T> Faulty<T> {
    /// Wraps `inner`, which is the port named `port` in the plan.
    pub fn new(inner: T, port: PortName, faults: Faults) -> Self {
        Self {
            inner,
            faults,
            port,
        }
    }

    /// Runs `call` unless a fault is due; with [`Fault::FailAfterEffect`], runs it and fails.
    async fn run<R, E, F>(&self, err: impl Fn(Fault) -> E, call: F) -> Result<R, E>
    where
        F: std::future::Future<Output = Result<R, E>>,
    {
        match self.faults.next(self.port) {
            None => call.await,
            Some(Fault::FailAfterEffect) => {
                let _ = call.await;
                Err(err(Fault::FailAfterEffect))
            }
            Some(f) => Err(err(f)),
        }
    }
}

fn store_err(f: Fault) -> StoreError {
    StoreError::Unavailable(failure(f))
}

#[async_trait]
impl<T: VoiceRoomStore> VoiceRoomStore for Faulty<T> {
    async fn create_if_none_active(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        self.run(store_err, self.inner.create_if_none_active(room))
            .await
    }
    async fn get(&self, id: &VoiceRoomId) -> Result<Option<VoiceRoom>, StoreError> {
        self.run(store_err, self.inner.get(id)).await
    }
    async fn active_in_chat_room(&self, c: &ChatRoomId) -> Result<Option<VoiceRoom>, StoreError> {
        self.run(store_err, self.inner.active_in_chat_room(c)).await
    }
    async fn active_ids_in_chat_rooms(
        &self,
        c: &[ChatRoomId],
    ) -> Result<HashMap<ChatRoomId, VoiceRoomId>, StoreError> {
        self.run(store_err, self.inner.active_ids_in_chat_rooms(c))
            .await
    }
    async fn active_with_connection(&self, c: &ConnectionId) -> Result<Vec<VoiceRoom>, StoreError> {
        self.run(store_err, self.inner.active_with_connection(c))
            .await
    }
    async fn update(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        self.run(store_err, self.inner.update(room)).await
    }
    async fn list_active(&self) -> Result<Vec<VoiceRoom>, StoreError> {
        self.run(store_err, self.inner.list_active()).await
    }
}

fn dir_err(f: Fault) -> DirectoryError {
    DirectoryError::Unavailable(failure(f))
}

#[async_trait]
impl<T: ChatDirectory> ChatDirectory for Faulty<T> {
    async fn user_of(&self, c: &ConnectionId) -> Result<Option<UserId>, DirectoryError> {
        self.run(dir_err, self.inner.user_of(c)).await
    }
    async fn membership(
        &self,
        room: &ChatRoomId,
        user: &UserId,
    ) -> Result<Option<Membership>, DirectoryError> {
        self.run(dir_err, self.inner.membership(room, user)).await
    }
    async fn connections_of(&self, room: &ChatRoomId) -> Result<Vec<ConnectionId>, DirectoryError> {
        self.run(dir_err, self.inner.connections_of(room)).await
    }
}

fn chan_err(f: Fault) -> ChannelError {
    ChannelError::Unavailable(failure(f))
}

#[async_trait]
impl<T: SignalingChannels> SignalingChannels for Faulty<T> {
    async fn create(
        &self,
        name: &ChannelName,
        tags: &ChannelTags,
    ) -> Result<SignalingChannel, ChannelError> {
        self.run(chan_err, self.inner.create(name, tags)).await
    }
    async fn delete(&self, channel: &SignalingChannel) -> Result<(), ChannelError> {
        self.run(chan_err, self.inner.delete(channel)).await
    }
    async fn endpoints(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
        client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError> {
        self.run(chan_err, self.inner.endpoints(channel, role, client_id))
            .await
    }
    async fn list(&self) -> Result<Vec<ListedChannel>, ChannelError> {
        self.run(chan_err, self.inner.list()).await
    }
}

#[async_trait]
impl<T: CredentialIssuer> CredentialIssuer for Faulty<T> {
    async fn issue(&self, r: &CredentialRequest) -> Result<IssuedCredentials, CredentialError> {
        self.run(
            |f| CredentialError::Unavailable(failure(f)),
            self.inner.issue(r),
        )
        .await
    }
}

#[async_trait]
impl<T: Notifier> Notifier for Faulty<T> {
    async fn send(&self, to: &ConnectionId, event: &VoiceEvent) -> Result<(), NotifyError> {
        self.run(
            |f| match f {
                Fault::Gone => NotifyError::Gone,
                other => NotifyError::Unavailable(failure(other)),
            },
            self.inner.send(to, event),
        )
        .await
    }
}

fn pool_err(f: Fault) -> PoolError {
    PoolError::Unavailable(failure(f))
}

#[async_trait]
impl<T: ChannelPool> ChannelPool for Faulty<T> {
    fn is_pooling(&self) -> bool {
        self.inner.is_pooling()
    }
    async fn claim(
        &self,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        self.run(pool_err, self.inner.claim(holder, now)).await
    }
    async fn find(&self, now: Timestamp) -> Result<Option<ChannelArn>, PoolError> {
        self.run(pool_err, self.inner.find(now)).await
    }
    async fn claim_found(
        &self,
        arn: &ChannelArn,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        self.run(pool_err, self.inner.claim_found(arn, holder, now))
            .await
    }
    async fn add(&self, lease: &ChannelLease) -> Result<(), PoolError> {
        self.run(pool_err, self.inner.add(lease)).await
    }
    async fn release(
        &self,
        channel: &SignalingChannel,
        voice_room: &VoiceRoomId,
        released_at: Timestamp,
        free_from: Timestamp,
    ) -> Result<(), PoolError> {
        self.run(
            pool_err,
            self.inner
                .release(channel, voice_room, released_at, free_from),
        )
        .await
    }
    async fn list(&self) -> Result<Vec<PooledChannel>, PoolError> {
        self.run(pool_err, self.inner.list()).await
    }
    async fn evict(
        &self,
        channel: &SignalingChannel,
        released_at: Timestamp,
    ) -> Result<bool, PoolError> {
        self.run(pool_err, self.inner.evict(channel, released_at))
            .await
    }
}
