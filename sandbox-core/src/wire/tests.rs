//! Round trips on JSON shaped exactly like the seed's (written from its bridge.py, types.py,
//! manager.py, web_api.py and control-plane TypeScript at `bc2482a4a`).

use std::collections::BTreeSet;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::*;

const EVENTS: &str = include_str!("../../tests/fixtures/wire/bridge_events.json");
const COMMANDS: &str = include_str!("../../tests/fixtures/wire/sandbox_commands.json");
const SESSION_CONFIGS: &str = include_str!("../../tests/fixtures/wire/session_config.json");
const API_RESPONSES: &str = include_str!("../../tests/fixtures/wire/api_responses.json");

fn fixture(file: &str, name: &str) -> Value {
    let all: JsonObject = serde_json::from_str(file).unwrap();
    all.get(name)
        .unwrap_or_else(|| panic!("no fixture `{name}`"))
        .clone()
}

fn names(file: &str) -> Vec<String> {
    let all: JsonObject = serde_json::from_str(file).unwrap();
    all.keys().cloned().collect()
}

/// Deserializes the JSON *text* (not the `Value`, to go through the same path as a WebSocket
/// frame), serializes the result and checks it equals the original.
fn round_trip<T: Serialize + DeserializeOwned>(original: &Value) -> T {
    let parsed: T =
        serde_json::from_str(&original.to_string()).unwrap_or_else(|e| panic!("{original}: {e}"));
    let back = serde_json::to_value(&parsed).unwrap();
    assert_eq!(&back, original, "round trip changed the JSON");
    parsed
}

fn event(name: &str) -> BridgeEvent {
    let e: BridgeEvent = round_trip(&fixture(EVENTS, name));
    assert_eq!(e.sandbox_id, "sb-acme-web-1739000000000");
    assert!(e.timestamp > 1_739_000_000.0 && e.timestamp < 1_739_001_000.0);
    assert_eq!(e.ack_id, None);
    e
}

fn command(name: &str) -> SandboxCommand {
    round_trip(&fixture(COMMANDS, name))
}

#[test]
fn every_event_fixture_round_trips_and_every_type_is_covered() {
    let mut seen = BTreeSet::new();
    for name in names(EVENTS) {
        let original = fixture(EVENTS, &name);
        let e: BridgeEvent = round_trip(&original);
        assert_eq!(
            Some(e.kind.event_type()),
            original["type"].as_str(),
            "{name}"
        );
        seen.insert(e.kind.event_type().to_owned());
    }
    for t in BRIDGE_EVENT_TYPES {
        assert!(seen.contains(t), "no fixture for `{t}`");
    }
}

#[test]
fn ready() {
    let BridgeEventKind::Ready(e) = event("ready").kind else {
        panic!()
    };
    assert_eq!(
        e.opencode_session_id.as_deref(),
        Some("ses_3f2a9c1e7ffeAbCdEfGhIjKlMn")
    );
    let BridgeEventKind::Ready(e) = event("ready_first_connection").kind else {
        panic!()
    };
    assert_eq!(e.opencode_session_id, None);
}

#[test]
fn heartbeat() {
    let ev = event("heartbeat");
    assert_eq!(ev.timestamp, 1739000042.3461642);
    let BridgeEventKind::Heartbeat(e) = ev.kind else {
        panic!()
    };
    assert_eq!(e.status, "ready");
    assert_eq!(e.sandbox_status(), Some(SessionSandboxStatus::Ready));
    assert_eq!(
        HeartbeatEvent {
            status: "dozing".into()
        }
        .sandbox_status(),
        None
    );
}

#[test]
fn token() {
    let ev = event("token");
    assert_eq!(ev.kind.message_id(), Some("msg-01JKZ8Q3"));
    let BridgeEventKind::Token(e) = ev.kind else {
        panic!()
    };
    assert_eq!(
        e.content,
        "I'll start by looking at the failing test in `src/auth.ts`."
    );
}

