use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

const SECRET: &str = "test-secret";
/// 2025-02-08T07:33:20Z, the timestamp of the known-answer vectors.
const TS_MS: u64 = 1_739_000_000_000;
/// HMAC-SHA256("test-secret", "1739000000000"), computed with Python's `hmac` module.
const LEGACY_KNOWN_ANSWER: &str =
    "Bearer 1739000000000.f9c1951b06cfb376544bc9d0f8c800dc0e73aacb4df82417a5f141a6ea8359f4";
const NONCE: &str = "00112233445566778899aabbccddeeff";
/// The request-bound token for `POST /api/create-sandbox?b=2&a=1` with body `{"a":1}`, made by
/// an independent Python implementation of the canonical string in the module docs.
const BOUND_KNOWN_ANSWER: &str = "Bearer v1.1739000000000.00112233445566778899aabbccddeeff.e999a6862ac3a8faa6422593186dad2eaf43de86e1609cb7988f19d988edf028";

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn t0() -> SystemTime {
    at_ms(TS_MS)
}

fn signer() -> Signer {
    Signer::new(Secret::new(SECRET)).unwrap()
}

fn verifier(accepted: AcceptedSchemes) -> Verifier {
    Verifier::new(Secret::new(SECRET), accepted).unwrap()
}

fn legacy_verify(header: &str, now: SystemTime) -> Result<VerifiedToken, AuthError> {
    verifier(AcceptedSchemes::Legacy).verify(Some(header), "GET", "/", b"", now)
}

/// Replaces the signature (the last part) with another valid-looking one.
fn with_signature(header: &str, signature: &str) -> String {
    let (head, _) = header.rsplit_once('.').unwrap();
    format!("{head}.{signature}")
}

#[test]
fn legacy_known_answer() {
    assert_eq!(signer().sign_legacy(t0()), LEGACY_KNOWN_ANSWER);
    let token = legacy_verify(LEGACY_KNOWN_ANSWER, t0()).unwrap();
    assert_eq!(token.scheme, Scheme::Legacy);
    assert_eq!(token.issued_at, t0());
    assert_eq!(token.nonce, None);
}

#[test]
fn valid_legacy_token_within_the_window() {
    let header = signer().sign_legacy(t0());
    for now_ms in [TS_MS, TS_MS + 1, TS_MS + 299_999, TS_MS + 300_000] {
        legacy_verify(&header, at_ms(now_ms)).unwrap();
    }
    // 30 s of clock skew in the future is tolerated by default.
    legacy_verify(&header, at_ms(TS_MS - 30_000)).unwrap();
    // Method, path and body do not matter to legacy tokens.
    verifier(AcceptedSchemes::Legacy)
        .verify(Some(&header), "POST", "/anything?x=1", b"body", t0())
        .unwrap();
}

#[test]
fn expired_legacy_token() {
    let header = signer().sign_legacy(t0());
    let err = legacy_verify(&header, at_ms(TS_MS + 300_001)).unwrap_err();
    assert_eq!(
        err,
        AuthError::Expired {
            age: Duration::from_millis(300_001),
            max_age: DEFAULT_MAX_AGE
        }
    );
    assert_eq!(err.http_status(), 401);
    // A custom window.
    let short = verifier(AcceptedSchemes::Legacy).with_max_age(Duration::from_secs(10));
    assert!(matches!(
        short.verify(Some(&header), "GET", "/", b"", at_ms(TS_MS + 10_001)),
        Err(AuthError::Expired { .. })
    ));
}

