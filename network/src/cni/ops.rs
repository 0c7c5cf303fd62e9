//! The CNI operations on a network config list (spec section 3): ADD runs
//! the plugins in order chaining each result into the next as
//! `prevResult`; DEL runs them in reverse with the cached final result;
//! CHECK, STATUS and GC where the config's version has them.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::config::NetworkConfigList;
use super::exec::{CniCommand, ExecError, PluginError, PluginExec, PluginOutput};
use super::result::{CniResult, ResultError};
use super::version;

/// A failed CNI operation: which plugin, which command, and why.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The plugin could not be found or run.
    #[error("CNI plugin {plugin} {command}: {source}")]
    Exec {
        /// The plugin type.
        plugin: String,
        /// The command.
        command: CniCommand,
        /// The cause.
        #[source]
        source: ExecError,
    },
    /// The plugin ran and reported failure.
    #[error("CNI plugin {plugin} {command} failed: {source}")]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// The command.
        command: CniCommand,
        /// The plugin's error.
        #[source]
        source: Box<PluginError>,
    },
    /// The plugin succeeded but its result is not valid.
    #[error("CNI plugin {plugin} {command}: {source}")]
    Result {
        /// The plugin type.
        plugin: String,
        /// The command.
        command: CniCommand,
        /// The cause.
        #[source]
        source: ResultError,
    },
    /// The network has no plugins (a config list that skipped validation).
    #[error("CNI network {0} has no plugins")]
    NoPlugins(String),
    /// Some plugins failed GC (GC carries on past a failure).
    #[error("CNI GC failed: {}", join_errors(.0))]
    Gc(Vec<OpError>),
}

fn join_errors(errors: &[OpError]) -> String {
    let v: Vec<String> = errors.iter().map(ToString::to_string).collect();
    v.join("; ")
}

