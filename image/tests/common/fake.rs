//! A tiny registry served from inside a test, to misbehave on purpose.

use krio_image::digest::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the fake registry serves: path → (content type, body, stall after
/// this many bytes).
pub type Routes = HashMap<String, (String, Vec<u8>, Option<usize>)>;

/// How the fake registry authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Auth {
    /// Anonymous.
    None,
    /// Every request needs `Authorization: Basic <this>`.
    Basic(&'static str),
    /// Registry requests need `Authorization: Bearer <token>`; `/token`
    /// hands out the token for `Authorization: Basic <basic>`.
    Bearer {
        /// base64 user:pass the token server accepts.
        basic: &'static str,
        /// The token.
        token: &'static str,
    },
    /// `/v2/` asks for basic auth (so a client holding credentials offers
    /// them), but everything is served to anyone.
    ChallengeOnly,
}

/// Every request a fake registry saw: `(path, Authorization header or "")`.
pub type RequestLog = Arc<Mutex<Vec<(String, String)>>>;

/// Serves `routes` anonymously; returns `host:port`.
pub async fn serve(routes: Routes) -> String {
    serve_with_auth(routes, Auth::None).await
}

const UNAUTHORIZED_BASIC: &[u8] = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"krio\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Serves `routes` with `auth`; returns `host:port`.
pub async fn serve_with_auth(routes: Routes, auth: Auth) -> String {
    serve_recording(routes, auth).await.0
}

/// Serves `routes` with `auth`; returns `host:port` and the log of the
/// requests it sees.
pub async fn serve_recording(routes: Routes, auth: Auth) -> (String, RequestLog) {
    let log = RequestLog::default();
    let log2 = Arc::clone(&log);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let me = addr.clone();
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let routes = Arc::clone(&routes);
            let me = me.clone();
            let log = Arc::clone(&log2);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                    // A TLS ClientHello: a plain-HTTP server hangs up.
                    if buf[0] == 0x16 {
                        return;
                    }
                }
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = req.split(' ').nth(1).unwrap_or("/").to_owned();
                let authorization = req
                    .lines()
                    .find_map(|l| {
                        l.split_once(':')
                            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                            .map(|(_, v)| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                log.lock().expect("log").push((path.clone(), authorization));
                let has = |v: &str| {
                    req.lines()
                        .any(|l| l.eq_ignore_ascii_case(&format!("authorization: {v}")))
                };
                match auth {
                    Auth::None => {}
                    Auth::ChallengeOnly => {
                        if path == "/v2/" {
                            let _ = sock.write_all(UNAUTHORIZED_BASIC).await;
                            return;
                        }
                    }
                    Auth::Basic(b) => {
                        if !has(&format!("Basic {b}")) {
                            let _ = sock.write_all(UNAUTHORIZED_BASIC).await;
                            return;
                        }
                    }
                    Auth::Bearer { basic, token } => {
                        if path.starts_with("/token") {
                            let (status, body) = if has(&format!("Basic {basic}")) {
                                ("200 OK", format!("{{\"token\":\"{token}\"}}"))
                            } else {
                                ("401 Unauthorized", String::new())
                            };
                            let resp = format!(
                                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = sock.write_all(resp.as_bytes()).await;
                            return;
                        }
                        if !has(&format!("Bearer {token}")) {
                            let resp = format!(
                                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"fake\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                            let _ = sock.write_all(resp.as_bytes()).await;
                            return;
                        }
                    }
                }
                let (status, ctype, body, stall) = match routes.get(&path) {
                    Some((t, b, s)) => ("200 OK", t.clone(), b.clone(), *s),
                    None if path == "/v2/" => {
                        ("200 OK", "application/json".into(), b"{}".to_vec(), None)
                    }
                    None => (
                        "404 Not Found",
                        "application/json".into(),
                        b"{\"errors\":[{\"code\":\"NOT_FOUND\"}]}".to_vec(),
                        None,
                    ),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                match stall {
                    Some(k) => {
                        let _ = sock.write_all(&body[..k]).await;
                        tokio::time::sleep(Duration::from_secs(120)).await;
                    }
                    None => {
                        let _ = sock.write_all(&body).await;
                    }
                }
            });
        }
    });
    (addr, log)
}

/// Routes for `repo:v1`, an OCI image with one layer per `(tar, stall)`;
/// a layer with `Some(n)` stalls after `n` bytes.
pub fn multi_image(repo: &str, layers: &[(Vec<u8>, Option<usize>)]) -> Routes {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(t, _)| format!("\"{}\"", Digest::of_bytes(t)))
        .collect();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}},"config":{{}}}}"#,
        diff_ids.join(",")
    );
    let config_digest = Digest::of_bytes(config.as_bytes());
    let descs: Vec<String> = layers
        .iter()
        .map(|(t, _)| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}"#,
                Digest::of_bytes(t),
                t.len()
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descs.join(",")
    );
    let mut r = Routes::new();
    r.insert(
        format!("/v2/{repo}/manifests/v1"),
        (
            "application/vnd.oci.image.manifest.v1+json".into(),
            manifest.into_bytes(),
            None,
        ),
    );
    r.insert(
        format!("/v2/{repo}/blobs/{config_digest}"),
        ("application/octet-stream".into(), config.into_bytes(), None),
    );
    for (t, stall) in layers {
        r.insert(
            format!("/v2/{repo}/blobs/{}", Digest::of_bytes(t)),
            ("application/octet-stream".into(), t.clone(), *stall),
        );
    }
    r
}

/// A layer tar with one file `name` holding `size` bytes.
pub fn tar_with_file(name: &str, size: usize) -> Vec<u8> {
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        let mut h = tar::Header::new_ustar();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, &vec![7u8; size][..])
            .expect("append");
        b.finish().expect("finish");
    }
    tar
}
