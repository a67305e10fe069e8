//! HMAC request auth between a control plane and the services it calls (the Modal web API, the
//! Cloudflare gateway Worker, an emulator of either).
//!
//! Both sides share one secret. The caller puts a short-lived token in the `Authorization`
//! header; the callee checks it. Two token schemes exist:
//!
//! - [`Scheme::Legacy`], the seed's (Open-Inspect's internal auth), kept for compatibility:
//!   `Bearer <timestampMs>.<signature>`, where `signature` is the lowercase hex
//!   HMAC-SHA256 (key = the secret's UTF-8 bytes) of the timestamp string. It signs only the
//!   time, so anyone who sees a token can replay it against any endpoint until it expires.
//! - [`Scheme::RequestBound`], this library's: `Bearer v1.<timestampMs>.<nonce>.<signature>`,
//!   where the signature also covers the HTTP method, the path, the query and a SHA-256 digest
//!   of the body, so a captured token is good for that one request only; with a
//!   [`NonceStore`] it is good for one use.
//!
//! Both use the same expiry rules: a token is valid while its age is at most
//! [`DEFAULT_MAX_AGE`] (5 minutes, the seed's window) and it is dated at most
//! [`DEFAULT_MAX_FUTURE_SKEW`] in the future. The seed accepts tokens dated up to 5 minutes
//! ahead as well; [`Verifier::with_symmetric_window`] restores that.
//!
//! # The request-bound scheme, for other implementations
//!
//! Header value: `Bearer v1.<timestampMs>.<nonce>.<signature>`, where
//! - `timestampMs` is the Unix time in milliseconds, 1 to 16 ASCII digits;
//! - `nonce` is 16 to 64 lowercase hex characters, fresh random bytes for every request (this
//!   library sends 16 random bytes, 32 characters);
//! - `signature` is the 64-character lowercase hex HMAC-SHA256, keyed with the secret's UTF-8
//!   bytes, of this canonical string (seven lines joined by `\n`, no trailing newline):
//!
//! ```text
//! sandbox-request-v1
//! <timestampMs>            exactly as in the token
//! <nonce>                  exactly as in the token
//! <METHOD>                 the HTTP method, ASCII upper-cased
//! <path>                   the request target up to the first `?`, byte for byte as sent
//!                          (still percent-encoded, not normalized), starting with `/`
//! <canonicalQuery>         see below; empty when there is no query
//! <bodySha256>             lowercase hex SHA-256 of the exact body bytes (of the empty
//!                          string when there is no body)
//! ```
//!
//! `canonicalQuery` is the part of the target after the first `?`, parsed as
//! `application/x-www-form-urlencoded` (JavaScript: `new URLSearchParams(search)`; `+` is a
//! space, invalid UTF-8 after percent-decoding becomes U+FFFD), each pair turned into
//! `encodeURIComponent(key) + "=" + encodeURIComponent(value)`, sorted by the UTF-8 bytes of
//! `key + "\0" + value` (decoded), and joined with `&`. So `?b=2&a=1` and `?a=1&b=2` sign
//! alike, and `?a=1` differs from no query. This is the same canonicalization as the seed's
//! `sig1` service signatures (`packages/shared/src/service-auth.ts`).
//!
//! Known answer: secret `test-secret`, timestamp `1739000000000`, nonce
//! `00112233445566778899aabbccddeeff`, `POST /api/create-sandbox?b=2&a=1`, body `{"a":1}`.
//! The canonical string is
//!
//! ```text
//! sandbox-request-v1
//! 1739000000000
//! 00112233445566778899aabbccddeeff
//! POST
//! /api/create-sandbox
//! a=1&b=2
//! 015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862
//! ```
//!
//! and the header value `Bearer v1.1739000000000.00112233445566778899aabbccddeeff.`
//! `e999a6862ac3a8faa6422593186dad2eaf43de86e1609cb7988f19d988edf028` (one line). The legacy
//! token for the same secret and timestamp is `Bearer 1739000000000.`
//! `f9c1951b06cfb376544bc9d0f8c800dc0e73aacb4df82417a5f141a6ea8359f4`.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use sandbox_core::auth::{AcceptedSchemes, AuthError, NonceCache, Scheme, Signer, Verifier};
//! use sandbox_core::Secret;
//!
//! # fn main() -> Result<(), AuthError> {
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_739_000_000);
//! let signer = Signer::new(Secret::new("shared-secret"))?;
//! let header = signer.sign_request("POST", "/api/snapshot-sandbox", br#"{"reason":"manual"}"#, now)?;
//!
//! let verifier = Verifier::new(Secret::new("shared-secret"), AcceptedSchemes::RequestBound)?
//!     .with_nonce_store(std::sync::Arc::new(NonceCache::default()));
//! let token = verifier.verify(Some(&header), "POST", "/api/snapshot-sandbox", br#"{"reason":"manual"}"#, now)?;
//! assert_eq!(token.scheme, Scheme::RequestBound);
//!
//! // The same header cannot be used for another request, nor twice.
//! assert!(matches!(
//!     verifier.verify(Some(&header), "POST", "/api/restore-sandbox", br#"{"reason":"manual"}"#, now),
//!     Err(AuthError::BadSignature)
//! ));
//! assert!(matches!(
//!     verifier.verify(Some(&header), "POST", "/api/snapshot-sandbox", br#"{"reason":"manual"}"#, now),
//!     Err(AuthError::Replayed)
//! ));
//! # Ok(())
//! # }
//! ```
//!
//! # Errors and [`crate::Error`]
//!
//! [`AuthError`] stays a separate type: verifying happens on the *server* side of a request
//! (a control plane, an emulator, a gateway), where no backend is involved and
//! [`crate::Error::Unauthenticated`] (which names a backend) does not fit. A server answers with
//! [`AuthError::http_status`]. A backend that cannot sign because its secret is missing reports
//! [`crate::Error::invalid_config`] with its own config key and this error's message.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::Secret;

