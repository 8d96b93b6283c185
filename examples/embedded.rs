//! Embedding voice rooms in your own chat backend, with the in-memory adapters.
//!
//! Run: `cargo run -p voice-examples --example embedded`
//!
//! Your chat app already knows users, rooms and connections; here the in-memory directory
//! stands in for it. The service does the rest: it starts a room, joins two users, and tells
//! each one whom to connect to (the full mesh plan) with credentials scoped to exactly that.
//! No async runtime is needed beyond a tiny executor: the service itself does no I/O.

use anyhow::{ensure, Context, Result};
use futures::executor::block_on;
use voice_adapters_memory::memory_service;
use voice_domain::ports::MemberState;
use voice_domain::{ChatRoomId, ConnectionId, ServiceConfig, UserId, VoiceGrant};

fn describe(grant: &VoiceGrant) {
    println!(
        "{} (client id {}) is MASTER of {}",
        grant.user, grant.client_id, grant.own.channel.name
    );
    for peer in &grant.peers {
        println!(
            "  and connects as VIEWER to {}'s channel {}",
            peer.user, peer.access.channel.name
        );
    }
    println!(
        "  credentials expire at {} ms; they allow exactly {} (channel, role) pairs",
        grant.credentials.expires_at.as_millis(),
        1 + grant.peers.len()
    );
}

fn main() -> Result<()> {
    let (voice, handles) = memory_service(ServiceConfig::default());

    // Your chat app's state: Alice created "general" (so she is its admin); Bob was approved.
    let general = ChatRoomId::parse("general")?;
    let (alice, bob) = (UserId::parse("alice")?, UserId::parse("bob")?);
    let (alice_conn, bob_conn) = (
        ConnectionId::parse("conn-a=")?,
        ConnectionId::parse("conn-b=")?,
    );
    handles.directory.connect(alice_conn.clone(), alice.clone());
    handles.directory.connect(bob_conn.clone(), bob.clone());
    handles
        .directory
        .create_room(general.clone(), alice.clone())
        .ok()
        .context("create room")?;
    handles
        .directory
        .set_state(&general, bob.clone(), MemberState::Approved)
        .ok()
        .context("approve")?;

    block_on(async {
        let room = voice.start_voice(&alice_conn, &general).await?;
        println!(
            "voice room {} started in #{} by {}",
            room.id(),
            general,
            room.master()
        );

        let a = voice.join_voice(&alice_conn, room.id()).await?;
        let b = voice.join_voice(&bob_conn, room.id()).await?;
        describe(&a);
        describe(&b);
        ensure!(
            b.peers.len() == 1 && b.peers[0].user == alice,
            "Bob must connect to Alice"
        );

        // Everyone in the chat room was told; Bob's outbox shows what his client would get.
        for event in handles.notifier.take(&bob_conn) {
            println!("bob was notified: {event:?}");
        }

        let ended = voice.end_voice(&alice_conn, room.id()).await?;
        println!("room ended: {:?}", ended.status());
        ensure!(
            handles.channels.list_now().is_empty(),
            "every signaling channel must be deleted when the room ends"
        );
        println!("all signaling channels deleted");
        Ok(())
    })
}
