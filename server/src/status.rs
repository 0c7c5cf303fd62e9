//! `krio status`: the daemon's view for an operator, asked over the CRI
//! socket like any other client (conditions, handlers, pods, containers,
//! images, and the configuration the daemon runs with).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use krio_proto::v1;
use krio_proto::v1::image_service_client::ImageServiceClient;
use krio_proto::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::Config;

/// How long connecting may take before the daemon counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long each RPC may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// How many hex digits of an ID are shown (as crictl does).
const SHORT_ID: usize = 13;

/// `krio status` options.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Everything the daemon told us.
struct Report {
    socket: PathBuf,
    version: v1::VersionResponse,
    status: v1::StatusResponse,
    pods: Vec<v1::PodSandbox>,
    containers: Vec<v1::Container>,
    images: Vec<v1::Image>,
    /// The daemon's own config (from `Status` verbose info), or ours.
    config: Config,
    config_files: Vec<String>,
    /// Whether `config` came from the daemon.
    config_from_daemon: bool,
}

/// Asks the daemon on `config.listen` and prints its view.
pub async fn run(config: Config, files: Vec<PathBuf>, args: &StatusArgs) -> anyhow::Result<()> {
    let report = gather(config, files).await?;
    let out = if args.json {
        serde_json::to_string_pretty(&to_json(&report)?).context("encoding JSON")? + "\n"
    } else {
        to_text(&report)?
    };
    print!("{out}");
    Ok(())
}

async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let path = socket.to_path_buf();
    // The URI is unused: every connection goes to the unix socket.
    Endpoint::from_static("http://[::]:0")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(RPC_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| {
            format!(
                "cannot reach krio on {} (is the daemon running, and is that its socket?)",
                socket.display()
            )
        })
}

async fn gather(local: Config, local_files: Vec<PathBuf>) -> anyhow::Result<Report> {
    let socket = local.listen.clone();
    let channel = connect(&socket).await?;
    let mut runtime = RuntimeServiceClient::new(channel.clone());
    let mut images = ImageServiceClient::new(channel);
    let at = |rpc: &str| format!("{rpc} on {}", socket.display());

    let version = runtime
        .version(v1::VersionRequest::default())
        .await
        .with_context(|| at("Version"))?
        .into_inner();
    let status = runtime
        .status(v1::StatusRequest { verbose: true })
        .await
        .with_context(|| at("Status"))?
        .into_inner();
    let pods = runtime
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await
        .with_context(|| at("ListPodSandbox"))?
        .into_inner()
        .items;
    let containers = runtime
        .list_containers(v1::ListContainersRequest::default())
        .await
        .with_context(|| at("ListContainers"))?
        .into_inner()
        .containers;
    let images = images
        .list_images(v1::ListImagesRequest::default())
        .await
        .with_context(|| at("ListImages"))?
        .into_inner()
        .images;

    let daemon_config = status
        .info
        .get("config")
        .and_then(|json| serde_json::from_str::<Config>(json).ok());
    let daemon_files = status
        .info
        .get("configFiles")
        .and_then(|json| serde_json::from_str::<Vec<String>>(json).ok());
    let config_from_daemon = daemon_config.is_some();
    let config = daemon_config.unwrap_or(local);
    let config_files = daemon_files.unwrap_or_else(|| {
        local_files
            .iter()
            .map(|f| f.display().to_string())
            .collect()
    });
    Ok(Report {
        socket,
        version,
        status,
        pods,
        containers,
        images,
        config,
        config_files,
        config_from_daemon,
    })
}

fn short(id: &str) -> &str {
    id.get(..SHORT_ID).unwrap_or(id)
}

fn pod_state(state: i32) -> &'static str {
    match v1::PodSandboxState::try_from(state) {
        Ok(v1::PodSandboxState::SandboxReady) => "Ready",
        Ok(v1::PodSandboxState::SandboxNotready) => "NotReady",
        Err(_) => "Unknown",
    }
}

fn container_state(state: i32) -> &'static str {
    match v1::ContainerState::try_from(state) {
        Ok(v1::ContainerState::ContainerCreated) => "Created",
        Ok(v1::ContainerState::ContainerRunning) => "Running",
        Ok(v1::ContainerState::ContainerExited) => "Exited",
        Ok(v1::ContainerState::ContainerUnknown) | Err(_) => "Unknown",
    }
}

fn container_image(c: &v1::Container) -> &str {
    match c.image.as_ref().map(|i| i.image.as_str()) {
        Some(name) if !name.is_empty() => name,
        _ => &c.image_ref,
    }
}

