//! Wire types of the seeds (Open-Inspect, `ColeMurray/background-agents`): what a sandbox's
//! bridge and a control plane send each other over the sandbox WebSocket, the `SESSION_CONFIG`
//! a sandbox starts with, the status values a control plane keeps, and the Modal web API's
//! response envelope.
//!
//! The shapes follow the seed's code at revision `bc2482a4a` (February 2026, the one
//! `reference/open-inspect.md` calls \[E\]: `packages/modal-infra/src/sandbox/bridge.py` and
//! `types.py`, `packages/control-plane/src/types.ts` and `session/types.ts`): field names, which fields are
//! optional and which are sent as `null`, number types. JSON the seed sends deserializes, and
//! serializes back to the same JSON value.
//!
//! # Bridge events (sandbox → control plane)
//!
//! A [`BridgeEvent`] is one JSON object tagged by `type`, camelCase, carrying `sandboxId` and
//! `timestamp` (Unix seconds as a float, Python's `time.time()`) next to the fields of its
//! [`BridgeEventKind`]:
//!
//! ```
//! use sandbox_core::wire::{BridgeEvent, BridgeEventKind};
//!
//! let json = r#"{"type":"token","content":"Looking at the","messageId":"msg-1",
//!               "sandboxId":"sb-1","timestamp":1739000000.25}"#;
//! let event: BridgeEvent = serde_json::from_str(json).unwrap();
//! assert_eq!(event.sandbox_id, "sb-1");
//! assert_eq!(event.kind.message_id(), Some("msg-1"));
//! let BridgeEventKind::Token(token) = &event.kind else { panic!() };
//! assert_eq!(token.content, "Looking at the");
//! ```
//!
//! # Unknown types
//!
//! An event or command whose `type` this library does not know deserializes to
//! [`BridgeEventKind::Unknown`] / [`SandboxCommand::Unknown`], which keep every field, and
//! serializes back unchanged: a newer sandbox (the seed later added `session_title`, `warning`,
//! `context_compacted` events and an `ack` command) does not break an older control plane, which
//! can log and skip what it does not understand. A *known* type with a malformed body (a
//! missing field, a wrong type) is an error, not `Unknown`: silently turning a broken
//! `execution_complete` into an ignorable event would hang the session. Fields a known type
//! does not declare are ignored.
//!
//! Numbers: `timestamp` and `cost` are `f64`; an integer on the wire (`0`) reads as `0.0` and
//! is written back as `0.0`, the same number.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::Secret;

/// A JSON object: the fields of an unknown event or command, free-form metadata.
pub type JsonObject = Map<String, Value>;

/// The LLM provider a [`SessionConfig`] gets when its JSON has none (the seed's default).
pub const SESSION_CONFIG_DEFAULT_PROVIDER: &str = "anthropic";

/// The model a [`SessionConfig`] gets when its JSON has none (the seed's `SessionConfig`
/// default at `bc2482a4a`; the seed's environment table and control plane default to
/// `claude-haiku-4-5`, so always send a model).
pub const SESSION_CONFIG_DEFAULT_MODEL: &str = "claude-sonnet-4-5";

// ---------------------------------------------------------------------------------------------
// Status values
// ---------------------------------------------------------------------------------------------

/// The status a control plane keeps for a session's sandbox (the seed's `SandboxStatus`).
/// Not [`crate::SandboxStatus`], which is what a provider reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionSandboxStatus {
    /// Not requested yet.
    Pending,
    /// The provider is creating it.
    Spawning,
    /// Created; waiting for its bridge to connect.
    Connecting,
    /// Started ahead of a prompt (warm).
    Warming,
    /// Syncing the repository.
    Syncing,
    /// Connected and idle.
    Ready,
    /// Running a prompt.
    Running,
    /// Heartbeats missed: may be unresponsive.
    Stale,
    /// Its filesystem is being snapshotted.
    Snapshotting,
    /// Stopped.
    Stopped,
    /// Failed.
    Failed,
}

