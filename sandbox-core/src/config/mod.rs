//! [`Config`]: which backend to use and its settings, the same shape from environment
//! variables, TOML or JSON. Unknown keys are errors that name the key.
//!
//! ```toml
//! backend = "docker"          # local | docker | kubernetes | modal | cloudflare
//! [docker]
//! image = "sandbox-test/busybox:latest"
//! ```
//! The same from the environment: `SANDBOX_BACKEND=docker`,
//! `SANDBOX_DOCKER_IMAGE=sandbox-test/busybox:latest`. Every key `a.b` of a section is the
//! variable `SANDBOX_A_B`; lists are comma-separated. `SANDBOX_CONFIG=path.toml` (or `.json`)
//! reads a file instead; setting both a file and config variables is an error, so there is
//! never a question of which one won.

mod docker;
mod env;
mod local;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

pub use docker::{DEFAULT_DOCKER_IMAGE, DockerConfig, PullPolicy};
pub use local::{IsolationMode, LocalConfig};

use crate::backend::BackendKind;
use crate::error::{Error, Result};
use env::{EnvNode, EnvValue};

/// The variable naming a config file.
pub const CONFIG_FILE_VAR: &str = "SANDBOX_CONFIG";
/// The variable naming the backend.
pub const BACKEND_VAR: &str = "SANDBOX_BACKEND";
const ENV_PREFIX: &str = "SANDBOX_";

/// The library's configuration: the backend to use and one section per backend. Sections of
/// backends not chosen may be present (so one file can hold several) and are validated too.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The backend `connect` builds (default: `local`, which needs nothing installed).
    #[serde(default)]
    pub backend: BackendKind,
    /// Settings of the local backend.
    #[serde(default)]
    pub local: LocalConfig,
    /// Settings of the Docker backend.
    #[serde(default)]
    pub docker: DockerConfig,
}

impl Config {
    /// The default config of one backend.
    pub fn for_backend(backend: BackendKind) -> Self {
        Self {
            backend,
            ..Self::default()
        }
    }