mod replay;

pub use replay::{DEFAULT_NONCE_CACHE_CAPACITY, NonceCache, NonceStore};

type HmacSha256 = Hmac<Sha256>;

/// The prefix of the `Authorization` header value, exactly (case-sensitive, one space), as the
/// seed expects.
pub const BEARER_PREFIX: &str = "Bearer ";

/// How old a token may be: 5 minutes, the seed's `TOKEN_VALIDITY_SECONDS`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// How far in the future a token's timestamp may be (clock skew between the two hosts): 30
/// seconds. The seed allows [`DEFAULT_MAX_AGE`] both ways; see
/// [`Verifier::with_symmetric_window`].
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(30);

/// The first dot-separated part of a request-bound token.
pub const REQUEST_BOUND_VERSION: &str = "v1";

/// The first line of the request-bound canonical string (domain separation: a request-bound
/// signature can never be mistaken for a legacy one, whose message is only digits, nor for the
/// seed's `sig1`).
pub const REQUEST_BOUND_DOMAIN: &str = "sandbox-request-v1";

/// The most digits a timestamp may have (the seed's `sig1` bound; milliseconds until the year
/// 318857).
pub const MAX_TIMESTAMP_DIGITS: usize = 16;

/// Random bytes in the nonce this library's [`Signer`] makes (hex-encoded: 32 characters).
pub const NONCE_BYTES: usize = 16;

/// The shortest nonce a [`Verifier`] accepts, in hex characters (64 bits).
pub const MIN_NONCE_HEX_LEN: usize = 16;

/// The longest nonce a [`Verifier`] accepts, in hex characters.
pub const MAX_NONCE_HEX_LEN: usize = 64;

/// Length of a hex-encoded HMAC-SHA256 signature.
const SIGNATURE_HEX_LEN: usize = 64;

