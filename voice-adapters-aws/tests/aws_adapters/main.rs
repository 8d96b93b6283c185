//! Integration tests of the AWS adapters against real local stand-ins: moto_server for DynamoDB,
//! STS and the API Gateway Management API, and an in-process fake of the KVS signaling APIs
//! (no emulator exists). One binary, one module per adapter; `support` holds the shared setup.

mod channels;
mod chat_store;
mod credentials;
mod directory;
mod notifier;
mod pool;
mod ports;
mod recordings;
mod store;
mod support;