#[test]
fn token_from_the_future_beyond_skew() {
    let header = signer().sign_legacy(t0());
    let err = legacy_verify(&header, at_ms(TS_MS - 30_001)).unwrap_err();
    assert_eq!(
        err,
        AuthError::FromTheFuture {
            ahead: Duration::from_millis(30_001),
            max_skew: DEFAULT_MAX_FUTURE_SKEW
        }
    );
    // The seed's symmetric window accepts up to 300 s ahead, not more.
    let seed_like = verifier(AcceptedSchemes::Legacy).with_symmetric_window();
    assert_eq!(seed_like.max_future_skew(), DEFAULT_MAX_AGE);
    seed_like
        .verify(Some(&header), "GET", "/", b"", at_ms(TS_MS - 300_000))
        .unwrap();
    assert!(matches!(
        seed_like.verify(Some(&header), "GET", "/", b"", at_ms(TS_MS - 300_001)),
        Err(AuthError::FromTheFuture { .. })
    ));
    let tight = verifier(AcceptedSchemes::Legacy).with_max_future_skew(Duration::ZERO);
    assert!(tight.verify(Some(&header), "GET", "/", b"", t0()).is_ok());
    assert!(
        tight
            .verify(Some(&header), "GET", "/", b"", at_ms(TS_MS - 1))
            .is_err()
    );
}

#[test]
fn tampered_signature_is_rejected() {
    let header = signer().sign_legacy(t0());
    let last = header.chars().last().unwrap();
    let flipped = if last == '0' { '1' } else { '0' };
    let tampered = format!("{}{flipped}", &header[..header.len() - 1]);
    assert_eq!(
        legacy_verify(&tampered, t0()).unwrap_err(),
        AuthError::BadSignature
    );
    let zeros = with_signature(&header, &"0".repeat(64));
    assert_eq!(
        legacy_verify(&zeros, t0()).unwrap_err(),
        AuthError::BadSignature
    );
}

#[test]
fn tampered_timestamp_is_rejected() {
    let header = signer().sign_legacy(t0());
    let signature = header.rsplit_once('.').unwrap().1;
    let later = format!("Bearer {}.{signature}", TS_MS + 1000);
    assert_eq!(
        legacy_verify(&later, t0()).unwrap_err(),
        AuthError::BadSignature
    );
    // A leading zero changes the signed string even though the number is the same.
    let padded = format!("Bearer 0{TS_MS}.{signature}");
    assert_eq!(
        legacy_verify(&padded, t0()).unwrap_err(),
        AuthError::BadSignature
    );
}

#[test]
fn wrong_secret_is_rejected() {
    let other = Signer::new(Secret::new("another-secret")).unwrap();
    assert_eq!(
        legacy_verify(&other.sign_legacy(t0()), t0()).unwrap_err(),
        AuthError::BadSignature
    );
    let bound = other
        .sign_request("GET", "/api/snapshot", b"", t0())
        .unwrap();
    assert_eq!(
        verifier(AcceptedSchemes::RequestBound)
            .verify(Some(&bound), "GET", "/api/snapshot", b"", t0())
            .unwrap_err(),
        AuthError::BadSignature
    );
}

#[test]
fn missing_header() {
    let v = verifier(AcceptedSchemes::Both);
    assert_eq!(
        v.verify(None, "GET", "/", b"", t0()).unwrap_err(),
        AuthError::Missing
    );
    assert_eq!(
        v.verify(Some(""), "GET", "/", b"", t0()).unwrap_err(),
        AuthError::Missing
    );
}

