//! The shared voice-room store contract, run against the in-memory store.

use futures::executor::block_on;
use voice_adapters_memory::MemoryStore;
use voice_domain::contract::store_contract;

#[test]
fn memory_store_keeps_the_store_contract() {
    block_on(store_contract(&MemoryStore::new(), "mem"));
}
