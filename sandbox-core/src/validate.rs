//! Validation rules, one function per kind of value. Each returns an
//! [`Error::InvalidSpec`] naming the field and the rule it broke.
//!
//! These run before any side effect: the spec builders, [`ExecRequest`](crate::ExecRequest)
//! and the id newtypes call them, so a value that reaches a backend has passed them. None of
//! these values is ever passed through a shell (commands are argv), but the rules are strict
//! anyway, so that a name is also safe as a label, a path component or a DNS name.

use std::time::Duration;

use crate::error::{Error, Result};

fn fail<T>(field: &str, reason: impl Into<String>) -> Result<T> {
    Err(Error::invalid_spec(field, reason))
}

/// Longest DNS-1123 label (session ids, template keys, Kubernetes names).
pub const DNS_LABEL_MAX_LEN: usize = 63;
/// Longest GitHub user or organisation name.
pub const GITHUB_OWNER_MAX_LEN: usize = 39;
/// Longest GitHub repository name.
pub const GITHUB_REPO_MAX_LEN: usize = 100;
/// Longest branch name accepted (git has no limit; refs are files, and 255 bytes is the usual
/// file name limit).
pub const BRANCH_MAX_LEN: usize = 255;
/// Longest environment variable name.
pub const ENV_KEY_MAX_LEN: usize = 255;
/// Longest environment variable value.
pub const ENV_VALUE_MAX_LEN: usize = 128 * 1024;
/// Longest URL.
pub const URL_MAX_LEN: usize = 2048;
/// Longest path inside a sandbox.
pub const PATH_MAX_LEN: usize = 4096;
/// Longest image reference.
pub const IMAGE_MAX_LEN: usize = 255;
/// Longest label value (Kubernetes' limit, so labels map onto every provider).
pub const LABEL_VALUE_MAX_LEN: usize = 63;
/// Longest label prefix (a DNS subdomain).
pub const LABEL_PREFIX_MAX_LEN: usize = 253;

fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<()> {
    if value.len() < min {
        return fail(
            field,
            if min == 1 {
                "must not be empty".to_string()
            } else {
                format!("must be at least {min} characters")
            },
        );
    }
    if value.len() > max {
        return fail(
            field,
            format!("must be at most {max} characters (got {})", value.len()),
        );
    }
    Ok(())
}

/// A lowercase RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
/// Used for session ids, template keys and anything that becomes a Kubernetes name.
pub fn dns_label(field: &str, value: &str) -> Result<()> {
    check_len(field, value, 1, DNS_LABEL_MAX_LEN)?;
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if let Some(c) = value.chars().find(|c| !ok_char(*c)) {
        return fail(
            field,
            format!(
                "must be a lowercase DNS-1123 label (a-z, 0-9, '-'); found {}",
                describe_char(c)
            ),
        );
    }
    if value.starts_with('-') || value.ends_with('-') {
        return fail(
            field,
            "must start and end with a lowercase letter or digit (DNS-1123 label)",
        );
    }
    Ok(())
}

/// A GitHub user or organisation name: ASCII letters, digits and single hyphens, not starting
/// or ending with a hyphen, at most 39 characters.
pub fn github_owner(field: &str, value: &str) -> Result<()> {
    check_len(field, value, 1, GITHUB_OWNER_MAX_LEN)?;
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return fail(
            field,
            format!(
                "must be a GitHub owner name (letters, digits, '-'); found {}",
                describe_char(c)
            ),
        );
    }
    if value.starts_with('-') || value.ends_with('-') {
        return fail(field, "must not start or end with '-'");
    }
    if value.contains("--") {
        return fail(field, "must not contain consecutive hyphens");
    }
    Ok(())
}

/// A GitHub repository name: ASCII letters, digits, `.`, `_`, `-`, at most 100 characters,
/// not `.` or `..`.
pub fn github_repo(field: &str, value: &str) -> Result<()> {
    check_len(field, value, 1, GITHUB_REPO_MAX_LEN)?;
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return fail(
            field,
            format!(
                "must be a GitHub repository name (letters, digits, '.', '_', '-'); found {}",
                describe_char(c)
            ),
        );
    }
    if value == "." || value == ".." {
        return fail(field, "must not be `.` or `..`");
    }
    Ok(())
}