#[test]
fn malformed_tokens_are_rejected() {
    let sig = "f9c1951b06cfb376544bc9d0f8c800dc0e73aacb4df82417a5f141a6ea8359f4";
    let cases = [
        // No or wrong `Bearer ` prefix.
        format!("{TS_MS}.{sig}"),
        format!("bearer {TS_MS}.{sig}"),
        format!("Bearer  {TS_MS}.{sig}"),
        format!("Basic {TS_MS}.{sig}"),
        "Bearer ".to_owned(),
        // Wrong number of parts, empty parts.
        format!("Bearer {TS_MS}"),
        format!("Bearer {TS_MS}.{sig}.extra"),
        format!("Bearer {TS_MS}..{sig}"),
        format!("Bearer .{sig}"),
        format!("Bearer {TS_MS}."),
        ".".to_owned(),
        format!("Bearer v2.{TS_MS}.{NONCE}.{sig}"),
        format!("Bearer v1.{TS_MS}.{NONCE}.{sig}.x"),
        // Timestamps that are not plain decimal digits.
        format!("Bearer 1739000000000.5.{sig}"),
        format!("Bearer abc.{sig}"),
        format!("Bearer -{TS_MS}.{sig}"),
        format!("Bearer +{TS_MS}.{sig}"),
        format!("Bearer 1_739_000_000_000.{sig}"),
        format!("Bearer 1e12.{sig}"),
        format!("Bearer ١٧٣٩.{sig}"),
        // Too many digits: would overflow, rejected before parsing.
        format!("Bearer 99999999999999999999999.{sig}"),
        format!("Bearer 12345678901234567.{sig}"),
        // Signatures that are not 64 lowercase hex characters.
        format!("Bearer {TS_MS}.{}", sig.to_uppercase()),
        format!("Bearer {TS_MS}.{}", &sig[..63]),
        format!("Bearer {TS_MS}.{sig}0"),
        format!("Bearer {TS_MS}.{}g", &sig[..63]),
        format!("Bearer {TS_MS}.{sig} "),
        // Nonces that are not 16 to 64 lowercase hex characters.
        format!("Bearer v1.{TS_MS}..{sig}"),
        format!("Bearer v1.{TS_MS}.abc.{sig}"),
        format!("Bearer v1.{TS_MS}.{}.{sig}", NONCE.to_uppercase()),
        format!("Bearer v1.{TS_MS}.{}.{sig}", "a".repeat(65)),
    ];
    let v = verifier(AcceptedSchemes::Both);
    for header in &cases {
        let err = v.verify(Some(header), "GET", "/", b"", t0()).unwrap_err();
        assert!(
            matches!(err, AuthError::Malformed { .. }),
            "{header:?} gave {err:?}"
        );
        assert_eq!(err.http_status(), 401);
    }
    // The longest timestamp accepted parses (and is far in the future).
    let header = format!("Bearer 9999999999999999.{sig}");
    assert!(matches!(
        v.verify(Some(&header), "GET", "/", b"", t0()),
        Err(AuthError::FromTheFuture { .. })
    ));
}

#[test]
fn empty_secret_is_a_configuration_error() {
    let err = Signer::new(Secret::new("")).unwrap_err();
    assert_eq!(err, AuthError::MissingSecret);
    assert!(err.is_config_error());
    assert_eq!(err.http_status(), 503);
    assert_eq!(
        Verifier::new(Secret::default(), AcceptedSchemes::Legacy).unwrap_err(),
        AuthError::MissingSecret
    );
}

