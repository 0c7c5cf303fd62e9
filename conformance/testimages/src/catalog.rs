//! The images critest (cri-tools v1.37.0) pulls, and what each contains.
//!
//! Every image is built from Debian's dynamically linked busybox (so an
//! applet masked with a bind mount fails the way critest expects), a few
//! static C programs and small text files. See conformance/README.md for why
//! each detail is there.

use std::collections::BTreeMap;
use std::rc::Rc;

use anyhow::Result;

use crate::host::Assets;
use crate::layer::{Layer, Tree};
use crate::oci::{Content, Empty, Format, History, RunConfig};

/// What goes into an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The busybox rootfs, `Cmd ["sh"]`.
    Busybox,
    /// Busybox plus an empty file at `/NAME` (its own image ID).
    Marker(&'static str),
    /// Busybox with config `User` set.
    User(&'static str),
    /// Busybox with user `default-user` (1000) in group
    /// `group-defined-in-image` (50000), `User 1000`.
    PredefinedGroup,
    /// Busybox plus the nginx stand-in listening on `port`.
    Nginx {
        /// TCP port it listens on.
        port: u16,
    },
    /// Busybox plus the httpd stand-in on port 80.
    Httpd,
    /// Busybox plus the setuid-root `nnp` entrypoint.
    NoNewPrivs,
    /// Only the static `/pause` binary.
    Pause,
}

/// One upstream repository and the tags that point at one image.
#[derive(Clone, Copy, Debug)]
pub struct Image {
    /// Upstream repository, `HOST/PATH`.
    pub repo: &'static str,
    /// Tags (all pointing at the same manifest or index).
    pub tags: &'static [&'static str],
    /// How it is served.
    pub format: Format,
    /// What it contains.
    pub kind: Kind,
}

/// `gcr.io/k8s-staging-cri-tools/NAME`.
macro_rules! gcr {
    ($name:literal) => {
        concat!("gcr.io/k8s-staging-cri-tools/", $name)
    };
}

macro_rules! image {
    ($repo:expr, [$($tag:expr),+], $format:ident, $kind:expr) => {
        Image { repo: $repo, tags: &[$($tag),+], format: Format::$format, kind: $kind }
    };
}

