//! The resume-token signing key of the built-in chat, read from AWS Secrets Manager once per
//! cold start.
//!
//! Why Secrets Manager and not an environment variable: a function's environment is visible to
//! anyone who can read its configuration (`lambda:GetFunctionConfiguration`, the console), and
//! a key in the template would be in the repository. The stack creates the secret with a
//! generated value (`GenerateSecretString`), the function's environment names only its ARN, and
//! its role may call `secretsmanager:GetSecretValue` on exactly that secret.

use aws_sdk_secretsmanager::Client;
use aws_smithy_types::error::display::DisplayErrorContext;
use voice_domain::ports::Secret;

/// The shortest key accepted, in characters: 32 (the template generates 64 letters and
/// digits, about 380 random bits). A shorter value is a misconfiguration, refused at cold start
/// rather than signing tokens with a guessable key.
pub const MIN_RESUME_KEY_CHARS: usize = 32;

/// The resume-token key could not be read; the Lambda refuses to start (and says why) instead
/// of serving sign-ins whose tokens it could not verify after the next cold start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeKeyError {
    /// `GetSecretValue` failed (no permission, no such secret, network).
    #[error(
        "could not read the resume-token key from the secret {arn}: {cause}. The function's role \
         needs secretsmanager:GetSecretValue on exactly that secret (see docs/deploy-aws.md)"
    )]
    Unreadable {
        /// The secret's ARN (`RESUME_KEY_SECRET_ARN`).
        arn: String,
        /// The SDK's error, in words (never the secret's value).
        cause: String,
    },
    /// The secret has a binary value or a value shorter than [`MIN_RESUME_KEY_CHARS`].
    #[error(
        "the secret {arn} is not a usable resume-token key: it must be a text value of at \
         least {MIN_RESUME_KEY_CHARS} characters (the template generates one)"
    )]
    Unusable {
        /// The secret's ARN.
        arn: String,
    },
}

/// Reads the key stored in the secret `arn` (its current version's `SecretString`).
///
/// # Errors
/// [`ResumeKeyError`] when it cannot be read or is not a usable key.
pub async fn read_resume_key(client: &Client, arn: &str) -> Result<Secret, ResumeKeyError> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| ResumeKeyError::Unreadable {
            arn: arn.to_owned(),
            cause: DisplayErrorContext(&e).to_string(),
        })?;
    match out.secret_string() {
        Some(key) if key.chars().count() >= MIN_RESUME_KEY_CHARS => Ok(Secret::new(key)),
        _ => Err(ResumeKeyError::Unusable {
            arn: arn.to_owned(),
        }),
    }
}
