//! Examples of embedding voice rooms as a library; see `embedded.rs` and run it with
//! `cargo run -p voice-examples --example embedded`.