impl SessionSandboxStatus {
    /// Every value, in lifecycle order.
    pub const ALL: [SessionSandboxStatus; 11] = [
        SessionSandboxStatus::Pending,
        SessionSandboxStatus::Spawning,
        SessionSandboxStatus::Connecting,
        SessionSandboxStatus::Warming,
        SessionSandboxStatus::Syncing,
        SessionSandboxStatus::Ready,
        SessionSandboxStatus::Running,
        SessionSandboxStatus::Stale,
        SessionSandboxStatus::Snapshotting,
        SessionSandboxStatus::Stopped,
        SessionSandboxStatus::Failed,
    ];

    /// The wire name (`pending`, `spawning`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionSandboxStatus::Pending => "pending",
            SessionSandboxStatus::Spawning => "spawning",
            SessionSandboxStatus::Connecting => "connecting",
            SessionSandboxStatus::Warming => "warming",
            SessionSandboxStatus::Syncing => "syncing",
            SessionSandboxStatus::Ready => "ready",
            SessionSandboxStatus::Running => "running",
            SessionSandboxStatus::Stale => "stale",
            SessionSandboxStatus::Snapshotting => "snapshotting",
            SessionSandboxStatus::Stopped => "stopped",
            SessionSandboxStatus::Failed => "failed",
        }
    }

    /// Parses a wire name.
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for SessionSandboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of the repository sync in a sandbox (the seed's `GitSyncStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GitSyncStatus {
    /// Not started.
    Pending,
    /// Fetching / rebasing.
    InProgress,
    /// Done.
    Completed,
    /// Failed (the agent may proceed anyway).
    Failed,
}

impl GitSyncStatus {
    /// Every value.
    pub const ALL: [GitSyncStatus; 4] = [
        GitSyncStatus::Pending,
        GitSyncStatus::InProgress,
        GitSyncStatus::Completed,
        GitSyncStatus::Failed,
    ];

    /// The wire name (`pending`, `in_progress`, `completed`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            GitSyncStatus::Pending => "pending",
            GitSyncStatus::InProgress => "in_progress",
            GitSyncStatus::Completed => "completed",
            GitSyncStatus::Failed => "failed",
        }
    }

    /// Parses a wire name.
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for GitSyncStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Bridge events
// ---------------------------------------------------------------------------------------------

/// One event from a sandbox's bridge to the control plane.
///
/// Serialized as one flat JSON object: `type` and the fields of [`BridgeEventKind`], plus
/// `sandboxId`, `timestamp` and, when set, `ackId`.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeEvent {
    /// `sandboxId`: the sandbox that sent it.
    pub sandbox_id: String,
    /// `timestamp`: when it was sent, Unix seconds with a fraction.
    pub timestamp: f64,
    /// `ackId`: set by later seed bridges on events they re-send until the control plane
    /// acknowledges them; absent at `bc2482a4a`.
    pub ack_id: Option<String>,
    /// `type` and the event's own fields.
    pub kind: BridgeEventKind,
}

impl BridgeEvent {
    /// An event sent at `at`.
    pub fn new(sandbox_id: impl Into<String>, at: SystemTime, kind: BridgeEventKind) -> Self {
        let timestamp = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            sandbox_id: sandbox_id.into(),
            timestamp,
            ack_id: None,
            kind,
        }
    }

    /// `timestamp` as a time; `None` when it is negative or not finite.
    pub fn sent_at(&self) -> Option<SystemTime> {
        Duration::try_from_secs_f64(self.timestamp)
            .ok()
            .and_then(|d| UNIX_EPOCH.checked_add(d))
    }
}

/// What a [`BridgeEvent`] says, by `type`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BridgeEventKind {
    /// `ready`: the bridge connected (sent on every connection).
    Ready(ReadyEvent),
    /// `heartbeat`: every 30 seconds while connected.
    Heartbeat(HeartbeatEvent),
    /// `token`: agent text.
    Token(TokenEvent),
    /// `tool_call`: a tool call, sent once per status it reaches.
    ToolCall(ToolCallEvent),
    /// `tool_result`: declared by the seed's control plane; its bridge does not send it.
    ToolResult(ToolResultEvent),
    /// `step_start`: the agent started a step.
    StepStart(StepStartEvent),
    /// `step_finish`: the agent finished a step.
    StepFinish(StepFinishEvent),
    /// `error`: the agent failed on a prompt.
    Error(ErrorEvent),
    /// `execution_complete`: a prompt finished (always sent, success or not).
    ExecutionComplete(ExecutionCompleteEvent),
    /// `snapshot_ready`: the bridge is ready for its filesystem to be snapshotted.
    SnapshotReady(SnapshotReadyEvent),
    /// `push_complete`: a `push` command succeeded.
    PushComplete(PushCompleteEvent),
    /// `push_error`: a `push` command failed.
    PushError(PushErrorEvent),
    /// `git_sync`: the repository sync progressed.
    GitSync(GitSyncEvent),
    /// `artifact`: the sandbox produced an artifact (PR, screenshot, preview, branch).
    Artifact(ArtifactEvent),
    /// A `type` this library does not know, kept whole (see the [module docs](self)).
    Unknown {
        /// The `type`.
        event_type: String,
        /// Every other field except `sandboxId`, `timestamp` and `ackId`.
        fields: JsonObject,
    },
}