/// Rows as left-aligned columns two spaces apart, indented; `none` when
/// there are no rows.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        out.push_str("  none\n");
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut l = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn to_text(r: &Report) -> anyhow::Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "krio on {}: {} {} (CRI {})",
        r.socket.display(),
        r.version.runtime_name,
        r.version.runtime_version,
        r.version.runtime_api_version
    );

    out.push_str("\nConditions:\n");
    let conditions = r
        .status
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|c| {
            let why = if c.reason.is_empty() {
                String::new()
            } else {
                format!("{}: {}", c.reason, c.message)
            };
            vec![c.r#type.clone(), c.status.to_string(), why]
        })
        .collect();
    table(&mut out, &["TYPE", "READY", "REASON"], &rows);

    out.push_str("\nRuntime handlers:\n");
    let rows: Vec<Vec<String>> = r
        .status
        .runtime_handlers
        .iter()
        .filter(|h| !h.name.is_empty())
        .map(|h| {
            let f = h.features.unwrap_or_default();
            let handler = r.config.runtime.handlers.get(&h.name);
            let default = if h.name == r.config.runtime.default_handler {
                " (default)"
            } else {
                ""
            };
            vec![
                format!("{}{default}", h.name),
                handler
                    .map(|c| c.path.display().to_string())
                    .unwrap_or_default(),
                yes_no(f.recursive_read_only_mounts).into(),
                yes_no(f.user_namespaces).into(),
            ]
        })
        .collect();
    table(&mut out, &["NAME", "PATH", "RRO MOUNTS", "USERNS"], &rows);

    let _ = writeln!(out, "\nPods ({}):", r.pods.len());
    let rows: Vec<Vec<String>> = r
        .pods
        .iter()
        .map(|p| {
            let md = p.metadata.clone().unwrap_or_default();
            vec![
                short(&p.id).to_owned(),
                md.name,
                md.namespace,
                pod_state(p.state).to_owned(),
                p.runtime_handler.clone(),
            ]
        })
        .collect();
    table(
        &mut out,
        &["ID", "NAME", "NAMESPACE", "STATE", "HANDLER"],
        &rows,
    );

    let _ = writeln!(out, "\nContainers ({}):", r.containers.len());
    let rows: Vec<Vec<String>> = r
        .containers
        .iter()
        .map(|c| {
            vec![
                short(&c.id).to_owned(),
                c.metadata.clone().unwrap_or_default().name,
                short(&c.pod_sandbox_id).to_owned(),
                container_state(c.state).to_owned(),
                container_image(c).to_owned(),
            ]
        })
        .collect();
    table(&mut out, &["ID", "NAME", "POD", "STATE", "IMAGE"], &rows);

    let _ = writeln!(out, "\nImages ({}):", r.images.len());
    let rows: Vec<Vec<String>> = r
        .images
        .iter()
        .map(|i| {
            let id = i.id.strip_prefix("sha256:").unwrap_or(&i.id);
            let tags = if i.repo_tags.is_empty() {
                "<none>".to_owned()
            } else {
                i.repo_tags.join(", ")
            };
            vec![short(id).to_owned(), human_size(i.size), tags]
        })
        .collect();
    table(&mut out, &["ID", "SIZE", "TAGS"], &rows);

    let source = if r.config_from_daemon {
        "as the daemon reports it"
    } else {
        "loaded here; the daemon did not report its own"
    };
    let _ = writeln!(out, "\nConfiguration in effect ({source}):");
    if r.config_files.is_empty() {
        out.push_str("# Read from: no file (defaults, environment and flags only).\n");
    }
    for f in &r.config_files {
        let _ = writeln!(out, "# Read from: {f}");
    }
    out.push_str(&toml::to_string_pretty(&r.config).context("serialising configuration")?);
    Ok(out)
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn to_json(r: &Report) -> anyhow::Result<serde_json::Value> {
    use serde_json::json;
    let conditions: Vec<_> = r
        .status
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| json!({"type": c.r#type, "status": c.status, "reason": c.reason, "message": c.message}))
        .collect();
    let handlers: Vec<_> = r
        .status
        .runtime_handlers
        .iter()
        .filter(|h| !h.name.is_empty())
        .map(|h| {
            let f = h.features.unwrap_or_default();
            json!({
                "name": h.name,
                "default": h.name == r.config.runtime.default_handler,
                "recursiveReadOnlyMounts": f.recursive_read_only_mounts,
                "userNamespaces": f.user_namespaces,
            })
        })
        .collect();
    let pods: Vec<_> = r
        .pods
        .iter()
        .map(|p| {
            let md = p.metadata.clone().unwrap_or_default();
            json!({"id": p.id, "name": md.name, "namespace": md.namespace, "uid": md.uid,
                   "state": pod_state(p.state), "runtimeHandler": p.runtime_handler})
        })
        .collect();
    let containers: Vec<_> = r
        .containers
        .iter()
        .map(|c| {
            json!({"id": c.id, "name": c.metadata.clone().unwrap_or_default().name,
                   "podSandboxId": c.pod_sandbox_id, "state": container_state(c.state),
                   "image": container_image(c), "imageRef": c.image_ref})
        })
        .collect();
    let images: Vec<_> = r
        .images
        .iter()
        .map(|i| json!({"id": i.id, "repoTags": i.repo_tags, "repoDigests": i.repo_digests, "size": i.size}))
        .collect();
    Ok(json!({
        "socket": r.socket,
        "runtimeName": r.version.runtime_name,
        "runtimeVersion": r.version.runtime_version,
        "runtimeApiVersion": r.version.runtime_api_version,
        "conditions": conditions,
        "handlers": handlers,
        "pods": pods,
        "containers": containers,
        "images": images,
        "config": serde_json::to_value(&r.config).context("encoding the configuration")?,
        "configFiles": r.config_files,
        "configFromDaemon": r.config_from_daemon,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut out = String::new();
        table(
            &mut out,
            &["ID", "NAME"],
            &[
                vec!["abc".into(), "x".into()],
                vec!["a".into(), "long".into()],
            ],
        );
        assert_eq!(out, "  ID   NAME\n  abc  x\n  a    long\n");
        let mut empty = String::new();
        table(&mut empty, &["ID"], &[]);
        assert_eq!(empty, "  none\n");
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MiB");
    }
}