/// A branch name as `git check-ref-format --branch` accepts it (for a plain name, not the
/// `@{-N}` shorthand) and as `git branch` creates it, bounded to 255 bytes.
///
/// The rules of `git check-ref-format`: no component starts with `.` or ends with `.lock`;
/// no `..`; no ASCII control character, space, `~`, `^`, `:`, `?`, `*`, `[` or `\`; does not
/// start or end with `/` and has no `//`; does not end with `.`; no `@{`. As a branch it must
/// also not start with `-` and not be `HEAD`.
pub fn git_branch(field: &str, value: &str) -> Result<()> {
    check_len(field, value, 1, BRANCH_MAX_LEN)?;
    if let Some(c) = value.chars().find(|c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return fail(
            field,
            format!(
                "must be a valid git branch name (git check-ref-format): {} is not allowed",
                describe_char(c)
            ),
        );
    }
    let rule = |reason: &str| {
        fail(
            field,
            format!("must be a valid git branch name (git check-ref-format): {reason}"),
        )
    };
    if value.starts_with('-') {
        return rule("must not start with '-'");
    }
    if value == "HEAD" {
        return rule("must not be `HEAD`");
    }
    if value.contains("..") {
        return rule("must not contain `..`");
    }
    if value.contains("@{") {
        return rule("must not contain `@{`");
    }
    if value.starts_with('/') || value.ends_with('/') || value.contains("//") {
        return rule("must not start or end with '/' or contain '//'");
    }
    if value.ends_with('.') {
        return rule("must not end with '.'");
    }
    for component in value.split('/') {
        if component.starts_with('.') {
            return rule("no path component may start with '.'");
        }
        if component.ends_with(".lock") {
            return rule("no path component may end with `.lock`");
        }
    }
    Ok(())
}

/// A git commit id: 7 to 64 lowercase hex digits (abbreviated, SHA-1 or SHA-256).
pub fn git_sha(field: &str, value: &str) -> Result<()> {
    check_len(field, value, 7, 64)?;
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_digit() || ('a'..='f').contains(c)))
    {
        return fail(
            field,
            format!(
                "must be lowercase hex (a git commit id); found {}",
                describe_char(c)
            ),
        );
    }
    Ok(())
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 255 characters.
pub fn env_key(field: &str, value: &str) -> Result<()> {
    check_len(field, value, 1, ENV_KEY_MAX_LEN)?;
    let mut chars = value.chars();
    let first = chars.next().unwrap_or('0');
    if !(first.is_ascii_alphabetic() || first == '_') {
        return fail(
            field,
            "must start with a letter or '_' (environment variable name)",
        );
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
        return fail(
            field,
            format!(
                "must contain only letters, digits and '_' (environment variable name); found {}",
                describe_char(c)
            ),
        );
    }
    Ok(())
}

/// An environment variable value: no NUL byte, at most 128 KiB.
pub fn env_value(field: &str, value: &str) -> Result<()> {
    check_len(field, value, 0, ENV_VALUE_MAX_LEN)?;
    no_nul(field, value)
}

/// Any string that becomes a C string (argv, paths): no NUL byte.
pub fn no_nul(field: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return fail(field, "must not contain a NUL byte");
    }
    Ok(())
}