/// Every image, in build order.
pub const IMAGES: &[Image] = &[
    // framework.DefaultLinuxContainerImage: the default image of most specs.
    image!(
        "registry.k8s.io/e2e-test-images/busybox",
        ["1.29-2"],
        OciIndex,
        Kind::Busybox
    ),
    // validate: webServerLinuxImage and nginxContainerImage.
    image!(
        "registry.k8s.io/e2e-test-images/nginx",
        ["1.14-2"],
        OciIndex,
        Kind::Nginx { port: 80 }
    ),
    // validate: hostNetWebServerImage (registry + "hostnet-nginx-" + GOARCH).
    image!(
        gcr!("hostnet-nginx-amd64"),
        ["latest"],
        DockerManifest,
        Kind::Nginx { port: 12003 }
    ),
    // validate: httpdImage (multi-container specs).
    image!(
        "registry.k8s.io/e2e-test-images/httpd",
        ["2.4.39-4"],
        OciIndex,
        Kind::Httpd
    ),
    // validate: noNewPrivsImage.
    image!(
        "registry.k8s.io/e2e-test-images/nonewprivs",
        ["1.3"],
        OciIndex,
        Kind::NoNewPrivs
    ),
    // validate: image pull specs, one image per reference.
    image!(
        gcr!("test-image-latest"),
        ["latest"],
        OciManifest,
        Kind::Marker("test-image-latest")
    ),
    image!(
        gcr!("test-image-1"),
        ["latest"],
        OciManifest,
        Kind::Marker("test-image-1")
    ),
    image!(
        gcr!("test-image-2"),
        ["latest"],
        OciManifest,
        Kind::Marker("test-image-2")
    ),
    image!(
        gcr!("test-image-3"),
        ["latest"],
        OciManifest,
        Kind::Marker("test-image-3")
    ),
    image!(
        gcr!("test-image-tag"),
        ["test"],
        OciManifest,
        Kind::Marker("test")
    ),
    image!(
        gcr!("test-image-tag"),
        ["all"],
        OciManifest,
        Kind::Marker("all")
    ),
    // critest pins an upstream digest for this one; it cannot match.
    image!(
        gcr!("test-image-digest"),
        ["latest"],
        OciManifest,
        Kind::Marker("test-image-digest")
    ),
    // One image, three tags.
    image!(
        gcr!("test-image-tags"),
        ["1", "2", "3"],
        OciManifest,
        Kind::Marker("same-image")
    ),
    image!(
        gcr!("test-image-user-uid"),
        ["latest"],
        OciIndex,
        Kind::User("1002")
    ),
    image!(
        gcr!("test-image-user-username"),
        ["latest"],
        OciIndex,
        Kind::User("www-data")
    ),
    image!(
        gcr!("test-image-user-uid-group"),
        ["latest"],
        OciIndex,
        Kind::User("1003:1004")
    ),
    image!(
        gcr!("test-image-user-username-group"),
        ["latest"],
        OciIndex,
        Kind::User("www-data:1004")
    ),
    image!(
        gcr!("test-image-predefined-group"),
        ["latest"],
        OciIndex,
        Kind::PredefinedGroup
    ),
    // validate: testSameImageDifferentRegistries (same digest under both).
    image!("registry.k8s.io/pause", ["3.9"], OciIndex, Kind::Pause),
    image!("k8s.gcr.io/pause", ["3.9"], OciIndex, Kind::Pause),
    // benchmark: defaultImageListingBenchmarkImagesAmd64.
    image!(
        "public.ecr.aws/docker/library/busybox",
        ["1.35.0-glibc"],
        OciIndex,
        Kind::Marker("busybox-1.35.0-glibc")
    ),
    image!(
        "public.ecr.aws/docker/library/busybox",
        ["1-uclibc"],
        OciIndex,
        Kind::Marker("busybox-1-uclibc")
    ),
    image!(
        "public.ecr.aws/docker/library/busybox",
        ["1"],
        OciIndex,
        Kind::Marker("busybox-1")
    ),
    image!(
        "public.ecr.aws/docker/library/busybox",
        ["1-glibc"],
        OciIndex,
        Kind::Marker("busybox-1-glibc")
    ),
    image!(
        "public.ecr.aws/docker/library/busybox",
        ["1-musl"],
        OciIndex,
        Kind::Marker("busybox-1-musl")
    ),
];

/// `PATH` of every image.
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
";

const GROUP: &str = "\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
";

const NSSWITCH: &str = "\
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
";

const PGREP: &str = include_str!("../scripts/pgrep");
const IPCS: &str = include_str!("../scripts/ipcs");

/// Builds layers once and shares them between images.
pub struct Builder<'a> {
    assets: &'a Assets,
    busybox: Option<Rc<Layer>>,
    extra: BTreeMap<String, Rc<Layer>>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn ports(ports: &[u16]) -> BTreeMap<String, Empty> {
    ports
        .iter()
        .map(|p| (format!("{p}/tcp"), Empty {}))
        .collect()
}

impl<'a> Builder<'a> {
    /// A builder over `assets`.
    pub fn new(assets: &'a Assets) -> Self {
        Self {
            assets,
            busybox: None,
            extra: BTreeMap::new(),
        }
    }

