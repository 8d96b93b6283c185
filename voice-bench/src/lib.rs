//! # voice-bench
//!
//! How many people a voice backend holds per box and how quickly a click becomes sound,
//! measured over real WebSockets on loopback. The generator ([`scenarios`]) drives a server
//! started as its own process ([`targets`]): voice-server through its library, the Node `ws`
//! relay baseline users would otherwise hand-write (`bench/node-relay`), or a trivial echo (the
//! loopback ceiling). It reads the server's RSS and CPU time from `/proc` ([`sys`]).
//! [`lambda_cold`] measures the Lambda binary's cold start against a fake Runtime API.
//! [`join_depth`] counts a join's sequential AWS round trips over delayed in-memory ports.
//!
//! The figures and the exact commands are in BENCHMARKS.md; `bench/run.sh` runs them all.
#![warn(missing_docs)]

pub mod client;
pub mod flood;
pub mod join_depth;
pub mod lambda_cold;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod sys;
pub mod targets;