/// An `http` or `https` URL with a host, without credentials, at most 2048 characters.
pub fn http_url(field: &str, value: &str) -> Result<url::Url> {
    check_len(field, value, 1, URL_MAX_LEN)?;
    let url = url::Url::parse(value)
        .or_else(|e| fail(field, format!("must be an absolute http(s) URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return fail(
            field,
            format!("scheme must be http or https, not `{}`", url.scheme()),
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        return fail(field, "must have a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return fail(field, "must not carry credentials (user:password@)");
    }
    Ok(url)
}

/// An absolute path inside a sandbox: starts with `/`, no `..` component, no NUL, at most
/// 4096 bytes.
pub fn absolute_path(field: &str, value: &str) -> Result<()> {
    check_len(field, value, 1, PATH_MAX_LEN)?;
    no_nul(field, value)?;
    if !value.starts_with('/') {
        return fail(field, "must be an absolute path (start with '/')");
    }
    if value.split('/').any(|c| c == "..") {
        return fail(field, "must not contain a `..` component");
    }
    Ok(())
}

/// A path for a file operation inside a sandbox: absolute, or relative to `workdir`. Returns
/// the absolute path, normalized (no `.` components, no repeated `/`). `..` components are
/// rejected rather than resolved, so a path can never climb out of the directory it names.
pub fn sandbox_path(field: &str, workdir: &str, path: &str) -> Result<String> {
    check_len(field, path, 1, PATH_MAX_LEN)?;
    no_nul(field, path)?;
    if path.split('/').any(|c| c == "..") {
        return fail(field, "must not contain a `..` component");
    }
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", workdir.trim_end_matches('/'))
    };
    let parts: Vec<&str> = joined
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() {
        return fail(field, "must name a file, not `/`");
    }
    Ok(format!("/{}", parts.join("/")))
}

/// A container image reference (`name[:tag][@digest]`): lowercase repository path, at most
/// 255 characters, made of letters, digits and `._-/:@`.
pub fn image_ref(field: &str, value: &str) -> Result<()> {
    check_len(field, value, 1, IMAGE_MAX_LEN)?;
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@')))
    {
        return fail(
            field,
            format!(
                "must be an image reference (name[:tag][@digest]); found {}",
                describe_char(c)
            ),
        );
    }
    let name = value.split('@').next().unwrap_or_default();
    let repo = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => {
            if tag.is_empty() {
                return fail(field, "has an empty tag after ':'");
            }
            repo
        }
        _ => name,
    };
    if repo.is_empty() || repo.starts_with(['/', '-', '.', ':']) || repo.ends_with('/') {
        return fail(field, "must start with a repository name");
    }
    // The registry host may hold capitals and a port; the path after it must be lowercase.
    let path = match repo.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => repo,
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return fail(field, "repository path must be lowercase");
    }
    Ok(())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` (the Kubernetes rule, so labels map
/// onto every provider).
pub fn label_key(field: &str, value: &str) -> Result<()> {
    let (prefix, name) = match value.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    if let Some(prefix) = prefix {
        check_len(field, prefix, 1, LABEL_PREFIX_MAX_LEN)?;
        for part in prefix.split('.') {
            dns_label(field, part).or_else(|_| {
                fail(
                    field,
                    "label prefix must be a lowercase DNS subdomain (e.g. example.com/)",
                )
            })?;
        }
    }
    label_name(field, name, 1)
}

/// A label value: empty, or like a label name (at most 63 characters).
pub fn label_value(field: &str, value: &str) -> Result<()> {
    label_name(field, value, 0)
}

fn label_name(field: &str, value: &str, min: usize) -> Result<()> {
    check_len(field, value, min, LABEL_VALUE_MAX_LEN)?;
    if value.is_empty() {
        return Ok(());
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return fail(
            field,
            format!(
                "labels allow letters, digits, '-', '_', '.'; found {}",
                describe_char(c)
            ),
        );
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !value.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return fail(field, "labels must start and end with a letter or digit");
    }
    Ok(())
}

/// A duration within `min..=max`.
pub fn duration_within(field: &str, value: Duration, min: Duration, max: Duration) -> Result<()> {
    if value < min || value > max {
        return fail(
            field,
            format!(
                "must be between {} and {} (got {})",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(value)
            ),
        );
    }
    Ok(())
}

/// An integer within `min..=max`, with its unit for the message.
pub fn number_within(field: &str, value: u64, min: u64, max: u64, unit: &str) -> Result<()> {
    if value < min || value > max {
        return fail(
            field,
            format!("must be between {min} and {max} {unit} (got {value})"),
        );
    }
    Ok(())
}

/// A generic identifier: `[A-Za-z0-9][A-Za-z0-9._:-]*`, at most `max` characters. Used for
/// provider-made ids (sandbox ids, snapshot ids) that are not DNS labels everywhere.
pub fn identifier(field: &str, value: &str, max: usize) -> Result<()> {
    check_len(field, value, 1, max)?;
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return fail(field, "must start with a letter or digit");
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return fail(
            field,
            format!(
                "must contain only letters, digits, '.', '_', ':', '-'; found {}",
                describe_char(c)
            ),
        );
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("`{c}`")
    } else {
        format!("U+{:04X}", c as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<()>) -> String {
        match r {
            Err(Error::InvalidSpec { field, .. }) => field,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "abc-123", "0", &"a".repeat(63)] {
            dns_label("f", ok).unwrap();
        }
        for bad in [
            "",
            "A",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "a b",
            "a;rm",
            &"a".repeat(64),
            "é",
        ] {
            assert_eq!(
                field_of(dns_label("session_id", bad)),
                "session_id",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn github_names() {
        for ok in ["octocat", "Octo-Cat", "a1"] {
            github_owner("f", ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "a_b",
            "a.b",
            "a/b",
            &"a".repeat(40),
            "$(id)",
        ] {
            assert!(github_owner("f", bad).is_err(), "{bad:?}");
        }
        for ok in ["repo", "my.repo_name-2", ".github", "a..b"] {
            github_repo("f", ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "a;b", "`x`", &"a".repeat(101)] {
            assert!(github_repo("f", bad).is_err(), "{bad:?}");
        }
    }

    /// Cases from git's own t1402-check-ref-format.sh (with `--branch` semantics).
    #[test]
    fn branches_follow_git_check_ref_format() {
        for ok in [
            "main",
            "feature/x",
            "foo/bar/baz",
            "heads/foo",
            "a;b",
            "$(x)",
            "@x",
            "foo.bar",
            "a@b",
            "x{y}",
            "@",
        ] {
            git_branch("f", ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [
            "",
            "-main",
            "HEAD",
            "a..b",
            "a@{b",
            "/a",
            "a/",
            "a//b",
            "a.",
            ".a",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            "a b",
            "a~b",
            "a^b",
            "a:b",
            "a?b",
            "a*b",
            "a[b",
            "a\\b",
            "a\u{7f}b",
            "a\tb",
            "a\0b",
        ] {
            assert!(git_branch("branch", bad).is_err(), "{bad:?} accepted");
        }
        assert!(git_branch("b", &"a".repeat(256)).is_err());
    }

    /// Compare with the real `git check-ref-format --branch` when git is installed.
    #[test]
    fn branches_agree_with_git_when_available() {
        let Ok(out) = std::process::Command::new("git").arg("--version").output() else {
            eprintln!("SKIPPED: git not installed");
            return;
        };
        assert!(out.status.success());
        let cases = [
            "main",
            "a..b",
            "a/.b",
            "a.lock",
            "-x",
            "a b",
            "x/y",
            "a;b",
            "a@{b",
            "a.",
            "@",
            "feature/ok-1",
            "a//b",
            "/a",
            "a~1",
            "é",
            "a$b",
        ];
        for case in cases {
            // `--branch` also expands shorthands (`@`, `@{-1}`); the rule for a plain name is
            // the rule for `refs/heads/<name>`, plus no leading '-'.
            let git_ok = !case.starts_with('-')
                && std::process::Command::new("git")
                    .args(["check-ref-format", &format!("refs/heads/{case}")])
                    .output()
                    .unwrap()
                    .status
                    .success();
            assert_eq!(
                git_branch("b", case).is_ok(),
                git_ok,
                "disagree with git on {case:?}"
            );
        }
    }

    #[test]
    fn env_keys_and_values() {
        for ok in ["A", "_A", "PATH", "a_1"] {
            env_key("f", ok).unwrap();
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "$A", "A;B"] {
            assert!(env_key("f", bad).is_err(), "{bad:?}");
        }
        env_value("f", "anything $(goes) ; here").unwrap();
        assert!(env_value("f", "a\0b").is_err());
    }

    #[test]
    fn urls() {
        http_url("f", "https://cp.example.com/path").unwrap();
        http_url("f", "http://127.0.0.1:8787").unwrap();
        for bad in [
            "",
            "cp.example.com",
            "ftp://x",
            "file:///etc/passwd",
            "https://user:pw@x.com",
            "http://",
            "javascript:alert(1)",
        ] {
            assert!(http_url("control_plane_url", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        absolute_path("f", "/workspace").unwrap();
        absolute_path("f", "/a/b.c/..d").unwrap();
        for bad in ["", "workspace", "/a/../b", "/..", "/a\0"] {
            assert!(absolute_path("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sandbox_paths() {
        assert_eq!(
            sandbox_path("p", "/workspace", "a/b.txt").unwrap(),
            "/workspace/a/b.txt"
        );
        assert_eq!(
            sandbox_path("p", "/workspace/", "./a//b").unwrap(),
            "/workspace/a/b"
        );
        assert_eq!(sandbox_path("p", "/workspace", "/tmp/x").unwrap(), "/tmp/x");
        for bad in ["", "../etc/passwd", "a/../../b", "/a/..", "a\0b", "/", "//"] {
            assert!(sandbox_path("path", "/workspace", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn images() {
        for ok in [
            "busybox",
            "sandbox-test/busybox:latest",
            "registry.example.com:5000/team/img:1.0",
            "localhost/x",
            "img@sha256:abc",
            "Registry.IO/x",
        ] {
            image_ref("f", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "Busybox", "a b", "a;b", "/x", "x:", "-x", "x/"] {
            assert!(image_ref("image", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels() {
        for ok in ["app", "example.com/app", "a.b-c_d", "sandbox.rs/session-id"] {
            label_key("f", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "/app",
            "Ex.com/app",
            "a/b/c!",
            "-a",
            "a-",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(label_key("f", bad).is_err(), "{bad:?}");
        }
        label_value("f", "").unwrap();
        label_value("f", "v1.2").unwrap();
        for bad in ["-v", "a b", "a;b", &"a".repeat(64)] {
            assert!(label_value("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bounds() {
        let s = Duration::from_secs;
        duration_within("t", s(5), s(1), s(10)).unwrap();
        assert!(duration_within("timeout", s(11), s(1), s(10)).is_err());
        assert!(duration_within("timeout", Duration::ZERO, s(1), s(10)).is_err());
        number_within("n", 5, 1, 10, "x").unwrap();
        let e = number_within("resources.pids", 0, 1, 10, "processes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid `resources.pids`: must be between 1 and 10 processes (got 0)"
        );
    }

    #[test]
    fn identifiers() {
        identifier("f", "sbx-abc", 128).unwrap();
        identifier("f", "sha256:abc", 128).unwrap();
        for bad in ["", "-a", "a/b", "a b", "a;b", "../x"] {
            assert!(identifier("f", bad, 128).is_err(), "{bad:?}");
        }
    }
}