/// The `type` of every [`BridgeEventKind`] except `Unknown`.
pub const BRIDGE_EVENT_TYPES: [&str; 14] = [
    "ready",
    "heartbeat",
    "token",
    "tool_call",
    "tool_result",
    "step_start",
    "step_finish",
    "error",
    "execution_complete",
    "snapshot_ready",
    "push_complete",
    "push_error",
    "git_sync",
    "artifact",
];

impl BridgeEventKind {
    /// The wire `type`.
    pub fn event_type(&self) -> &str {
        match self {
            BridgeEventKind::Ready(_) => "ready",
            BridgeEventKind::Heartbeat(_) => "heartbeat",
            BridgeEventKind::Token(_) => "token",
            BridgeEventKind::ToolCall(_) => "tool_call",
            BridgeEventKind::ToolResult(_) => "tool_result",
            BridgeEventKind::StepStart(_) => "step_start",
            BridgeEventKind::StepFinish(_) => "step_finish",
            BridgeEventKind::Error(_) => "error",
            BridgeEventKind::ExecutionComplete(_) => "execution_complete",
            BridgeEventKind::SnapshotReady(_) => "snapshot_ready",
            BridgeEventKind::PushComplete(_) => "push_complete",
            BridgeEventKind::PushError(_) => "push_error",
            BridgeEventKind::GitSync(_) => "git_sync",
            BridgeEventKind::Artifact(_) => "artifact",
            BridgeEventKind::Unknown { event_type, .. } => event_type,
        }
    }

    /// The control plane's message id the event belongs to, for the kinds that carry one
    /// (`token`, `tool_call`, `tool_result`, `step_*`, `error`, `execution_complete`).
    pub fn message_id(&self) -> Option<&str> {
        match self {
            BridgeEventKind::Token(e) => Some(&e.message_id),
            BridgeEventKind::ToolCall(e) => Some(&e.message_id),
            BridgeEventKind::ToolResult(e) => e.message_id.as_deref(),
            BridgeEventKind::StepStart(e) => Some(&e.message_id),
            BridgeEventKind::StepFinish(e) => Some(&e.message_id),
            BridgeEventKind::Error(e) => Some(&e.message_id),
            BridgeEventKind::ExecutionComplete(e) => Some(&e.message_id),
            _ => None,
        }
    }
}

/// `ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyEvent {
    /// The agent (OpenCode) session the bridge resumed; `null` before the first prompt.
    #[serde(default)]
    pub opencode_session_id: Option<String>,
}

/// `heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatEvent {
    /// The bridge's status; the seed always sends `ready`. Kept as text so that a value this
    /// library does not know never drops a heartbeat; see [`HeartbeatEvent::sandbox_status`].
    pub status: String,
}

impl HeartbeatEvent {
    /// `status` as a [`SessionSandboxStatus`], when it is one.
    pub fn sandbox_status(&self) -> Option<SessionSandboxStatus> {
        SessionSandboxStatus::from_wire(&self.status)
    }
}

/// `token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenEvent {
    /// The text of the current part *so far* (the seed sends the accumulated text of a part
    /// each time, not a delta).
    pub content: String,
    /// The control plane's message id.
    pub message_id: String,
}

/// `tool_call`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallEvent {
    /// The tool's name (`bash`, `edit`, ...).
    pub tool: String,
    /// The tool's input, as the agent gave it (an object).
    pub args: Value,
    /// The agent's call id.
    pub call_id: String,
    /// `pending`, `running`, `completed` or `error` (OpenCode's tool states).
    pub status: String,
    /// The tool's output; empty until it completes.
    #[serde(default)]
    pub output: String,
    /// The control plane's message id.
    pub message_id: String,
}