    /// Parses TOML.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let de = toml::Deserializer::parse(s)
            .map_err(|e| Error::invalid_config("<toml>", e.message().to_string()))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            Error::invalid_config(e.path().to_string(), e.inner().message().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses JSON.
    pub fn from_json_str(s: &str) -> Result<Self> {
        let mut de = serde_json::Deserializer::from_str(s);
        let config: Config = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| Error::invalid_config(e.path().to_string(), e.inner().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a `.toml` or `.json` file (any other extension is read as TOML).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid_config(
                CONFIG_FILE_VAR,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json {
            Self::from_json_str(&text)
        } else {
            Self::from_toml_str(&text)
        }
    }

    /// Reads the process environment (see the module docs). With no variable set at all this
    /// is the default config: the local backend.
    pub fn from_env() -> Result<Self> {
        Self::from_env_vars(std::env::vars())
    }

    /// Like [`Config::from_env`], from the given variables (for tests and embedding).
    /// Variables that do not start with `SANDBOX_` are ignored, and so are `SANDBOX_*`
    /// variables outside the config's namespace (`SANDBOX_ID`, `SANDBOX_AUTH_TOKEN` exist
    /// inside sandboxes); an unknown key inside a backend's section is an error.
    pub fn from_env_vars<I, K, V>(vars: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let mut nodes: BTreeMap<String, EnvNode> = BTreeMap::new();
        let mut config_vars = Vec::new();
        for (key, value) in &vars {
            if key == BACKEND_VAR {
                nodes.insert("backend".into(), EnvNode::Value(EnvValue(value.clone())));
                config_vars.push(key.clone());
                continue;
            }
            let rest = &key[ENV_PREFIX.len()..];
            let Some(kind) = BackendKind::ALL.into_iter().find(|k| {
                rest.strip_prefix(&k.as_str().to_ascii_uppercase())
                    .is_some_and(|r| r.starts_with('_'))
            }) else {
                continue;
            };
            let field = rest[kind.as_str().len() + 1..].to_ascii_lowercase();
            match nodes
                .entry(kind.as_str().to_string())
                .or_insert_with(|| EnvNode::Section(Vec::new()))
            {
                EnvNode::Section(fields) => fields.push((field, EnvValue(value.clone()))),
                EnvNode::Value(_) => unreachable!("section names are never `backend`"),
            }
            config_vars.push(key.clone());
        }

        if let Some(path) = vars.get(CONFIG_FILE_VAR) {
            if let Some(other) = config_vars.first() {
                return Err(Error::invalid_config(
                    other.clone(),
                    format!(
                        "is set together with {CONFIG_FILE_VAR}; put it in the file or unset \
                         {CONFIG_FILE_VAR} (a file and variables are never merged)"
                    ),
                ));
            }
            return Self::from_file(path);
        }

        let de = MapDeserializerOwned::new(nodes.into_iter());
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let key = env_key_for(&path, &config_vars);
            Error::invalid_config(key, e.inner().to_string())
        })?;
        config.validate().map_err(|e| match e {
            Error::InvalidConfig { key, reason } => {
                Error::invalid_config(env_key_for(&key, &config_vars), reason)
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Reads `SANDBOX_CONFIG` if set, else the environment: what an application calls at
    /// startup.
    pub fn load() -> Result<Self> {
        Self::from_env()
    }

    /// Checks every section's values.
    pub fn validate(&self) -> Result<()> {
        self.local.validate()?;
        self.docker.validate()
    }
}

type MapDeserializerOwned = serde::de::value::MapDeserializer<
    'static,
    std::collections::btree_map::IntoIter<String, EnvNode>,
    serde::de::value::Error,
>;

/// The variable name for a config path (`docker.image` -> `SANDBOX_DOCKER_IMAGE`), preferring
/// the name of a variable that was actually set.
fn env_key_for(path: &str, set: &[String]) -> String {
    let name = format!(
        "{ENV_PREFIX}{}",
        path.replace('.', "_").to_ascii_uppercase()
    );
    if path == "backend" {
        return BACKEND_VAR.to_string();
    }
    set.iter()
        .find(|k| **k == name || k.starts_with(&format!("{name}_")))
        .cloned()
        .unwrap_or(name)
}

/// Checks a value the same way everywhere: `key` is the dotted path.
pub(crate) fn check(key: &str, ok: bool, reason: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_config(key, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(r: Result<Config>) -> String {
        match r {
            Err(Error::InvalidConfig { key, .. }) => key,
            Err(e) => panic!("expected InvalidConfig, got {e}"),
            Ok(c) => panic!("expected an error, got {c:?}"),
        }
    }

    #[test]
    fn nothing_set_means_local() {
        let c = Config::from_env_vars(Vec::<(String, String)>::new()).unwrap();
        assert_eq!(c.backend, BackendKind::Local);
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c.backend, BackendKind::Local);
        let c = Config::from_json_str("{}").unwrap();
        assert_eq!(c.backend, BackendKind::Local);
    }

    #[test]
    fn same_shape_from_toml_json_and_env() {
        let toml = Config::from_toml_str(
            "backend = \"docker\"\n[docker]\nimage = \"img:1\"\npull_policy = \"never\"\napi_timeout_seconds = 7\n",
        )
        .unwrap();
        let json = Config::from_json_str(
            r#"{"backend":"docker","docker":{"image":"img:1","pull_policy":"never","api_timeout_seconds":7}}"#,
        )
        .unwrap();
        let env = Config::from_env_vars([
            ("SANDBOX_BACKEND", "docker"),
            ("SANDBOX_DOCKER_IMAGE", "img:1"),
            ("SANDBOX_DOCKER_PULL_POLICY", "never"),
            ("SANDBOX_DOCKER_API_TIMEOUT_SECONDS", "7"),
            ("SANDBOX_ID", "not-config"),
            ("SANDBOX_AUTH_TOKEN", "not-config"),
            ("PATH", "/bin"),
        ])
        .unwrap();
        for c in [&toml, &json, &env] {
            assert_eq!(c.backend, BackendKind::Docker);
            assert_eq!(c.docker.image, "img:1");
            assert_eq!(c.docker.pull_policy, PullPolicy::Never);
            assert_eq!(c.docker.api_timeout_seconds, 7);
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        assert_eq!(key_of(Config::from_toml_str("bogus = 1")), "bogus");
        assert_eq!(
            key_of(Config::from_toml_str("[docker]\nimag = \"x\"")),
            "docker.imag"
        );
        assert_eq!(
            key_of(Config::from_json_str(r#"{"docker":{"imag":"x"}}"#)),
            "docker.imag"
        );
        assert_eq!(
            key_of(Config::from_env_vars([("SANDBOX_DOCKER_IMAG", "x")])),
            "SANDBOX_DOCKER_IMAG"
        );
        assert_eq!(
            key_of(Config::from_env_vars([("SANDBOX_LOCAL_ROOT", "/x")])),
            "SANDBOX_LOCAL_ROOT"
        );
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            key_of(Config::from_toml_str("backend = \"nope\"")),
            "backend"
        );
        assert_eq!(
            key_of(Config::from_env_vars([("SANDBOX_BACKEND", "nope")])),
            "SANDBOX_BACKEND"
        );
        assert_eq!(
            key_of(Config::from_env_vars([(
                "SANDBOX_DOCKER_API_TIMEOUT_SECONDS",
                "soon"
            )])),
            "SANDBOX_DOCKER_API_TIMEOUT_SECONDS"
        );
        assert_eq!(
            key_of(Config::from_toml_str(
                "[docker]\napi_timeout_seconds = \"x\""
            )),
            "docker.api_timeout_seconds"
        );
        assert_eq!(
            key_of(Config::from_toml_str("[docker]\nimage = \"Bad Image\"")),
            "docker.image"
        );
        assert_eq!(
            key_of(Config::from_env_vars([(
                "SANDBOX_DOCKER_IMAGE",
                "Bad Image"
            )])),
            "SANDBOX_DOCKER_IMAGE"
        );
        assert_eq!(key_of(Config::from_toml_str("backend = ")), "<toml>");
        key_of(Config::from_json_str("{"));
    }

    #[test]
    fn file_and_variables_are_not_mixed() {
        let dir = std::env::temp_dir().join(format!("sandbox-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml = dir.join("c.toml");
        std::fs::write(&toml, "backend = \"docker\"\n").unwrap();
        let json = dir.join("c.json");
        std::fs::write(&json, r#"{"backend":"local"}"#).unwrap();
        let c = Config::from_env_vars([("SANDBOX_CONFIG", toml.to_str().unwrap())]).unwrap();
        assert_eq!(c.backend, BackendKind::Docker);
        let c = Config::from_env_vars([("SANDBOX_CONFIG", json.to_str().unwrap())]).unwrap();
        assert_eq!(c.backend, BackendKind::Local);
        assert_eq!(
            key_of(Config::from_env_vars([
                ("SANDBOX_CONFIG", toml.to_str().unwrap()),
                ("SANDBOX_BACKEND", "local")
            ])),
            "SANDBOX_BACKEND"
        );
        assert_eq!(
            key_of(Config::from_env_vars([(
                "SANDBOX_CONFIG",
                "/nonexistent/x.toml"
            )])),
            "SANDBOX_CONFIG"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
