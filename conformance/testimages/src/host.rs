//! Inputs taken from this machine: Debian's dynamically linked busybox and
//! the shared libraries it needs, and the small static C programs compiled
//! with the system gcc.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use anyhow::{Context, Result, bail, ensure};

/// Where Debian's `busybox` package installs the binary.
const BUSYBOX: &str = "/bin/busybox";

/// The C programs (source file stem, source text).
const PROGRAMS: &[(&str, &str)] = &[
    ("pause", include_str!("../c/pause.c")),
    ("nnp", include_str!("../c/nnp.c")),
    ("webserver", include_str!("../c/webserver.c")),
];

/// gcc flags: static, small, stripped, no build ID, no path in the output.
const CFLAGS: &[&str] = &[
    "-static",
    "-Os",
    "-s",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wl,--build-id=none",
];

/// Everything the images are built from.
pub struct Assets {
    /// The busybox binary.
    pub busybox: Rc<[u8]>,
    /// Applet names the binary supports (`busybox --list`).
    pub applets: Vec<String>,
    /// Shared libraries busybox needs: (absolute path as the loader sees
    /// it, contents).
    pub libs: Vec<(String, Rc<[u8]>)>,
    /// Static `pause` (registry.k8s.io/pause).
    pub pause: Rc<[u8]>,
    /// Static setuid test program (nonewprivs image).
    pub nnp: Rc<[u8]>,
    /// Static nginx / httpd stand-in.
    pub webserver: Rc<[u8]>,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?}: output is not UTF-8"))
}

/// Parses `ldd` output into the absolute paths of the needed objects.
fn parse_ldd(out: &str) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for line in out.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("linux-vdso") || line.starts_with("linux-gate") {
            continue;
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x…)".
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split_whitespace().next().unwrap_or_default();
        ensure!(
            path.starts_with('/'),
            "cannot resolve ldd line {line:?} (is a library missing?)"
        );
        paths.push(path.to_owned());
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

fn read(path: impl AsRef<Path>) -> Result<Rc<[u8]>> {
    let path = path.as_ref();
    Ok(fs::read(path)
        .with_context(|| format!("reading {}", path.display()))?
        .into())
}

fn compile(dir: &Path) -> Result<Vec<Rc<[u8]>>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut outputs = Vec::new();
    for (name, source) in PROGRAMS {
        let src = format!("{name}.c");
        fs::write(dir.join(&src), source).with_context(|| format!("writing {src}"))?;
        run(Command::new("gcc")
            .current_dir(dir)
            .env("LC_ALL", "C")
            .env("SOURCE_DATE_EPOCH", "0")
            .args(CFLAGS)
            .args(["-o", name, &src]))
        .with_context(|| format!("compiling {src} (is gcc/libc6-dev installed?)"))?;
        outputs.push(read(dir.join(name))?);
    }
    Ok(outputs)
}

impl Assets {
    /// Collects busybox and its libraries and compiles the C programs in
    /// `work/c`.
    pub fn collect(work: &Path) -> Result<Self> {
        let busybox = read(BUSYBOX).context("is Debian's busybox package installed?")?;
        let ldd = run(Command::new("ldd").arg(BUSYBOX))?;
        ensure!(
            ldd.contains("=>"),
            "{BUSYBOX} is not dynamically linked (busybox-static installed?); \
             the test images need the dynamic build from the `busybox` package"
        );
        let mut libs = Vec::new();
        for path in parse_ldd(&ldd)? {
            libs.push((path.clone(), read(&path)?));
        }
        let mut applets: Vec<String> = run(Command::new(BUSYBOX).arg("--list"))?
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        applets.sort();
        applets.dedup();
        for applet in &applets {
            ensure!(
                !applet.contains('/') && applet != "." && applet != "..",
                "odd applet name {applet:?}"
            );
        }

        let dir: PathBuf = work.join("c");
        let mut programs = compile(&dir)?.into_iter();
        let mut next = || programs.next().context("compiled program");
        Ok(Self {
            busybox,
            applets,
            libs,
            pause: next()?,
            nnp: next()?,
            webserver: next()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_parsing() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibresolv.so.2 => /lib/x86_64-linux-gnu/libresolv.so.2 (0x00007f39)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f39)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f39)\n";
        assert_eq!(
            parse_ldd(out).expect("parse"),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libresolv.so.2",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }
}
