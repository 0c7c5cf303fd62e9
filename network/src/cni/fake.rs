//! A fake [`PluginExec`] for unit tests: records every call and answers as
//! told, or like a well-behaved plugin.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::exec::{ExecError, PluginExec, PluginOutput};

/// One recorded plugin run.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub plugin: String,
    pub env: BTreeMap<String, String>,
    pub config: Value,
}

impl Call {
    pub fn command(&self) -> &str {
        self.env.get("CNI_COMMAND").map_or("", String::as_str)
    }
}

/// How a plugin answers one command.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// Succeed printing this.
    Stdout(String),
    /// Exit with this code and output.
    Fail { code: i32, stdout: String },
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    answers: HashMap<(String, String), Answer>,
    missing: HashSet<String>,
}

/// Shared handle: clones see the same calls.
#[derive(Clone, Default)]
pub(crate) struct FakeExec(Arc<Mutex<State>>);

impl FakeExec {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().expect("fake exec lock")
    }

    /// Makes `plugin` answer `command` this way.
    pub fn answer(&self, plugin: &str, command: &str, answer: Answer) {
        self.state()
            .answers
            .insert((plugin.into(), command.into()), answer);
    }

    /// Makes `plugin` not found.
    pub fn remove_plugin(&self, plugin: &str) {
        self.state().missing.insert(plugin.into());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// `plugin:COMMAND` for every call, in order.
    pub fn trace(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{}:{}", c.plugin, c.command()))
            .collect()
    }

    pub fn clear(&self) {
        self.state().calls.clear();
    }
}

/// What a well-behaved plugin returns from ADD: its prevResult, with one
/// more interface named after the plugin; the first plugin creates the
/// container's interface with an IP.
fn default_add_result(plugin: &str, env: &BTreeMap<String, String>, config: &Value) -> Value {
    let version = config["cniVersion"].clone();
    let mut result = match config.get("prevResult") {
        Some(prev) => prev.clone(),
        None => json!({
            "cniVersion": version,
            "interfaces": [{
                "name": env.get("CNI_IFNAME").cloned().unwrap_or_default(),
                "sandbox": env.get("CNI_NETNS").cloned().unwrap_or_default(),
            }],
            "ips": [{"address": "10.88.0.2/16", "gateway": "10.88.0.1", "interface": 0}],
        }),
    };
    if let Some(Value::Array(ifaces)) = result.get_mut("interfaces") {
        ifaces.push(json!({"name": format!("host-{plugin}")}));
    }
    result
}

impl PluginExec for FakeExec {
    fn find(&self, plugin_type: &str) -> Result<PathBuf, ExecError> {
        if self.state().missing.contains(plugin_type) {
            return Err(ExecError::NotFound {
                plugin: plugin_type.into(),
                dirs: vec![PathBuf::from("/fake")],
            });
        }
        Ok(Path::new("/fake").join(plugin_type))
    }

    fn run(
        &self,
        binary: &Path,
        env: &[(&str, &str)],
        stdin: &[u8],
    ) -> Result<PluginOutput, ExecError> {
        let plugin = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config: Value = serde_json::from_slice(stdin).expect("stdin is JSON");
        let command = env.get("CNI_COMMAND").cloned().unwrap_or_default();
        let mut state = self.state();
        state.calls.push(Call {
            plugin: plugin.clone(),
            env: env.clone(),
            config: config.clone(),
        });
        let answer = state
            .answers
            .get(&(plugin.clone(), command.clone()))
            .cloned();
        drop(state);
        let ok = |stdout: String| PluginOutput {
            exit_code: Some(0),
            stdout: stdout.into_bytes(),
            stderr: Vec::new(),
        };
        Ok(match answer {
            Some(Answer::Stdout(s)) => ok(s),
            Some(Answer::Fail { code, stdout }) => PluginOutput {
                exit_code: Some(code),
                stdout: stdout.into_bytes(),
                stderr: b"fake stderr".to_vec(),
            },
            None if command == "ADD" => ok(default_add_result(&plugin, &env, &config).to_string()),
            None => ok(String::new()),
        })
    }
}