#[test]
fn request_bound_known_answer() {
    let header = signer()
        .sign_request_with_nonce(
            "POST",
            "/api/create-sandbox?b=2&a=1",
            br#"{"a":1}"#,
            t0(),
            NONCE,
        )
        .unwrap();
    assert_eq!(header, BOUND_KNOWN_ANSWER);
    let token = verifier(AcceptedSchemes::RequestBound)
        .verify(
            Some(BOUND_KNOWN_ANSWER),
            "POST",
            "/api/create-sandbox?a=1&b=2",
            br#"{"a":1}"#,
            t0(),
        )
        .unwrap();
    assert_eq!(token.scheme, Scheme::RequestBound);
    assert_eq!(token.nonce.as_deref(), Some(NONCE));
    assert_eq!(token.issued_at, t0());
    assert_eq!(
        canonical_string(
            "1739000000000",
            NONCE,
            "post",
            "/api/create-sandbox?b=2&a=1",
            br#"{"a":1}"#
        )
        .unwrap(),
        "sandbox-request-v1\n1739000000000\n00112233445566778899aabbccddeeff\nPOST\n\
         /api/create-sandbox\na=1&b=2\n\
         015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    );
}

#[test]
fn bound_token_is_valid_only_for_its_request() {
    let body = br#"{"sandbox_id":"sb-1","reason":"manual"}"#;
    let header = signer()
        .sign_request("POST", "/api/snapshot-sandbox", body, t0())
        .unwrap();
    let v = verifier(AcceptedSchemes::RequestBound);
    v.verify(Some(&header), "POST", "/api/snapshot-sandbox", body, t0())
        .unwrap();
    // Lower-case method is the same method.
    v.verify(Some(&header), "post", "/api/snapshot-sandbox", body, t0())
        .unwrap();
    let others: [(&str, &str, &[u8]); 6] = [
        ("POST", "/api/restore-sandbox", body),
        ("PUT", "/api/snapshot-sandbox", body),
        (
            "POST",
            "/api/snapshot-sandbox",
            br#"{"sandbox_id":"sb-2","reason":"manual"}"#,
        ),
        ("POST", "/api/snapshot-sandbox", b""),
        ("POST", "/api/snapshot-sandbox?x=1", body),
        ("POST", "/api/snapshot-sandbox/", body),
    ];
    for (method, target, other_body) in others {
        assert_eq!(
            v.verify(Some(&header), method, target, other_body, t0())
                .unwrap_err(),
            AuthError::BadSignature,
            "{method} {target}"
        );
    }
    // The same expiry rules as legacy tokens.
    assert!(matches!(
        v.verify(
            Some(&header),
            "POST",
            "/api/snapshot-sandbox",
            body,
            at_ms(TS_MS + 300_001)
        ),
        Err(AuthError::Expired { .. })
    ));
    assert!(matches!(
        v.verify(
            Some(&header),
            "POST",
            "/api/snapshot-sandbox",
            body,
            at_ms(TS_MS - 30_001)
        ),
        Err(AuthError::FromTheFuture { .. })
    ));
}

#[test]
fn tampered_bound_tokens_are_rejected() {
    let header = signer()
        .sign_request_with_nonce("GET", "/api/snapshot?repo_owner=o", b"", t0(), NONCE)
        .unwrap();
    let v = verifier(AcceptedSchemes::RequestBound);
    let other_nonce = header.replace(NONCE, "ffeeddccbbaa99887766554433221100");
    let other_time = header.replace(&TS_MS.to_string(), &(TS_MS + 1).to_string());
    for tampered in [other_nonce, other_time] {
        assert_eq!(
            v.verify(
                Some(&tampered),
                "GET",
                "/api/snapshot?repo_owner=o",
                b"",
                t0()
            )
            .unwrap_err(),
            AuthError::BadSignature
        );
    }
}

#[test]
fn schemes_are_accepted_only_where_configured() {
    let legacy = signer().sign_legacy(t0());
    let bound = signer().sign_request("GET", "/x", b"", t0()).unwrap();
    let legacy_only = verifier(AcceptedSchemes::Legacy);
    let bound_only = verifier(AcceptedSchemes::RequestBound);
    let both = verifier(AcceptedSchemes::Both);
    assert_eq!(
        legacy_only
            .verify(Some(&bound), "GET", "/x", b"", t0())
            .unwrap_err(),
        AuthError::SchemeNotAccepted {
            scheme: Scheme::RequestBound
        }
    );
    assert_eq!(
        bound_only
            .verify(Some(&legacy), "GET", "/x", b"", t0())
            .unwrap_err(),
        AuthError::SchemeNotAccepted {
            scheme: Scheme::Legacy
        }
    );
    assert_eq!(
        both.verify(Some(&legacy), "GET", "/x", b"", t0())
            .unwrap()
            .scheme,
        Scheme::Legacy
    );
    assert_eq!(
        both.verify(Some(&bound), "GET", "/x", b"", t0())
            .unwrap()
            .scheme,
        Scheme::RequestBound
    );
    // `sign` dispatches on the configured scheme.
    let s = signer();
    assert!(
        s.sign(Scheme::Legacy, "GET", "/x", b"", t0())
            .unwrap()
            .starts_with("Bearer 1739")
    );
    assert!(
        s.sign(Scheme::RequestBound, "GET", "/x", b"", t0())
            .unwrap()
            .starts_with("Bearer v1.1739")
    );
    // Config names.
    let parsed: AcceptedSchemes = serde_json::from_str("\"both\"").unwrap();
    assert_eq!(parsed, AcceptedSchemes::Both);
    let parsed: Scheme = serde_json::from_str("\"request_bound\"").unwrap();
    assert_eq!(parsed, Scheme::RequestBound);
    assert_eq!(Scheme::Legacy.to_string(), "legacy");
}

#[test]
fn replayed_nonce_is_rejected_when_the_cache_is_on() {
    let cache = Arc::new(NonceCache::new(16));
    let v = verifier(AcceptedSchemes::Both).with_nonce_store(cache.clone());
    let header = signer()
        .sign_request("DELETE", "/api/sb-1", b"", t0())
        .unwrap();
    v.verify(Some(&header), "DELETE", "/api/sb-1", b"", t0())
        .unwrap();
    assert_eq!(
        v.verify(
            Some(&header),
            "DELETE",
            "/api/sb-1",
            b"",
            at_ms(TS_MS + 1000)
        )
        .unwrap_err(),
        AuthError::Replayed
    );
    assert_eq!(cache.len(), 1);
    // A clone of the verifier shares the cache.
    assert_eq!(
        v.clone()
            .verify(Some(&header), "DELETE", "/api/sb-1", b"", t0())
            .unwrap_err(),
        AuthError::Replayed
    );
    // A fresh token for the same request is fine.
    let again = signer()
        .sign_request("DELETE", "/api/sb-1", b"", t0())
        .unwrap();
    v.verify(Some(&again), "DELETE", "/api/sb-1", b"", t0())
        .unwrap();
    // A token with a bad signature never reaches the cache.
    let forged = format!("Bearer v1.{TS_MS}.{}.{}", "ab".repeat(16), "a".repeat(64));
    assert_eq!(
        v.verify(Some(&forged), "DELETE", "/api/sb-1", b"", t0())
            .unwrap_err(),
        AuthError::BadSignature
    );
    assert_eq!(cache.len(), 2);
    // Legacy tokens carry no nonce: the cache does not apply.
    let legacy = signer().sign_legacy(t0());
    v.verify(Some(&legacy), "GET", "/", b"", t0()).unwrap();
    v.verify(Some(&legacy), "GET", "/", b"", t0()).unwrap();
    // Without a cache, the same token passes twice.
    let no_cache = verifier(AcceptedSchemes::RequestBound);
    no_cache
        .verify(Some(&header), "DELETE", "/api/sb-1", b"", t0())
        .unwrap();
    no_cache
        .verify(Some(&header), "DELETE", "/api/sb-1", b"", t0())
        .unwrap();
}

#[test]
fn nonce_cache_forgets_expired_nonces_and_fails_closed_when_full() {
    let cache = NonceCache::new(2);
    let until = at_ms(TS_MS + 300_000);
    cache
        .check_and_record("aaaaaaaaaaaaaaaa", until, t0())
        .unwrap();
    cache
        .check_and_record("bbbbbbbbbbbbbbbb", until, t0())
        .unwrap();
    assert_eq!(
        cache.check_and_record("cccccccccccccccc", until, t0()),
        Err(AuthError::ReplayCacheFull)
    );
    assert_eq!(AuthError::ReplayCacheFull.http_status(), 503);
    // Still remembered at the last instant the tokens are valid...
    assert_eq!(
        cache.check_and_record("aaaaaaaaaaaaaaaa", until, until),
        Err(AuthError::Replayed)
    );
    // ...and forgotten after.
    let later = at_ms(TS_MS + 300_001);
    cache
        .check_and_record("cccccccccccccccc", at_ms(TS_MS + 600_000), later)
        .unwrap();
    assert_eq!(cache.len(), 1);
    assert!(!cache.is_empty());
    assert_eq!(cache.capacity(), 2);
    assert!(format!("{cache:?}").contains("capacity: 2"));
    assert_eq!(
        NonceCache::default().capacity(),
        DEFAULT_NONCE_CACHE_CAPACITY
    );
}

#[test]
fn canonical_query_matches_url_search_params_and_encode_uri_component() {
    assert_eq!(canonical_query(""), "");
    assert_eq!(canonical_query("b=2&a=1"), "a=1&b=2");
    assert_eq!(canonical_query("a=2&a=1"), "a=1&a=2");
    assert_eq!(canonical_query("flag&&x="), "flag=&x=");
    assert_eq!(canonical_query("q=a+b%20c"), "q=a%20b%20c");
    assert_eq!(canonical_query("k=%7e%21*'()"), "k=~!*'()");
    assert_eq!(canonical_query("k=%2F%3F%26%3D"), "k=%2F%3F%26%3D");
    assert_eq!(
        canonical_query("na%C3%AFve=%E2%9C%93"),
        "na%C3%AFve=%E2%9C%93"
    );
    assert_eq!(canonical_query("bad=%FF"), "bad=%EF%BF%BD");
    // Sorted by key then value bytes, with `\0` between them.
    assert_eq!(canonical_query("ab=1&a=2"), "a=2&ab=1");
}

#[test]
fn invalid_requests_cannot_be_signed_or_verified() {
    let s = signer();
    for (method, target) in [
        ("", "/x"),
        ("GET\n", "/x"),
        ("GE T", "/x"),
        ("GET", "x"),
        ("GET", ""),
        ("GET", "/a b"),
        ("GET", "/a\nb"),
        ("GET", "/a#frag"),
        ("GET", "/a?b=\n"),
        ("GET", "https://example.com/x"),
    ] {
        let err = s.sign_request(method, target, b"", t0()).unwrap_err();
        assert!(
            matches!(err, AuthError::InvalidRequest { .. }),
            "{method:?} {target:?}: {err:?}"
        );
    }
    assert!(matches!(
        s.sign_request_with_nonce("GET", "/x", b"", t0(), "short"),
        Err(AuthError::InvalidRequest { .. })
    ));
    let header = s.sign_request("GET", "/x", b"", t0()).unwrap();
    let err = verifier(AcceptedSchemes::RequestBound)
        .verify(Some(&header), "GET", "/x\n", b"", t0())
        .unwrap_err();
    assert_eq!(err.http_status(), 400);
}

#[test]
fn signer_makes_fresh_nonces() {
    let s = signer();
    let a = s.sign_request("GET", "/x", b"", t0()).unwrap();
    let b = s.sign_request("GET", "/x", b"", t0()).unwrap();
    assert_ne!(a, b);
    let nonce = a.split('.').nth(2).unwrap();
    assert_eq!(nonce.len(), NONCE_BYTES * 2);
    assert!(
        s.sign_request_now("GET", "/x", b"")
            .unwrap()
            .starts_with("Bearer v1.")
    );
    // The convenience methods use the clock.
    let v = verifier(AcceptedSchemes::Both);
    v.verify_now(Some(&s.sign_legacy_now()), "GET", "/", b"")
        .unwrap();
    v.verify_now(
        Some(&s.sign_request_now("GET", "/", b"").unwrap()),
        "GET",
        "/",
        b"",
    )
    .unwrap();
}

#[test]
fn messages_never_contain_the_secret_or_the_signature() {
    let secret = "hunter2-very-secret";
    let s = Signer::new(Secret::new(secret)).unwrap();
    let v = Verifier::new(Secret::new(secret), AcceptedSchemes::RequestBound)
        .unwrap()
        .with_nonce_store(Arc::new(NonceCache::new(1)));
    let header = s.sign_request("GET", "/x", b"", t0()).unwrap();
    let signature = header.rsplit_once('.').unwrap().1.to_owned();
    let mut errors = vec![
        v.verify(Some(&header), "GET", "/y", b"", t0()).unwrap_err(),
        v.verify(Some(&header), "GET", "/x", b"", at_ms(TS_MS + 400_000))
            .unwrap_err(),
        v.verify(Some(&header), "GET", "/x", b"", at_ms(TS_MS - 400_000))
            .unwrap_err(),
        v.verify(Some(&format!("{header}X")), "GET", "/x", b"", t0())
            .unwrap_err(),
        v.verify(Some(&s.sign_legacy(t0())), "GET", "/x", b"", t0())
            .unwrap_err(),
    ];
    v.verify(Some(&header), "GET", "/x", b"", t0()).unwrap();
    errors.push(v.verify(Some(&header), "GET", "/x", b"", t0()).unwrap_err());
    let other = s.sign_request("GET", "/x", b"", t0()).unwrap();
    errors.push(v.verify(Some(&other), "GET", "/x", b"", t0()).unwrap_err());
    errors.push(Signer::new(Secret::new("")).unwrap_err());
    for err in &errors {
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(secret), "{text}");
            assert!(!text.contains(&signature), "{text}");
            assert!(!text.contains(&signature[..16]), "{text}");
        }
    }
    for text in [format!("{s:?}"), format!("{v:?}")] {
        assert!(!text.contains(secret), "{text}");
    }
}