#[test]
fn tool_call() {
    let BridgeEventKind::ToolCall(e) = event("tool_call_running").kind else {
        panic!()
    };
    assert_eq!(e.tool, "bash");
    assert_eq!(e.args["command"], "npm test -- auth");
    assert_eq!(e.call_id, "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(e.status, "running");
    assert_eq!(e.output, "");
    assert_eq!(e.message_id, "msg-01JKZ8Q3");
    let BridgeEventKind::ToolCall(e) = event("tool_call_completed").kind else {
        panic!()
    };
    assert_eq!(e.status, "completed");
    assert_eq!(e.args["replaceAll"], false);
    assert_eq!(e.output, "Edit applied successfully.");
}

#[test]
fn tool_result() {
    let ev = event("tool_result");
    assert_eq!(ev.kind.message_id(), Some("msg-01JKZ8Q3"));
    let BridgeEventKind::ToolResult(e) = ev.kind else {
        panic!()
    };
    assert_eq!(e.call_id, "toolu_01B");
    assert_eq!(e.result, "ok");
    assert_eq!(e.error.as_deref(), Some("exit status 1"));
}

#[test]
fn step_start_and_finish() {
    let BridgeEventKind::StepStart(e) = event("step_start").kind else {
        panic!()
    };
    assert_eq!(e.message_id, "msg-01JKZ8Q3");

    let BridgeEventKind::StepFinish(e) = event("step_finish").kind else {
        panic!()
    };
    assert_eq!(e.cost, Some(0.0123465));
    assert_eq!(e.reason.as_deref(), Some("tool-calls"));
    let usage = e.token_usage().unwrap();
    assert_eq!(usage.input, Some(1204));
    assert_eq!(usage.output, Some(85));
    assert_eq!(usage.reasoning, Some(0));
    assert_eq!(usage.cache_read, Some(5400));
    assert_eq!(usage.cache_write, Some(312));

    let BridgeEventKind::StepFinish(e) = event("step_finish_nulls").kind else {
        panic!()
    };
    assert_eq!((e.cost, &e.tokens, &e.reason), (None, &None, &None));
    assert_eq!(e.token_usage(), None);
    assert_eq!(
        TokenUsage::from_json(&json!({"input": "many", "output": 1.5})),
        TokenUsage::default()
    );
}

#[test]
fn integer_cost_and_timestamp_read_as_the_same_float() {
    let original = json!({"type": "step_finish", "cost": 0, "tokens": {}, "reason": "stop",
        "messageId": "m", "sandboxId": "s", "timestamp": 1739000000});
    let e: BridgeEvent = serde_json::from_value(original).unwrap();
    assert_eq!(e.timestamp, 1_739_000_000.0);
    let BridgeEventKind::StepFinish(f) = &e.kind else {
        panic!()
    };
    assert_eq!(f.cost, Some(0.0));
    let back = serde_json::to_value(&e).unwrap();
    assert_eq!(back["cost"].as_f64(), Some(0.0));
    assert_eq!(back["timestamp"].as_f64(), Some(1_739_000_000.0));
}

#[test]
fn error() {
    let BridgeEventKind::Error(e) = event("error").kind else {
        panic!()
    };
    assert_eq!(
        e.error,
        "Agent failed to generate a response. The LLM API may be unavailable."
    );
    assert_eq!(e.message_id, "msg-01JKZ8Q3");
}

#[test]
fn execution_complete() {
    let BridgeEventKind::ExecutionComplete(e) = event("execution_complete").kind else {
        panic!()
    };
    assert!(e.success);
    assert_eq!(e.error, None);
    assert_eq!(e.message_id, "msg-01JKZ8Q3");
    let BridgeEventKind::ExecutionComplete(e) = event("execution_complete_failed").kind else {
        panic!()
    };
    assert!(!e.success);
    assert_eq!(e.error.as_deref(), Some("Task was cancelled"));
    // The control plane's TypeScript type allows `error` to be absent.
    let e: BridgeEvent = serde_json::from_value(json!({"type": "execution_complete",
        "messageId": "m", "success": true, "sandboxId": "s", "timestamp": 1.5}))
    .unwrap();
    assert!(matches!(e.kind, BridgeEventKind::ExecutionComplete(ref c) if c.error.is_none()));
}

#[test]
fn snapshot_ready() {
    let BridgeEventKind::SnapshotReady(e) = event("snapshot_ready").kind else {
        panic!()
    };
    assert_eq!(
        e.opencode_session_id.as_deref(),
        Some("ses_3f2a9c1e7ffeAbCdEfGhIjKlMn")
    );
}

#[test]
fn push_complete_and_error() {
    let BridgeEventKind::PushComplete(e) = event("push_complete").kind else {
        panic!()
    };
    assert_eq!(e.branch_name, "open-inspect/fix-auth-off-by-one");
    let BridgeEventKind::PushError(e) = event("push_error").kind else {
        panic!()
    };
    assert_eq!(e.error, "Push failed - authentication may be required");
    assert_eq!(
        e.branch_name.as_deref(),
        Some("open-inspect/fix-auth-off-by-one")
    );
    let BridgeEventKind::PushError(e) = event("push_error_no_repository").kind else {
        panic!()
    };
    assert_eq!(e.error, "No repository found");
    assert_eq!(e.branch_name, None);
}

#[test]
fn git_sync() {
    let BridgeEventKind::GitSync(e) = event("git_sync").kind else {
        panic!()
    };
    assert_eq!(e.status, GitSyncStatus::Completed);
    assert_eq!(
        e.sha.as_deref(),
        Some("9fceb02d0ae598e95dc970b74767f19372d61af8")
    );
    let BridgeEventKind::GitSync(e) = event("git_sync_in_progress").kind else {
        panic!()
    };
    assert_eq!(e.status, GitSyncStatus::InProgress);
    assert_eq!((e.sha, e.error), (None, None));
}

#[test]
fn artifact() {
    let BridgeEventKind::Artifact(e) = event("artifact").kind else {
        panic!()
    };
    assert_eq!(e.artifact_type, "pr");
    assert_eq!(e.url, "https://github.com/acme/web/pull/42");
    assert_eq!(e.metadata.unwrap()["number"], 42);
    let BridgeEventKind::Artifact(e) = event("artifact_without_metadata").kind else {
        panic!()
    };
    assert_eq!(e.artifact_type, "screenshot");
    assert_eq!(e.metadata, None);
}

#[test]
fn unknown_event_types_are_kept_whole() {
    let original = fixture(EVENTS, "unknown_later_seed_event");
    let e: BridgeEvent = round_trip(&original);
    assert_eq!(e.ack_id.as_deref(), Some("ack-7"));
    assert_eq!(e.kind.event_type(), "session_title");
    assert_eq!(e.kind.message_id(), None);
    let BridgeEventKind::Unknown { event_type, fields } = &e.kind else {
        panic!()
    };
    assert_eq!(event_type, "session_title");
    assert_eq!(fields["title"], "Fix off-by-one in token expiry");
    assert!(!fields.contains_key("sandboxId") && !fields.contains_key("type"));
}

#[test]
fn ack_id_of_later_seeds_is_kept_on_known_events() {
    let mut original = fixture(EVENTS, "execution_complete");
    original["ackId"] = json!("ack-9");
    let e: BridgeEvent = round_trip(&original);
    assert_eq!(e.ack_id.as_deref(), Some("ack-9"));
}

#[test]
fn malformed_known_events_are_errors_not_unknown() {
    let cases = [
        // A known type missing a field, or with a field of the wrong type.
        (
            json!({"type": "token", "messageId": "m", "sandboxId": "s", "timestamp": 1.5}),
            "invalid `token`: missing field `content`",
        ),
        (
            json!({"type": "execution_complete", "messageId": "m", "success": "yes",
                "sandboxId": "s", "timestamp": 1.5}),
            "invalid `execution_complete`",
        ),
        (
            json!({"type": "git_sync", "status": "exploded", "sandboxId": "s", "timestamp": 1.5}),
            "invalid `git_sync`",
        ),
        // The envelope.
        (
            json!({"content": "x", "messageId": "m", "sandboxId": "s", "timestamp": 1.5}),
            "missing field `type`",
        ),
        (
            json!({"type": 3, "sandboxId": "s", "timestamp": 1.5}),
            "`type` is not a string",
        ),
        (
            json!({"type": "stop", "timestamp": 1.5}),
            "missing field `sandboxId`",
        ),
        (
            json!({"type": "stop", "sandboxId": "s", "timestamp": "now"}),
            "`timestamp` is not a number",
        ),
        (
            json!({"type": "stop", "sandboxId": "s"}),
            "missing field `timestamp`",
        ),
        (json!(["token"]), "invalid type"),
    ];
    for (json, message) in cases {
        let err = serde_json::from_str::<BridgeEvent>(&json.to_string()).unwrap_err();
        assert!(
            err.to_string().contains(message),
            "{json}: `{err}` lacks `{message}`"
        );
    }
}

#[test]
fn events_built_in_rust_serialize_like_the_seed() {
    let at = UNIX_EPOCH + Duration::from_millis(1_739_000_071_125);
    let e = BridgeEvent::new(
        "sb-1",
        at,
        BridgeEventKind::ExecutionComplete(ExecutionCompleteEvent {
            message_id: "m".into(),
            success: true,
            error: None,
        }),
    );
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"type": "execution_complete", "messageId": "m", "success": true,
            "error": null, "sandboxId": "sb-1", "timestamp": 1739000071.125})
    );
    assert_eq!(e.sent_at(), Some(at));
    let bad = BridgeEvent {
        timestamp: -1.0,
        ..e
    };
    assert_eq!(bad.sent_at(), None);
}