    fn busybox_tree(&self) -> Result<Tree> {
        let a = self.assets;
        let mut t = Tree::new();
        for dir in [
            "bin",
            "dev",
            "etc",
            "home",
            "lib",
            "proc",
            "sys",
            "usr",
            "usr/bin",
            "usr/sbin",
            "usr/local",
            "usr/local/bin",
            "var",
            "var/run",
            "var/spool",
            "var/www",
        ] {
            t.dir(dir, 0o755)?;
        }
        t.dir("root", 0o700)?;
        t.dir("tmp", 0o1777)?;
        t.file("bin/busybox", 0o755, a.busybox.clone())?;
        for applet in &a.applets {
            if applet != "busybox" {
                t.hardlink(&format!("bin/{applet}"), "bin/busybox")?;
            }
        }
        t.file("bin/pgrep", 0o755, PGREP.as_bytes().to_vec())?;
        t.file("bin/ipcs", 0o755, IPCS.as_bytes().to_vec())?;
        for (path, data) in &a.libs {
            t.file(path, 0o755, data.clone())?;
        }
        t.file("etc/passwd", 0o644, PASSWD.as_bytes().to_vec())?;
        t.file("etc/group", 0o644, GROUP.as_bytes().to_vec())?;
        t.file("etc/nsswitch.conf", 0o644, NSSWITCH.as_bytes().to_vec())?;
        Ok(t)
    }

    fn busybox_layer(&mut self) -> Result<Rc<Layer>> {
        if let Some(layer) = &self.busybox {
            return Ok(layer.clone());
        }
        let layer = Rc::new(self.busybox_tree()?.build()?);
        self.busybox = Some(layer.clone());
        Ok(layer)
    }

    /// Builds (once per `key`) a layer on top of busybox.
    fn layer(
        &mut self,
        key: &str,
        make: impl FnOnce(&Assets) -> Result<Tree>,
    ) -> Result<Rc<Layer>> {
        if let Some(layer) = self.extra.get(key) {
            return Ok(layer.clone());
        }
        let layer = Rc::new(make(self.assets)?.build()?);
        self.extra.insert(key.to_owned(), layer.clone());
        Ok(layer)
    }