/// Runs `python3 -c script args...`; `None` (after printing `SKIPPED`) when python3 is not
/// installed.
fn python(script: &str, args: &[&str]) -> Option<String> {
    match Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "python3 failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("SKIPPED: python3 not found");
            None
        }
        Err(e) => panic!("running python3: {e}"),
    }
}

/// The seed's scheme, written from its description: `<ts>.<hex hmac(secret, ts)>`.
const PYTHON_SEED_TOKEN: &str = r#"
import hashlib, hmac, sys
secret, ts = sys.argv[1], sys.argv[2]
print(ts + "." + hmac.new(secret.encode(), ts.encode(), hashlib.sha256).hexdigest())
"#;

#[test]
fn tokens_made_like_the_seeds_python_are_accepted_and_identical() {
    for (secret, ts) in [
        (SECRET, TS_MS),
        ("späť-ключ-🔑 with spaces", 1_700_000_000_123),
        ("x", 1),
    ] {
        let Some(token) = python(PYTHON_SEED_TOKEN, &[secret, &ts.to_string()]) else {
            return;
        };
        let header = format!("Bearer {token}");
        let s = Signer::new(Secret::new(secret)).unwrap();
        assert_eq!(s.sign_legacy(at_ms(ts)), header);
        let v = Verifier::new(Secret::new(secret), AcceptedSchemes::Legacy).unwrap();
        let verified = v
            .verify(Some(&header), "GET", "/", b"", at_ms(ts + 1234))
            .unwrap();
        assert_eq!(verified.issued_at, at_ms(ts));
        let wrong = Verifier::new(Secret::new("not-it"), AcceptedSchemes::Legacy).unwrap();
        assert_eq!(
            wrong
                .verify(Some(&header), "GET", "/", b"", at_ms(ts))
                .unwrap_err(),
            AuthError::BadSignature
        );
    }
}