#[test]
fn every_command_fixture_round_trips_and_every_type_is_covered() {
    let mut seen = BTreeSet::new();
    for name in names(COMMANDS) {
        let original = fixture(COMMANDS, &name);
        let c = command(&name);
        assert_eq!(Some(c.command_type()), original["type"].as_str(), "{name}");
        seen.insert(c.command_type().to_owned());
    }
    for t in SANDBOX_COMMAND_TYPES {
        assert!(seen.contains(t), "no fixture for `{t}`");
    }
}

#[test]
fn prompt() {
    let SandboxCommand::Prompt(p) = command("prompt") else {
        panic!()
    };
    assert_eq!(p.message_id, "msg-01JKZ8Q3");
    assert_eq!(
        p.content,
        "The auth test fails on tokens exactly 5 minutes old; fix it."
    );
    assert_eq!(p.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(p.reasoning_effort.as_deref(), Some("high"));
    assert_eq!(p.author.user_id, "user-9");
    assert_eq!(p.author.github_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(p.author.github_email.as_deref(), Some("ada@example.com"));
    assert!(p.author.extra.is_empty());
    assert_eq!(p.attachments, None);

    let SandboxCommand::Prompt(p) = command("prompt_minimal") else {
        panic!()
    };
    assert_eq!(p.reasoning_effort, None);
    assert_eq!(p.author.user_id, "unknown");
    assert_eq!((p.author.github_name, p.author.github_email), (None, None));
    let attachments = p.attachments.unwrap();
    assert_eq!(attachments.len(), 2);
    assert_eq!(attachments[0].kind, "image");
    assert_eq!(attachments[0].mime_type.as_deref(), Some("image/png"));
    assert_eq!(attachments[1].content.as_deref(), Some("see line 42"));
    assert_eq!(attachments[1].url, None);
}

#[test]
fn prompt_author_keeps_fields_of_later_seeds() {
    let original = json!({"type": "prompt", "messageId": "m", "content": "c",
        "author": {"userId": "u", "githubName": null, "githubEmail": null,
                   "scmName": "Ada", "gitIdentity": {"mode": "user"}}});
    let SandboxCommand::Prompt(p) = round_trip::<SandboxCommand>(&original) else {
        panic!()
    };
    assert_eq!(p.author.extra["scmName"], "Ada");
}

#[test]
fn unit_commands() {
    assert!(matches!(command("stop"), SandboxCommand::Stop));
    assert!(matches!(command("snapshot"), SandboxCommand::Snapshot));
    assert!(matches!(command("shutdown"), SandboxCommand::Shutdown));
    assert!(matches!(
        command("git_sync_complete"),
        SandboxCommand::GitSyncComplete
    ));
}

#[test]
fn push_keeps_its_credential_out_of_debug() {
    let c = command("push");
    let text = format!("{c:?}");
    assert!(!text.contains("ghs_16C7e42F"), "{text}");
    let SandboxCommand::Push(p) = c else { panic!() };
    let spec = p.push_spec;
    assert_eq!(
        spec.remote_url.expose(),
        "https://x-access-token:ghs_16C7e42F292c6912E7710c838347Ae178B4a@github.com/acme/web.git"
    );
    assert_eq!(
        spec.redacted_remote_url,
        "https://x-access-token:<redacted>@github.com/acme/web.git"
    );
    assert_eq!(
        spec.refspec,
        "HEAD:refs/heads/open-inspect/fix-auth-off-by-one"
    );
    assert_eq!(spec.target_branch, "open-inspect/fix-auth-off-by-one");
    assert!(spec.force);
}

#[test]
fn unknown_commands_are_kept_whole_and_malformed_known_ones_are_errors() {
    let c = command("unknown_later_seed_command");
    let SandboxCommand::Unknown {
        command_type,
        fields,
    } = &c
    else {
        panic!()
    };
    assert_eq!(command_type, "ack");
    assert_eq!(fields["ackId"], "ack-7");

    let err = serde_json::from_str::<SandboxCommand>(r#"{"type": "push"}"#).unwrap_err();
    assert!(err.to_string().contains("invalid `push`"), "{err}");
    let err = serde_json::from_str::<SandboxCommand>(r#"{"type": "prompt", "content": "x"}"#)
        .unwrap_err();
    assert!(err.to_string().contains("missing field"), "{err}");
    assert!(serde_json::from_str::<SandboxCommand>(r#"{"messageId": "m"}"#).is_err());
}

#[test]
fn session_config_from_the_seeds_create_path() {
    // pydantic's model_dump_json writes every field, None as null.
    let original = fixture(SESSION_CONFIGS, "create_model_dump_json");
    let c: SessionConfig = serde_json::from_value(original.clone()).unwrap();
    assert_eq!(c.session_id, "sess-4b1d");
    assert_eq!(
        (c.repo_owner.as_str(), c.repo_name.as_str()),
        ("acme", "web")
    );
    assert_eq!((c.branch.as_ref(), c.base_sha.as_ref()), (None, None));
    assert_eq!(c.opencode_session_id, None);
    assert_eq!(
        (c.provider.as_str(), c.model.as_str()),
        ("anthropic", "claude-sonnet-4-5")
    );
    assert_eq!(
        c.git_user,
        Some(GitUser {
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into()
        })
    );
    // Written back without the nulls (the sandbox's dict.get(key, default) needs the key
    // absent); otherwise the same.
    let mut without_nulls = original.as_object().unwrap().clone();
    without_nulls.retain(|_, v| !v.is_null());
    assert_eq!(
        serde_json::to_value(&c).unwrap(),
        Value::Object(without_nulls)
    );
}

#[test]
fn session_config_round_trips() {
    for name in ["restore_json_dumps", "full"] {
        round_trip::<SessionConfig>(&fixture(SESSION_CONFIGS, name));
    }
    let c: SessionConfig = round_trip(&fixture(SESSION_CONFIGS, "full"));
    assert_eq!(c.branch.as_deref(), Some("develop"));
    assert_eq!(
        c.base_sha.as_deref(),
        Some("9fceb02d0ae598e95dc970b74767f19372d61af8")
    );
    assert_eq!(
        c.opencode_session_id.as_deref(),
        Some("ses_3f2a9c1e7ffeAbCdEfGhIjKlMn")
    );
    assert_eq!((c.provider.as_str(), c.model.as_str()), ("openai", "gpt-5"));
    // Absent provider and model read as the seed's defaults.
    let c: SessionConfig =
        serde_json::from_str(r#"{"session_id": "s", "repo_owner": "o", "repo_name": "r"}"#)
            .unwrap();
    assert_eq!(c.provider, SESSION_CONFIG_DEFAULT_PROVIDER);
    assert_eq!(c.model, SESSION_CONFIG_DEFAULT_MODEL);
    assert!(serde_json::from_str::<SessionConfig>(r#"{"session_id": "s"}"#).is_err());
}

#[test]
fn api_envelope() {
    let health: ApiResponse<Value> = round_trip(&fixture(API_RESPONSES, "health"));
    assert_eq!(health.into_result().unwrap().unwrap()["status"], "healthy");

    let created: ApiResponse<Value> = round_trip(&fixture(API_RESPONSES, "create_sandbox"));
    assert!(created.success);
    let data = created.data.unwrap();
    assert_eq!(data["modal_object_id"], "sb-Xy12AbCdEf");
    assert_eq!(data["created_at"].as_f64(), Some(1739000000.4242));

    let none: ApiResponse<Value> = round_trip(&fixture(API_RESPONSES, "snapshot_none"));
    assert_eq!(none.into_result(), Ok(None));

    let failed: ApiResponse<Value> = round_trip(&fixture(API_RESPONSES, "failure"));
    assert!(!failed.success);
    assert_eq!(failed.into_result(), Err("Sandbox not running".to_owned()));

    let detail: ErrorDetail = round_trip(&fixture(API_RESPONSES, "unauthorized"));
    assert_eq!(
        detail.detail,
        "Unauthorized: Invalid or missing authentication token"
    );

    // Typed data, and the constructors.
    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Health {
        status: String,
        service: String,
    }
    let typed: ApiResponse<Health> =
        serde_json::from_value(fixture(API_RESPONSES, "health")).unwrap();
    assert_eq!(typed.data.unwrap().service, "open-inspect-modal");
    assert_eq!(
        serde_json::to_value(ApiResponse::<Health>::failure("boom")).unwrap(),
        json!({"success": false, "error": "boom"})
    );
    assert_eq!(
        serde_json::to_value(ApiResponse::<Health>::ok(None)).unwrap(),
        json!({"success": true, "data": null})
    );
    let bare: ApiResponse<Value> = serde_json::from_str(r#"{"success": false}"#).unwrap();
    assert_eq!(bare.into_result(), Err("unspecified error".to_owned()));
}

#[test]
fn status_values() {
    let names: Vec<String> = SessionSandboxStatus::ALL
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "pending",
            "spawning",
            "connecting",
            "warming",
            "syncing",
            "ready",
            "running",
            "stale",
            "snapshotting",
            "stopped",
            "failed"
        ]
    );
    for s in SessionSandboxStatus::ALL {
        assert_eq!(s.to_string(), names[s as usize]);
        assert_eq!(SessionSandboxStatus::from_wire(s.as_str()), Some(s));
    }
    let git: Vec<Value> = GitSyncStatus::ALL
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    assert_eq!(
        git,
        [
            json!("pending"),
            json!("in_progress"),
            json!("completed"),
            json!("failed")
        ]
    );
    for s in GitSyncStatus::ALL {
        assert_eq!(
            serde_json::from_value::<GitSyncStatus>(json!(s.to_string())).unwrap(),
            s
        );
        assert_eq!(GitSyncStatus::from_wire(s.as_str()), Some(s));
    }
    assert_eq!(SessionSandboxStatus::from_wire("exploded"), None);
    assert!(serde_json::from_value::<GitSyncStatus>(json!("done")).is_err());
}