/// A token scheme. Serialized in snake case (`legacy`, `request_bound`) so config can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// The seed's `Bearer <timestampMs>.<hex>`: signs only the time.
    Legacy,
    /// `Bearer v1.<timestampMs>.<nonce>.<hex>`: signs time, nonce, method, path, query and a
    /// body digest (see the [module docs](self)).
    RequestBound,
}

impl Scheme {
    /// The config name: `legacy` or `request_bound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Legacy => "legacy",
            Scheme::RequestBound => "request_bound",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which schemes a [`Verifier`] accepts. Serialized in snake case (`legacy`,
/// `request_bound`, `both`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceptedSchemes {
    /// Only the seed's tokens: talk to seed code as it is.
    Legacy,
    /// Only request-bound tokens: the recommended setting once every caller signs them.
    RequestBound,
    /// Either; for migrating callers from the legacy scheme. As weak as `Legacy` while it lasts.
    Both,
}

impl AcceptedSchemes {
    /// True when tokens of `scheme` are accepted.
    pub fn accepts(self, scheme: Scheme) -> bool {
        matches!(
            (self, scheme),
            (AcceptedSchemes::Both, _)
                | (AcceptedSchemes::Legacy, Scheme::Legacy)
                | (AcceptedSchemes::RequestBound, Scheme::RequestBound)
        )
    }
}

/// Why a token was refused, or why one could not be made.
///
/// Messages never contain the secret, the signature or any other text taken from the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header, or an empty one.
    #[error("missing Authorization header")]
    Missing,

    /// The header is not a token of a known scheme (no `Bearer ` prefix, wrong number of parts,
    /// a timestamp that is not 1 to 16 ASCII digits, a signature that is not 64 lowercase hex
    /// characters, ...).
    #[error("malformed auth token: {reason}")]
    Malformed {
        /// Which rule the token broke (fixed text, never a piece of the token).
        reason: &'static str,
    },

    /// The token is well formed but of a scheme this verifier does not accept.
    #[error("auth token scheme `{scheme}` is not accepted here")]
    SchemeNotAccepted {
        /// The token's scheme.
        scheme: Scheme,
    },

    /// The token is older than the verifier's maximum age.
    #[error("auth token expired: issued {age:?} ago, the limit is {max_age:?}")]
    Expired {
        /// How old the token is.
        age: Duration,
        /// The verifier's limit.
        max_age: Duration,
    },

    /// The token is dated further in the future than the allowed clock skew.
    #[error("auth token dated {ahead:?} in the future, the limit is {max_skew:?} (clock skew?)")]
    FromTheFuture {
        /// How far ahead of the verifier's clock the token is.
        ahead: Duration,
        /// The verifier's limit.
        max_skew: Duration,
    },

    /// The signature does not match: wrong secret, or a token altered or made for another
    /// request.
    #[error("auth token signature mismatch")]
    BadSignature,

    /// A request-bound token whose nonce was already used.
    #[error("auth token already used (replayed nonce)")]
    Replayed,

    /// The replay cache is full of unexpired nonces and cannot accept one more; it fails closed.
    #[error("replay cache full; retry later")]
    ReplayCacheFull,

    /// The shared secret is not configured (empty). A configuration error: fail at startup.
    #[error("auth secret is not configured (empty)")]
    MissingSecret,

    /// The method or path given to sign or verify cannot be part of a canonical string.
    #[error("invalid request to sign or verify: {reason}")]
    InvalidRequest {
        /// What is wrong (fixed text).
        reason: &'static str,
    },

    /// The operating system gave no random bytes for a nonce.
    #[error("no randomness available for the auth nonce")]
    NoRandomness,
}

