//! Credentials in memory: random opaque tokens, with every issued scope recorded so tests can
//! check that credentials allow exactly a participant's (channel, role) pairs.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use voice_adapters_std::SystemClock;
use voice_domain::ports::{
    Clock, CredentialError, CredentialIssuer, CredentialRequest, Credentials, IssuedCredentials,
    Secret,
};

/// Issues opaque tokens and remembers what each allows. Clones share the record.
#[derive(Clone)]
pub struct MemoryCredentials<C: Clock + Clone = SystemClock> {
    issued: Arc<Mutex<Vec<(CredentialRequest, IssuedCredentials)>>>,
    clock: C,
}

impl<C: Clock + Clone> MemoryCredentials<C> {
    /// Nothing issued yet.
    pub fn new(clock: C) -> Self {
        Self {
            issued: Arc::default(),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(CredentialRequest, IssuedCredentials)>> {
        self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every request served, with what was issued, oldest first.
    pub fn issued(&self) -> Vec<(CredentialRequest, IssuedCredentials)> {
        self.lock().clone()
    }
}

#[async_trait]
impl<C: Clock + Clone> CredentialIssuer for MemoryCredentials<C> {
    async fn issue(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, CredentialError> {
        let issued = IssuedCredentials {
            credentials: Credentials::Token {
                token: Secret::new(uuid::Uuid::new_v4().simple().to_string()),
            },
            expires_at: self.clock.now().plus(request.ttl),
        };
        self.lock().push((request.clone(), issued.clone()));
        Ok(issued)
    }
}