/// `tool_result` (declared by the seed's control plane; its bridge reports results through
/// `tool_call` with status `completed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResultEvent {
    /// The call id.
    pub call_id: String,
    /// The result text.
    pub result: String,
    /// The error, when the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The control plane's message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// `step_start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepStartEvent {
    /// The control plane's message id.
    pub message_id: String,
}

/// `step_finish`. The seed forwards OpenCode's values as they are, `null` when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepFinishEvent {
    /// The step's cost in US dollars.
    #[serde(default)]
    pub cost: Option<f64>,
    /// OpenCode's token counts (`{input, output, reasoning, cache: {read, write}}`); read them
    /// with [`TokenUsage::from_json`].
    #[serde(default)]
    pub tokens: Option<Value>,
    /// Why the step ended (`stop`, `tool-calls`, ...).
    #[serde(default)]
    pub reason: Option<String>,
    /// The control plane's message id.
    pub message_id: String,
}

impl StepFinishEvent {
    /// The token counts, read leniently from [`StepFinishEvent::tokens`].
    pub fn token_usage(&self) -> Option<TokenUsage> {
        self.tokens.as_ref().map(TokenUsage::from_json)
    }
}

/// Token counts of a step, read from OpenCode's `tokens` object. Each count is `None` when
/// absent or not a non-negative integer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenUsage {
    /// `input`.
    pub input: Option<u64>,
    /// `output`.
    pub output: Option<u64>,
    /// `reasoning`.
    pub reasoning: Option<u64>,
    /// `cache.read`.
    pub cache_read: Option<u64>,
    /// `cache.write`.
    pub cache_write: Option<u64>,
}

impl TokenUsage {
    /// Reads the counts from a `tokens` value; never fails.
    pub fn from_json(tokens: &Value) -> Self {
        let count = |v: Option<&Value>| v.and_then(Value::as_u64);
        let cache = tokens.get("cache");
        Self {
            input: count(tokens.get("input")),
            output: count(tokens.get("output")),
            reasoning: count(tokens.get("reasoning")),
            cache_read: count(cache.and_then(|c| c.get("read"))),
            cache_write: count(cache.and_then(|c| c.get("write"))),
        }
    }
}

/// `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEvent {
    /// A human-readable message.
    pub error: String,
    /// The control plane's message id.
    pub message_id: String,
}

/// `execution_complete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionCompleteEvent {
    /// The control plane's message id.
    pub message_id: String,
    /// Whether the prompt succeeded.
    pub success: bool,
    /// Why it failed; the seed sends `null` on success (and this library does too).
    #[serde(default)]
    pub error: Option<String>,
}

/// `snapshot_ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotReadyEvent {
    /// The agent session to resume after restore; `null` when none was created.
    #[serde(default)]
    pub opencode_session_id: Option<String>,
}

/// `push_complete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushCompleteEvent {
    /// The branch pushed (the push spec's `targetBranch`).
    pub branch_name: String,
}

/// `push_error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushErrorEvent {
    /// What went wrong.
    pub error: String,
    /// The branch; absent when the sandbox found no repository at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_name: Option<String>,
}