impl AuthError {
    /// The HTTP status a server answers with: 401 for a missing, bad, expired or replayed token
    /// (the seed's status), 400 for an unusable method or path, 503 when the server itself
    /// cannot check (no secret configured, as the seed answers; replay cache full; no
    /// randomness).
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::Missing
            | AuthError::Malformed { .. }
            | AuthError::SchemeNotAccepted { .. }
            | AuthError::Expired { .. }
            | AuthError::FromTheFuture { .. }
            | AuthError::BadSignature
            | AuthError::Replayed => 401,
            AuthError::InvalidRequest { .. } => 400,
            AuthError::ReplayCacheFull | AuthError::MissingSecret | AuthError::NoRandomness => 503,
        }
    }

    /// True for errors that say the server (or signer) is misconfigured rather than that the
    /// token is bad: [`AuthError::MissingSecret`].
    pub fn is_config_error(&self) -> bool {
        matches!(self, AuthError::MissingSecret)
    }
}

fn malformed(reason: &'static str) -> AuthError {
    AuthError::Malformed { reason }
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedToken {
    /// The token's scheme.
    pub scheme: Scheme,
    /// The time the token says it was made.
    pub issued_at: SystemTime,
    /// The nonce of a request-bound token.
    pub nonce: Option<String>,
}

/// Makes tokens. Holds the shared secret.
#[derive(Debug, Clone)]
pub struct Signer {
    key: Secret,
}

impl Signer {
    /// A signer with this secret; [`AuthError::MissingSecret`] when it is empty.
    pub fn new(secret: Secret) -> Result<Self, AuthError> {
        if secret.is_empty() {
            return Err(AuthError::MissingSecret);
        }
        Ok(Self { key: secret })
    }

    /// A legacy (seed) header value for time `now`: `Bearer <timestampMs>.<hex>`.
    pub fn sign_legacy(&self, now: SystemTime) -> String {
        let timestamp = crate::time::unix_millis(now).to_string();
        let signature = hex::encode(mac(&self.key, timestamp.as_bytes()).finalize().into_bytes());
        format!("{BEARER_PREFIX}{timestamp}.{signature}")
    }

    /// [`Signer::sign_legacy`] at the current time.
    pub fn sign_legacy_now(&self) -> String {
        self.sign_legacy(SystemTime::now())
    }

    /// A request-bound header value for this request at time `now`, with a fresh random nonce.
    ///
    /// `target` is the path with its query, if any (`/api/snapshot?repo_owner=o`), exactly as
    /// the receiver will see it; `body` the exact bytes that will be sent (empty for none).
    pub fn sign_request(
        &self,
        method: &str,
        target: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<String, AuthError> {
        let mut bytes = [0u8; NONCE_BYTES];
        getrandom::fill(&mut bytes).map_err(|_| AuthError::NoRandomness)?;
        self.sign_request_with_nonce(method, target, body, now, &hex::encode(bytes))
    }

    /// [`Signer::sign_request`] at the current time.
    pub fn sign_request_now(
        &self,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<String, AuthError> {
        self.sign_request(method, target, body, SystemTime::now())
    }

    /// [`Signer::sign_request`] with a given nonce, for test vectors and deterministic tests.
    /// Never reuse a nonce in real requests. The nonce must be 16 to 64 lowercase hex
    /// characters.
    pub fn sign_request_with_nonce(
        &self,
        method: &str,
        target: &str,
        body: &[u8],
        now: SystemTime,
        nonce: &str,
    ) -> Result<String, AuthError> {
        check_nonce(nonce).map_err(|_| AuthError::InvalidRequest {
            reason: "nonce must be 16 to 64 lowercase hex characters",
        })?;
        let timestamp = crate::time::unix_millis(now).to_string();
        let canonical = canonical_string(&timestamp, nonce, method, target, body)?;
        let signature = hex::encode(mac(&self.key, canonical.as_bytes()).finalize().into_bytes());
        Ok(format!(
            "{BEARER_PREFIX}{REQUEST_BOUND_VERSION}.{timestamp}.{nonce}.{signature}"
        ))
    }

    /// A header value of `scheme` (for callers whose scheme comes from config).
    pub fn sign(
        &self,
        scheme: Scheme,
        method: &str,
        target: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<String, AuthError> {
        match scheme {
            Scheme::Legacy => Ok(self.sign_legacy(now)),
            Scheme::RequestBound => self.sign_request(method, target, body, now),
        }
    }
}

/// Checks tokens. Holds the shared secret, the schemes it accepts, its time window and an
/// optional replay cache.
///
/// Checks run in this order and the first failure is returned: header present, token well
/// formed, scheme accepted, timestamp within the window, signature, nonce not seen before.
/// Only tokens with a valid signature reach the replay cache, so nobody without the secret can
/// fill it.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: Secret,
    accepted: AcceptedSchemes,
    max_age: Duration,
    max_future_skew: Duration,
    nonces: Option<Arc<dyn NonceStore>>,
}

impl Verifier {
    /// A verifier with this secret accepting `accepted`, with the default window
    /// ([`DEFAULT_MAX_AGE`], [`DEFAULT_MAX_FUTURE_SKEW`]) and no replay cache.
    /// [`AuthError::MissingSecret`] when the secret is empty.
    pub fn new(secret: Secret, accepted: AcceptedSchemes) -> Result<Self, AuthError> {
        if secret.is_empty() {
            return Err(AuthError::MissingSecret);
        }
        Ok(Self {
            key: secret,
            accepted,
            max_age: DEFAULT_MAX_AGE,
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
            nonces: None,
        })
    }

    /// Accepts tokens up to `max_age` old (inclusive).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Accepts tokens dated up to `skew` in the future (inclusive).
    pub fn with_max_future_skew(mut self, skew: Duration) -> Self {
        self.max_future_skew = skew;
        self
    }

    /// The seed's window: tokens dated up to the maximum age in the future are accepted too
    /// (`|now - timestamp| <= max_age`). Apply after [`Verifier::with_max_age`].
    pub fn with_symmetric_window(mut self) -> Self {
        self.max_future_skew = self.max_age;
        self
    }

    /// Rejects a request-bound token whose nonce `store` has already seen
    /// ([`AuthError::Replayed`]). Legacy tokens carry no nonce and are not checked (two honest
    /// legacy tokens made in the same millisecond are identical). [`NonceCache`] is the
    /// built-in store; it is per process, so replicas behind a load balancer each keep their
    /// own and a token can be replayed once per replica unless the store is shared.
    pub fn with_nonce_store(mut self, store: Arc<dyn NonceStore>) -> Self {
        self.nonces = Some(store);
        self
    }

    /// The schemes accepted.
    pub fn accepted(&self) -> AcceptedSchemes {
        self.accepted
    }

    /// The maximum token age.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The maximum future skew.
    pub fn max_future_skew(&self) -> Duration {
        self.max_future_skew
    }

    /// Checks the `Authorization` header value of a request at time `now`.
    ///
    /// `method`, `target` (path and query, as received) and `body` (the exact bytes received)
    /// are only used by request-bound tokens; legacy tokens ignore them.
    pub fn verify(
        &self,
        header: Option<&str>,
        method: &str,
        target: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<VerifiedToken, AuthError> {
        let header = header.filter(|h| !h.is_empty()).ok_or(AuthError::Missing)?;
        let token = parse_header(header)?;
        if !self.accepted.accepts(token.scheme()) {
            return Err(AuthError::SchemeNotAccepted {
                scheme: token.scheme(),
            });
        }
        let timestamp_ms = token.timestamp_ms()?;
        self.check_window(timestamp_ms, now)?;
        let issued_at = UNIX_EPOCH + Duration::from_millis(timestamp_ms);
        match token {
            Token::Legacy {
                timestamp,
                signature,
            } => {
                verify_mac(&self.key, timestamp.as_bytes(), signature)?;
                Ok(VerifiedToken {
                    scheme: Scheme::Legacy,
                    issued_at,
                    nonce: None,
                })
            }
            Token::RequestBound {
                timestamp,
                nonce,
                signature,
            } => {
                let canonical = canonical_string(timestamp, nonce, method, target, body)?;
                verify_mac(&self.key, canonical.as_bytes(), signature)?;
                if let Some(store) = &self.nonces {
                    store.check_and_record(nonce, issued_at + self.max_age, now)?;
                }
                Ok(VerifiedToken {
                    scheme: Scheme::RequestBound,
                    issued_at,
                    nonce: Some(nonce.to_owned()),
                })
            }
        }
    }

    /// [`Verifier::verify`] at the current time.
    pub fn verify_now(
        &self,
        header: Option<&str>,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<VerifiedToken, AuthError> {
        self.verify(header, method, target, body, SystemTime::now())
    }

    fn check_window(&self, timestamp_ms: u64, now: SystemTime) -> Result<(), AuthError> {
        let now_ms = crate::time::unix_millis(now);
        if timestamp_ms <= now_ms {
            let age = Duration::from_millis(now_ms - timestamp_ms);
            if age > self.max_age {
                return Err(AuthError::Expired {
                    age,
                    max_age: self.max_age,
                });
            }
        } else {
            let ahead = Duration::from_millis(timestamp_ms - now_ms);
            if ahead > self.max_future_skew {
                return Err(AuthError::FromTheFuture {
                    ahead,
                    max_skew: self.max_future_skew,
                });
            }
        }
        Ok(())
    }
}

/// A token split into its parts, borrowed from the header; every part already checked for
/// its grammar.
enum Token<'a> {
    Legacy {
        timestamp: &'a str,
        signature: &'a str,
    },
    RequestBound {
        timestamp: &'a str,
        nonce: &'a str,
        signature: &'a str,
    },
}

impl Token<'_> {
    fn scheme(&self) -> Scheme {
        match self {
            Token::Legacy { .. } => Scheme::Legacy,
            Token::RequestBound { .. } => Scheme::RequestBound,
        }
    }

    fn timestamp_ms(&self) -> Result<u64, AuthError> {
        let (Token::Legacy { timestamp, .. } | Token::RequestBound { timestamp, .. }) = self;
        // At most 16 digits, checked by the parser: always fits in a u64.
        timestamp
            .parse()
            .map_err(|_| malformed("timestamp is not a number"))
    }
}

fn parse_header(header: &str) -> Result<Token<'_>, AuthError> {
    let token = header
        .strip_prefix(BEARER_PREFIX)
        .ok_or(malformed("expected `Bearer <token>`"))?;
    let parts: Vec<&str> = token.split('.').collect();
    match parts.as_slice() {
        [timestamp, signature] => {
            check_timestamp(timestamp)?;
            check_signature(signature)?;
            Ok(Token::Legacy {
                timestamp,
                signature,
            })
        }
        [version, timestamp, nonce, signature] if *version == REQUEST_BOUND_VERSION => {
            check_timestamp(timestamp)?;
            check_nonce(nonce)?;
            check_signature(signature)?;
            Ok(Token::RequestBound {
                timestamp,
                nonce,
                signature,
            })
        }
        [_, _, _, _] => Err(malformed("unknown token version")),
        _ => Err(malformed(
            "expected `<timestamp>.<signature>` or `v1.<timestamp>.<nonce>.<signature>`",
        )),
    }
}

fn check_timestamp(timestamp: &str) -> Result<(), AuthError> {
    if timestamp.is_empty() {
        return Err(malformed("empty timestamp"));
    }
    if timestamp.len() > MAX_TIMESTAMP_DIGITS {
        return Err(malformed("timestamp longer than 16 digits"));
    }
    if !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("timestamp is not decimal digits"));
    }
    Ok(())
}