/// The request-bound scheme, written from the module docs only (a second implementation of
/// the canonical string).
const PYTHON_BOUND_TOKEN: &str = r#"
import hashlib, hmac, sys
from urllib.parse import parse_qsl, quote
secret, ts, nonce, method, target, body = sys.argv[1:7]
path, _, query = target.partition("?")
pairs = parse_qsl(query, keep_blank_values=True)
pairs.sort(key=lambda kv: (kv[0] + "\0" + kv[1]).encode())
safe = "-_.!~*'()"
cq = "&".join(quote(k, safe=safe) + "=" + quote(v, safe=safe) for k, v in pairs)
lines = ["sandbox-request-v1", ts, nonce, method.upper(), path, cq,
         hashlib.sha256(body.encode()).hexdigest()]
sig = hmac.new(secret.encode(), "\n".join(lines).encode(), hashlib.sha256).hexdigest()
print("Bearer v1." + ts + "." + nonce + "." + sig)
"#;

#[test]
fn request_bound_tokens_made_from_the_docs_in_python_are_accepted() {
    let cases: [(&str, &str, &str); 4] = [
        ("POST", "/api/create-sandbox?b=2&a=1", r#"{"a":1}"#),
        ("get", "/api/snapshot?repo_owner=acme&repo_name=web+app", ""),
        ("DELETE", "/sandboxes/sb%2F1?force&x=%E2%9C%93&x=a", ""),
        ("PUT", "/files/na%C3%AFve.txt", "héllo\nwörld"),
    ];
    for (method, target, body) in cases {
        let Some(header) = python(
            PYTHON_BOUND_TOKEN,
            &[SECRET, &TS_MS.to_string(), NONCE, method, target, body],
        ) else {
            return;
        };
        let ours = signer()
            .sign_request_with_nonce(method, target, body.as_bytes(), t0(), NONCE)
            .unwrap();
        assert_eq!(ours, header, "{method} {target}");
        verifier(AcceptedSchemes::RequestBound)
            .verify(Some(&header), method, target, body.as_bytes(), t0())
            .unwrap();
    }
}