/// `git_sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitSyncEvent {
    /// The sync status.
    pub status: GitSyncStatus,
    /// The commit the workspace is at, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    /// Why the sync failed (the seed's Python model has it; its TypeScript type does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `artifact`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactEvent {
    /// `pr`, `screenshot`, `preview` or `branch` in the seed.
    pub artifact_type: String,
    /// Where it is.
    pub url: String,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl Serialize for BridgeEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut object = match &self.kind {
            BridgeEventKind::Ready(e) => to_object(e)?,
            BridgeEventKind::Heartbeat(e) => to_object(e)?,
            BridgeEventKind::Token(e) => to_object(e)?,
            BridgeEventKind::ToolCall(e) => to_object(e)?,
            BridgeEventKind::ToolResult(e) => to_object(e)?,
            BridgeEventKind::StepStart(e) => to_object(e)?,
            BridgeEventKind::StepFinish(e) => to_object(e)?,
            BridgeEventKind::Error(e) => to_object(e)?,
            BridgeEventKind::ExecutionComplete(e) => to_object(e)?,
            BridgeEventKind::SnapshotReady(e) => to_object(e)?,
            BridgeEventKind::PushComplete(e) => to_object(e)?,
            BridgeEventKind::PushError(e) => to_object(e)?,
            BridgeEventKind::GitSync(e) => to_object(e)?,
            BridgeEventKind::Artifact(e) => to_object(e)?,
            BridgeEventKind::Unknown { fields, .. } => fields.clone(),
        };
        object.insert("type".into(), self.kind.event_type().into());
        object.insert("sandboxId".into(), self.sandbox_id.clone().into());
        object.insert("timestamp".into(), self.timestamp.into());
        if let Some(ack_id) = &self.ack_id {
            object.insert("ackId".into(), ack_id.clone().into());
        }
        object.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for BridgeEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut object = JsonObject::deserialize(deserializer)?;
        let event_type = take_type(&mut object)?;
        let sandbox_id = match object.remove("sandboxId") {
            Some(Value::String(id)) => id,
            Some(_) => return Err(D::Error::custom("`sandboxId` is not a string")),
            None => return Err(D::Error::missing_field("sandboxId")),
        };
        let timestamp = match object.remove("timestamp") {
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| D::Error::custom("`timestamp` is not a number"))?,
            Some(_) => return Err(D::Error::custom("`timestamp` is not a number")),
            None => return Err(D::Error::missing_field("timestamp")),
        };
        let ack_id = match object.remove("ackId") {
            Some(Value::String(id)) => Some(id),
            None | Some(Value::Null) => None,
            Some(_) => return Err(D::Error::custom("`ackId` is not a string")),
        };
        let t = event_type.as_str();
        let kind = match t {
            "ready" => BridgeEventKind::Ready(from_object(t, object)?),
            "heartbeat" => BridgeEventKind::Heartbeat(from_object(t, object)?),
            "token" => BridgeEventKind::Token(from_object(t, object)?),
            "tool_call" => BridgeEventKind::ToolCall(from_object(t, object)?),
            "tool_result" => BridgeEventKind::ToolResult(from_object(t, object)?),
            "step_start" => BridgeEventKind::StepStart(from_object(t, object)?),
            "step_finish" => BridgeEventKind::StepFinish(from_object(t, object)?),
            "error" => BridgeEventKind::Error(from_object(t, object)?),
            "execution_complete" => BridgeEventKind::ExecutionComplete(from_object(t, object)?),
            "snapshot_ready" => BridgeEventKind::SnapshotReady(from_object(t, object)?),
            "push_complete" => BridgeEventKind::PushComplete(from_object(t, object)?),
            "push_error" => BridgeEventKind::PushError(from_object(t, object)?),
            "git_sync" => BridgeEventKind::GitSync(from_object(t, object)?),
            "artifact" => BridgeEventKind::Artifact(from_object(t, object)?),
            _ => BridgeEventKind::Unknown {
                event_type,
                fields: object,
            },
        };
        Ok(BridgeEvent {
            sandbox_id,
            timestamp,
            ack_id,
            kind,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// A command from the control plane to a sandbox's bridge: a JSON object tagged by `type`,
/// camelCase.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SandboxCommand {
    /// `prompt`: run the agent on a message.
    Prompt(PromptCommand),
    /// `stop`: stop the running prompt.
    Stop,
    /// `snapshot`: prepare for a filesystem snapshot (answered by `snapshot_ready`).
    Snapshot,
    /// `shutdown`: the bridge exits.
    Shutdown,
    /// `git_sync_complete`: the control plane saw the repository sync finish.
    GitSyncComplete,
    /// `push`: push the workspace's branch (answered by `push_complete` / `push_error`).
    Push(PushCommand),
    /// A `type` this library does not know, kept whole (see the [module docs](self)).
    Unknown {
        /// The `type`.
        command_type: String,
        /// Every other field.
        fields: JsonObject,
    },
}

/// The `type` of every [`SandboxCommand`] except `Unknown`.
pub const SANDBOX_COMMAND_TYPES: [&str; 6] = [
    "prompt",
    "stop",
    "snapshot",
    "shutdown",
    "git_sync_complete",
    "push",
];

impl SandboxCommand {
    /// The wire `type`.
    pub fn command_type(&self) -> &str {
        match self {
            SandboxCommand::Prompt(_) => "prompt",
            SandboxCommand::Stop => "stop",
            SandboxCommand::Snapshot => "snapshot",
            SandboxCommand::Shutdown => "shutdown",
            SandboxCommand::GitSyncComplete => "git_sync_complete",
            SandboxCommand::Push(_) => "push",
            SandboxCommand::Unknown { command_type, .. } => command_type,
        }
    }
}

/// `prompt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptCommand {
    /// The control plane's message id; every event about this prompt carries it.
    pub message_id: String,
    /// The user's message.
    pub content: String,
    /// A model override (`claude-sonnet-4-5` or `provider/model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A reasoning effort override (`high`, `max`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// Who sent it; the bridge commits as them when both name and email are set.
    pub author: PromptAuthor,
    /// Attachments of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<PromptAttachment>>,
}