fn check_nonce(nonce: &str) -> Result<(), AuthError> {
    if !(MIN_NONCE_HEX_LEN..=MAX_NONCE_HEX_LEN).contains(&nonce.len()) || !is_lower_hex(nonce) {
        return Err(malformed("nonce is not 16 to 64 lowercase hex characters"));
    }
    Ok(())
}

fn check_signature(signature: &str) -> Result<(), AuthError> {
    if signature.len() != SIGNATURE_HEX_LEN || !is_lower_hex(signature) {
        return Err(malformed("signature is not 64 lowercase hex characters"));
    }
    Ok(())
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn mac(key: &Secret, message: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = HmacSha256::new_from_slice(key.expose().as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(message);
    mac
}

/// Constant-time comparison of the expected MAC with a signature already checked to be 64 hex
/// characters.
fn verify_mac(key: &Secret, message: &[u8], signature_hex: &str) -> Result<(), AuthError> {
    let signature = hex::decode(signature_hex).map_err(|_| malformed("signature is not hex"))?;
    mac(key, message)
        .verify_slice(&signature)
        .map_err(|_| AuthError::BadSignature)
}

/// The request-bound canonical string (see the [module docs](self)) for a token with
/// `timestamp` and `nonce` on the request `method target` carrying `body`.
///
/// Public so that other implementations can compare their canonical strings with this one.
/// [`AuthError::Malformed`] when the timestamp or nonce breaks the token grammar;
/// [`AuthError::InvalidRequest`] when the method is not an HTTP token (letters, digits and
/// ``!#$%&'*+-.^_`|~``) or the path does not start with `/` or contains a control character,
/// a space or `#`.
pub fn canonical_string(
    timestamp: &str,
    nonce: &str,
    method: &str,
    target: &str,
    body: &[u8],
) -> Result<String, AuthError> {
    check_timestamp(timestamp)?;
    check_nonce(nonce)?;
    check_method(method)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    check_path(path)?;
    if query.bytes().any(|b| b.is_ascii_control() || b == b'#') {
        return Err(AuthError::InvalidRequest {
            reason: "query contains a control character or `#`",
        });
    }
    Ok([
        REQUEST_BOUND_DOMAIN,
        timestamp,
        nonce,
        &method.to_ascii_uppercase(),
        path,
        &canonical_query(query),
        &hex::encode(Sha256::digest(body)),
    ]
    .join("\n"))
}

fn check_method(method: &str) -> Result<(), AuthError> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(AuthError::InvalidRequest {
            reason: "method is not an HTTP token",
        });
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), AuthError> {
    if !path.starts_with('/') {
        return Err(AuthError::InvalidRequest {
            reason: "path does not start with `/`",
        });
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'#')
    {
        return Err(AuthError::InvalidRequest {
            reason: "path contains a control character, a space or `#`",
        });
    }
    Ok(())
}

/// The canonical form of a query string (without the leading `?`): decoded as
/// `application/x-www-form-urlencoded`, pairs re-encoded with JavaScript's
/// `encodeURIComponent` rules, sorted by the UTF-8 bytes of `key + "\0" + value`, joined with
/// `&`. The empty query gives the empty string.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(Vec<u8>, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(key, value)| {
            let mut sort_key = Vec::with_capacity(key.len() + 1 + value.len());
            sort_key.extend_from_slice(key.as_bytes());
            sort_key.push(0);
            sort_key.extend_from_slice(value.as_bytes());
            let encoded = format!(
                "{}={}",
                encode_uri_component(&key),
                encode_uri_component(&value)
            );
            (sort_key, encoded)
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
        .into_iter()
        .map(|(_, encoded)| encoded)
        .collect::<Vec<_>>()
        .join("&")
}

/// JavaScript's `encodeURIComponent`: every UTF-8 byte except `A-Z a-z 0-9 - _ . ! ~ * ' ( )`
/// as `%XX` (upper-case hex).
fn encode_uri_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