impl OpError {
    /// The plugin's own error, if a plugin reported one.
    pub fn plugin_error(&self) -> Option<&PluginError> {
        match self {
            OpError::Plugin { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// The per-attachment parameters of ADD, DEL and CHECK.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`; empty when the namespace is gone (DEL only).
    pub netns: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_ARGS`, already encoded.
    pub cni_args: &'a str,
    /// Capability arguments by name; each plugin gets those it declares.
    pub capability_args: &'a Map<String, Value>,
}

fn plugin_type(plugin: &Value) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Builds one plugin's request config (spec "Deriving request
/// configuration"): the plugin's object with `name` and `cniVersion` set,
/// `capabilities` and `cni.dev/` keys removed, `runtimeConfig` holding the
/// capability arguments the plugin declares (attachment commands only, when
/// `capability_args` is given), and `prevResult` when given.
pub fn derive_config(
    list: &NetworkConfigList,
    plugin: &Value,
    capability_args: Option<&Map<String, Value>>,
    prev_result: Option<&Value>,
) -> Value {
    let mut obj = plugin.as_object().cloned().unwrap_or_default();
    obj.retain(|k, _| !k.starts_with("cni.dev/"));
    let declared = obj.remove("capabilities");
    let static_rc = obj.remove("runtimeConfig");
    obj.remove("prevResult");
    obj.insert("name".into(), Value::String(list.name.clone()));
    obj.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(args) = capability_args {
        let mut rc = match static_rc {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        if let Some(Value::Object(declared)) = declared {
            for (cap, enabled) in declared {
                if enabled == Value::Bool(true)
                    && let Some(arg) = args.get(&cap)
                {
                    rc.insert(cap, arg.clone());
                }
            }
        }
        if !rc.is_empty() {
            obj.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    if let Some(prev) = prev_result {
        obj.insert("prevResult".into(), prev.clone());
    }
    Value::Object(obj)
}

fn attachment_env<'a>(command: CniCommand, att: &Attachment<'a>) -> Vec<(&'static str, &'a str)> {
    let mut env = vec![
        ("CNI_COMMAND", command.as_str()),
        ("CNI_CONTAINERID", att.container_id),
        ("CNI_IFNAME", att.ifname),
    ];
    if !att.netns.is_empty() {
        env.push(("CNI_NETNS", att.netns));
    }
    if !att.cni_args.is_empty() {
        env.push(("CNI_ARGS", att.cni_args));
    }
    env
}

/// Finds every plugin's binary up front, so a missing one fails before
/// anything has changed.
fn find_all(
    exec: &dyn PluginExec,
    list: &NetworkConfigList,
    command: CniCommand,
) -> Result<Vec<PathBuf>, OpError> {
    list.plugins
        .iter()
        .map(|p| {
            exec.find(plugin_type(p)).map_err(|source| OpError::Exec {
                plugin: plugin_type(p).to_string(),
                command,
                source,
            })
        })
        .collect()
}

/// Runs one plugin and turns a non-zero exit into its error.
fn invoke(
    exec: &dyn PluginExec,
    binary: &std::path::Path,
    plugin: &str,
    command: CniCommand,
    env: &[(&str, &str)],
    config: &Value,
) -> Result<PluginOutput, OpError> {
    // Encoding a `Value` cannot fail (its map keys are strings).
    let stdin = serde_json::to_vec(config).unwrap_or_default();
    tracing::debug!(plugin, %command, "running CNI plugin");
    let out = exec
        .run(binary, env, &stdin)
        .map_err(|source| OpError::Exec {
            plugin: plugin.to_string(),
            command,
            source,
        })?;
    if out.success() {
        Ok(out)
    } else {
        Err(OpError::Plugin {
            plugin: plugin.to_string(),
            command,
            source: Box::new(PluginError::from_output(&out)),
        })
    }
}

/// ADD: runs each plugin in order, the previous plugin's result as
/// `prevResult`, and returns the last result. `last_result` holds the
/// latest result so far, so a caller rolling back a failed ADD can pass it
/// to DEL.
pub fn add(
    exec: &dyn PluginExec,
    list: &NetworkConfigList,
    att: &Attachment<'_>,
    last_result: &mut Option<Value>,
) -> Result<CniResult, OpError> {
    let command = CniCommand::Add;
    let binaries = find_all(exec, list, command)?;
    let env = attachment_env(command, att);
    let mut result = None;
    for (plugin, binary) in list.plugins.iter().zip(&binaries) {
        let name = plugin_type(plugin);
        let config = derive_config(
            list,
            plugin,
            Some(att.capability_args),
            last_result.as_ref(),
        );
        let out = invoke(exec, binary, name, command, &env, &config)?;
        let parsed = CniResult::from_slice(&out.stdout, &list.cni_version).map_err(|source| {
            OpError::Result {
                plugin: name.to_string(),
                command,
                source,
            }
        })?;
        *last_result = Some(parsed.raw.clone());
        result = Some(parsed);
    }
    result.ok_or_else(|| OpError::NoPlugins(list.name.clone()))
}

/// DEL: runs each plugin in reverse order. Each gets the cached final ADD
/// result as `prevResult` from 0.4.0 on (earlier versions had none). A
/// plugin answering "container unknown" (code 3) counts as done.
pub fn del(
    exec: &dyn PluginExec,
    list: &NetworkConfigList,
    att: &Attachment<'_>,
    cached_result: Option<&Value>,
) -> Result<(), OpError> {
    let command = CniCommand::Del;
    let binaries = find_all(exec, list, command)?;
    let env = attachment_env(command, att);
    let prev = cached_result.filter(|_| version::at_least(&list.cni_version, "0.4.0"));
    for (plugin, binary) in list.plugins.iter().zip(&binaries).rev() {
        let name = plugin_type(plugin);
        let config = derive_config(list, plugin, Some(att.capability_args), prev);
        match invoke(exec, binary, name, command, &env, &config) {
            Ok(_) => {}
            Err(e)
                if e.plugin_error()
                    .is_some_and(PluginError::is_unknown_container) =>
            {
                tracing::debug!(plugin = name, "CNI DEL: plugin does not know the container");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether CHECK applies to this network (version 0.4.0 or later, and not
/// disabled).
pub fn check_applies(list: &NetworkConfigList) -> bool {
    version::at_least(&list.cni_version, "0.4.0") && !list.disable_check
}

/// CHECK: runs each plugin in order with the cached final ADD result as
/// `prevResult`; a no-op where [`check_applies`] is false.
pub fn check(
    exec: &dyn PluginExec,
    list: &NetworkConfigList,
    att: &Attachment<'_>,
    cached_result: &Value,
) -> Result<(), OpError> {
    if !check_applies(list) {
        return Ok(());
    }
    let command = CniCommand::Check;
    let binaries = find_all(exec, list, command)?;
    let env = attachment_env(command, att);
    for (plugin, binary) in list.plugins.iter().zip(&binaries) {
        let config = derive_config(list, plugin, Some(att.capability_args), Some(cached_result));
        invoke(exec, binary, plugin_type(plugin), command, &env, &config)?;
    }
    Ok(())
}

/// STATUS (1.1.0): asks each plugin whether it can serve ADD; stops at the
/// first that cannot. Earlier versions have no STATUS: always ready.
pub fn status(exec: &dyn PluginExec, list: &NetworkConfigList) -> Result<(), OpError> {
    if !version::at_least(&list.cni_version, "1.1.0") {
        return Ok(());
    }
    let command = CniCommand::Status;
    let binaries = find_all(exec, list, command)?;
    let env = [("CNI_COMMAND", command.as_str())];
    for (plugin, binary) in list.plugins.iter().zip(&binaries) {
        let config = derive_config(list, plugin, None, None);
        invoke(exec, binary, plugin_type(plugin), command, &env, &config)?;
    }
    Ok(())
}

/// GC (1.1.0, unless `disableGC`): tells each plugin which attachments
/// (container id, ifname) are still valid, carrying on past failures and
/// returning them all.
pub fn gc(
    exec: &dyn PluginExec,
    list: &NetworkConfigList,
    valid_attachments: &[(String, String)],
) -> Result<(), OpError> {
    if !version::at_least(&list.cni_version, "1.1.0") || list.disable_gc {
        return Ok(());
    }
    let command = CniCommand::Gc;
    let valid: Vec<Value> = valid_attachments
        .iter()
        .map(|(cid, ifname)| serde_json::json!({"containerID": cid, "ifname": ifname}))
        .collect();
    let env = [("CNI_COMMAND", command.as_str())];
    let mut errors = Vec::new();
    for plugin in &list.plugins {
        let name = plugin_type(plugin);
        let binary = match exec.find(name) {
            Ok(b) => b,
            Err(source) => {
                errors.push(OpError::Exec {
                    plugin: name.to_string(),
                    command,
                    source,
                });
                continue;
            }
        };
        let mut config = derive_config(list, plugin, None, None);
        if let Value::Object(obj) = &mut config {
            obj.insert(
                "cni.dev/valid-attachments".into(),
                Value::Array(valid.clone()),
            );
        }
        if let Err(e) = invoke(exec, &binary, name, command, &env, &config) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(OpError::Gc(errors))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn list() -> NetworkConfigList {
        NetworkConfigList {
            name: "net".into(),
            cni_version: "1.1.0".into(),
            plugins: Vec::new(),
            disable_check: false,
            disable_gc: false,
            source: "/etc/cni/net.d/x.conflist".into(),
        }
    }

    #[test]
    fn derived_config_follows_the_spec() {
        let plugin = json!({
            "type": "portmap",
            "name": "ignored",
            "cniVersion": "0.1.0",
            "capabilities": {"portMappings": true, "mac": true, "bandwidth": false},
            "runtimeConfig": {"static": 1},
            "prevResult": {"stale": true},
            "cni.dev/valid-attachments": [],
            "snat": true
        });
        let mut caps = Map::new();
        caps.insert("portMappings".into(), json!([{"hostPort": 1}]));
        caps.insert("bandwidth".into(), json!({"ingressRate": 1}));
        let prev = json!({"cniVersion": "1.1.0", "ips": []});
        let got = derive_config(&list(), &plugin, Some(&caps), Some(&prev));
        assert_eq!(
            got,
            json!({
                "type": "portmap",
                "name": "net",
                "cniVersion": "1.1.0",
                "runtimeConfig": {"static": 1, "portMappings": [{"hostPort": 1}]},
                "prevResult": {"cniVersion": "1.1.0", "ips": []},
                "snat": true
            })
        );
        // STATUS and GC: no runtimeConfig, no prevResult.
        let got = derive_config(&list(), &plugin, None, None);
        assert_eq!(
            got,
            json!({"type": "portmap", "name": "net", "cniVersion": "1.1.0", "snat": true})
        );
    }
}