/// The author of a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptAuthor {
    /// The control plane's user id (`unknown` when the participant is gone).
    pub user_id: String,
    /// The git author name; `null` when unknown.
    #[serde(default)]
    pub github_name: Option<String>,
    /// The git author email; `null` when unknown.
    #[serde(default)]
    pub github_email: Option<String>,
    /// Fields of later seed versions (`scmName`, `gitIdentity`, ...), kept as they are.
    #[serde(flatten)]
    pub extra: JsonObject,
}

/// An attachment of a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptAttachment {
    /// `type`: `file`, `image` or `url`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Where to fetch it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Inline content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Other fields, kept as they are.
    #[serde(flatten)]
    pub extra: JsonObject,
}

/// `push`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushCommand {
    /// How to push.
    pub push_spec: PushSpec,
}

/// How a sandbox pushes its branch, built by the control plane's source-control provider so
/// the sandbox needs no provider logic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushSpec {
    /// The remote URL *with credentials* (`https://x-access-token:<token>@github.com/o/r.git`):
    /// a [`Secret`], so `Debug` never shows it; serialized in clear, as the bridge needs it.
    #[serde(serialize_with = "serialize_secret")]
    pub remote_url: Secret,
    /// The same URL with the credential replaced, for logs.
    pub redacted_remote_url: String,
    /// `<src>:<dst>`, e.g. `HEAD:refs/heads/<branch>`.
    pub refspec: String,
    /// The remote branch, echoed in `push_complete` / `push_error`.
    pub target_branch: String,
    /// Whether to force-push.
    #[serde(default)]
    pub force: bool,
}

fn serialize_secret<S: Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose())
}