    /// The layers, config and history of an image of `kind`.
    pub fn content(&mut self, kind: Kind) -> Result<Content> {
        let base = History::layer("krio-testimages: busybox rootfs (Debian busybox, glibc)");
        let busybox_config = RunConfig {
            env: strings(&[PATH]),
            cmd: strings(&["sh"]),
            ..RunConfig::default()
        };
        Ok(match kind {
            Kind::Busybox => Content {
                layers: vec![self.busybox_layer()?],
                config: busybox_config,
                history: vec![base],
            },
            Kind::Marker(name) => {
                let layer = self.layer(&format!("marker:{name}"), |_| {
                    let mut t = Tree::new();
                    t.file(name, 0o644, Vec::new())?;
                    Ok(t)
                })?;
                Content {
                    layers: vec![self.busybox_layer()?, layer],
                    config: busybox_config,
                    history: vec![base, History::layer(format!("ADD {name} /{name}"))],
                }
            }
            Kind::User(user) => Content {
                layers: vec![self.busybox_layer()?],
                config: RunConfig {
                    user: user.to_owned(),
                    ..busybox_config
                },
                history: vec![base, History::config(format!("USER {user}"))],
            },
            Kind::PredefinedGroup => {
                let layer = self.layer("predefined-group", |_| {
                    let mut t = Tree::new();
                    t.file(
                        "etc/passwd",
                        0o644,
                        format!("{PASSWD}default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n")
                            .into_bytes(),
                    )?;
                    t.file(
                        "etc/group",
                        0o644,
                        format!("{GROUP}default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")
                            .into_bytes(),
                    )?;
                    t.dir_owned("home/default-user", 0o755, 1000, 1000)?;
                    Ok(t)
                })?;
                Content {
                    layers: vec![self.busybox_layer()?, layer],
                    config: RunConfig {
                        user: "1000".to_owned(),
                        ..busybox_config
                    },
                    history: vec![
                        base,
                        History::layer(
                            "adduser -u 1000 -D default-user && addgroup -g 50000 group-defined-in-image \
                             && addgroup default-user group-defined-in-image",
                        ),
                        History::config("USER 1000"),
                    ],
                }
            }
            Kind::Nginx { port } => {
                let layer = self.layer(&format!("nginx:{port}"), |a| {
                    let mut t = Tree::new();
                    t.file("usr/sbin/nginx", 0o755, a.webserver.clone())?;
                    t.file(
                        "etc/nginx/conf.d/default.conf",
                        0o644,
                        format!(
                            "server {{\n    listen       {port};\n    server_name  localhost;\n}}\n"
                        )
                        .into_bytes(),
                    )?;
                    t.dir("var/log/nginx", 0o755)?;
                    Ok(t)
                })?;
                Content {
                    layers: vec![self.busybox_layer()?, layer],
                    config: RunConfig {
                        exposed_ports: ports(&[port]),
                        cmd: strings(&["nginx", "-g", "daemon off;"]),
                        ..busybox_config
                    },
                    history: vec![
                        base,
                        History::layer(format!(
                            "krio-testimages: nginx stand-in (webserver.c) listening on {port}"
                        )),
                    ],
                }
            }
            Kind::Httpd => {
                let layer = self.layer("httpd", |a| {
                    let mut t = Tree::new();
                    t.file("usr/local/apache2/bin/httpd", 0o755, a.webserver.clone())?;
                    t.dir("usr/local/apache2/logs", 0o755)?;
                    t.file(
                        "usr/local/bin/httpd-foreground",
                        0o755,
                        b"#!/bin/sh\nset -e\nrm -f /usr/local/apache2/logs/httpd.pid\nexec httpd -DFOREGROUND \"$@\"\n"
                            .to_vec(),
                    )?;
                    Ok(t)
                })?;
                Content {
                    layers: vec![self.busybox_layer()?, layer],
                    config: RunConfig {
                        exposed_ports: ports(&[80]),
                        env: strings(&[
                            "PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "HTTPD_PREFIX=/usr/local/apache2",
                        ]),
                        cmd: strings(&["httpd-foreground"]),
                        working_dir: "/usr/local/apache2".to_owned(),
                        ..RunConfig::default()
                    },
                    history: vec![
                        base,
                        History::layer("krio-testimages: httpd stand-in (webserver.c) on port 80"),
                    ],
                }
            }
            Kind::NoNewPrivs => {
                let layer = self.layer("nonewprivs", |a| {
                    let mut t = Tree::new();
                    t.file("usr/local/bin/nnp", 0o4755, a.nnp.clone())?;
                    Ok(t)
                })?;
                Content {
                    layers: vec![self.busybox_layer()?, layer],
                    config: RunConfig {
                        entrypoint: strings(&["/usr/local/bin/nnp"]),
                        // ENTRYPOINT in a Dockerfile clears the inherited CMD.
                        cmd: Vec::new(),
                        ..busybox_config
                    },
                    history: vec![
                        base,
                        History::layer(
                            "COPY nnp /usr/local/bin/nnp && chmod +s /usr/local/bin/nnp",
                        ),
                        History::config("ENTRYPOINT [\"/usr/local/bin/nnp\"]"),
                    ],
                }
            }
            Kind::Pause => {
                let layer = self.layer("pause", |a| {
                    let mut t = Tree::new();
                    t.file("pause", 0o755, a.pause.clone())?;
                    Ok(t)
                })?;
                Content {
                    layers: vec![layer],
                    config: RunConfig {
                        user: "65535:65535".to_owned(),
                        env: strings(&[PATH]),
                        entrypoint: strings(&["/pause"]),
                        working_dir: "/".to_owned(),
                        ..RunConfig::default()
                    },
                    history: vec![
                        History::layer("COPY pause /pause (krio-testimages: pause.c)"),
                        History::config("USER 65535:65535"),
                        History::config("ENTRYPOINT [\"/pause\"]"),
                    ],
                }
            }
        })
    }
}