impl Serialize for SandboxCommand {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut object = match self {
            SandboxCommand::Prompt(c) => to_object(c)?,
            SandboxCommand::Push(c) => to_object(c)?,
            SandboxCommand::Stop
            | SandboxCommand::Snapshot
            | SandboxCommand::Shutdown
            | SandboxCommand::GitSyncComplete => JsonObject::new(),
            SandboxCommand::Unknown { fields, .. } => fields.clone(),
        };
        object.insert("type".into(), self.command_type().into());
        object.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SandboxCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut object = JsonObject::deserialize(deserializer)?;
        let command_type = take_type(&mut object)?;
        let t = command_type.as_str();
        Ok(match t {
            "prompt" => SandboxCommand::Prompt(from_object(t, object)?),
            "stop" => SandboxCommand::Stop,
            "snapshot" => SandboxCommand::Snapshot,
            "shutdown" => SandboxCommand::Shutdown,
            "git_sync_complete" => SandboxCommand::GitSyncComplete,
            "push" => SandboxCommand::Push(from_object(t, object)?),
            _ => SandboxCommand::Unknown {
                command_type,
                fields: object,
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Session config
// ---------------------------------------------------------------------------------------------

/// The session a sandbox works on, given to it as JSON in the `SESSION_CONFIG` environment
/// variable (the seed's `SessionConfig`), snake case.
///
/// Optional fields that are `None` are left out when serialized: the seed's sandbox reads
/// them with `dict.get(key, default)`, which turns an explicit `null` into `None` rather than
/// the default (`"branch": null` would make it rebase onto `origin/None`). Both `null` and an
/// absent key read as `None`; an absent `provider` / `model` reads as the seed's defaults
/// ([`SESSION_CONFIG_DEFAULT_PROVIDER`], [`SESSION_CONFIG_DEFAULT_MODEL`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionConfig {
    /// The control plane's session id.
    pub session_id: String,
    /// The repository's owner.
    pub repo_owner: String,
    /// The repository's name.
    pub repo_name: String,
    /// The base branch to sync onto (the sandbox uses `main` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit the session started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_sha: Option<String>,
    /// The agent session to resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opencode_session_id: Option<String>,
    /// The LLM provider.
    #[serde(default = "default_provider")]
    pub provider: String,
    /// The LLM model.
    #[serde(default = "default_model")]
    pub model: String,
    /// The git identity to commit as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_user: Option<GitUser>,
}

fn default_provider() -> String {
    SESSION_CONFIG_DEFAULT_PROVIDER.to_owned()
}

fn default_model() -> String {
    SESSION_CONFIG_DEFAULT_MODEL.to_owned()
}

/// A git identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitUser {
    /// `user.name`.
    pub name: String,
    /// `user.email`.
    pub email: String,
}

// ---------------------------------------------------------------------------------------------
// Modal web API envelope
// ---------------------------------------------------------------------------------------------

/// The Modal web API's response envelope: `{"success": true, "data": ...}` or
/// `{"success": false, "error": "..."}`.
///
/// The seed answers most failures with HTTP 200 and `success: false`: check both the status and
/// this flag ([`ApiResponse::into_result`]). `data` is `None` both when absent and when `null`
/// (the snapshot endpoint's "no snapshot"). When serialized, `data` is written (as `null` if
/// `None`) whenever `success` is true, as the seed does, and `error` whenever it is set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiResponse<T> {
    /// Whether the call succeeded.
    pub success: bool,
    /// The result.
    #[serde(default = "none")]
    pub data: Option<T>,
    /// The failure's message.
    #[serde(default)]
    pub error: Option<String>,
}

fn none<T>() -> Option<T> {
    None
}

impl<T> ApiResponse<T> {
    /// `{"success": true, "data": data}`.
    pub fn ok(data: Option<T>) -> Self {
        Self {
            success: true,
            data,
            error: None,
        }
    }

    /// `{"success": false, "error": message}`.
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            success: false,
            data: None,
            error: Some(message.into()),
        }
    }

    /// `Ok(data)` on success, `Err(message)` on failure (`unspecified error` when the response
    /// gave none).
    pub fn into_result(self) -> Result<Option<T>, String> {
        if self.success {
            Ok(self.data)
        } else {
            Err(self.error.unwrap_or_else(|| "unspecified error".to_owned()))
        }
    }
}

impl<T: Serialize> Serialize for ApiResponse<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let write_data = self.success || self.data.is_some();
        let len = 1 + usize::from(write_data) + usize::from(self.error.is_some());
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("success", &self.success)?;
        if write_data {
            map.serialize_entry("data", &self.data)?;
        }
        if let Some(error) = &self.error {
            map.serialize_entry("error", error)?;
        }
        map.end()
    }
}

/// The body of the Modal web API's HTTP errors (401 bad auth, 503 no secret configured, 400
/// bad input, 404 unknown sandbox): FastAPI's `{"detail": ...}`, a string or, for validation
/// errors, a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The message.
    pub detail: Value,
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn to_object<T: Serialize, E: serde::ser::Error>(value: &T) -> Result<JsonObject, E> {
    match serde_json::to_value(value).map_err(E::custom)? {
        Value::Object(object) => Ok(object),
        _ => Err(E::custom("expected a JSON object")),
    }
}

fn from_object<T: DeserializeOwned, E: serde::de::Error>(
    message_type: &str,
    object: JsonObject,
) -> Result<T, E> {
    serde_json::from_value(Value::Object(object))
        .map_err(|e| E::custom(format_args!("invalid `{message_type}`: {e}")))
}

fn take_type<E: serde::de::Error>(object: &mut JsonObject) -> Result<String, E> {
    match object.remove("type") {
        Some(Value::String(t)) => Ok(t),
        Some(_) => Err(E::custom("`type` is not a string")),
        None => Err(E::missing_field("type")),
    }
}

#[cfg(test)]
mod tests;
