//! The pull benchmark's images: two large multi-layer images that share
//! all but their last layer, built from a seeded generator (the same
//! arguments give the same digests, so a second push uploads nothing).
//!
//! Each layer holds `files` files of equal size: even ones are random
//! bytes (incompressible), odd ones random hex text (about 2:1 under
//! gzip), so unpacking does real inflate work as well as hashing and
//! writing.

use std::rc::Rc;

use anyhow::{Context, Result, ensure};

use crate::layer::{Layer, Tree};
use crate::oci::{Content, Format, History, RunConfig};

/// What to build.
pub struct Spec {
    /// Uncompressed size of each image in MiB (split evenly over layers).
    pub size_mib: u64,
    /// Layers per image.
    pub layers: usize,
    /// Files per layer.
    pub files: usize,
    /// Generator seed.
    pub seed: u64,
}

/// splitmix64: small, fast and good enough for filler bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    fn hex_text(&mut self, n: usize) -> Vec<u8> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = Vec::with_capacity(n + 16);
        while out.len() < n {
            let mut v = self.next();
            for _ in 0..16 {
                out.push(HEX[(v & 15) as usize]);
                v >>= 4;
            }
            // Lines, like the text files of real images.
            if out.len() % 80 < 16 {
                out.push(b'\n');
            }
        }
        out.truncate(n);
        out
    }
}

/// Deflate level of the benchmark layers: fast to build; inflating costs
/// about the same at any level.
const LEVEL: u8 = 1;

fn layer(spec: &Spec, index: usize, seed: u64) -> Result<Layer> {
    let layer_bytes = spec.size_mib * (1 << 20) / spec.layers as u64;
    let file_bytes = usize::try_from(layer_bytes / spec.files as u64).context("file size")?;
    let mut rng = Rng(seed);
    let mut tree = Tree::new();
    for f in 0..spec.files {
        let data = if f % 2 == 0 {
            rng.bytes(file_bytes)
        } else {
            rng.hex_text(file_bytes)
        };
        tree.file(&format!("/bench/layer{index:02}/file{f:03}"), 0o644, data)?;
    }
    tree.build_with_level(LEVEL)
}

/// The two images' contents: `(A, B)`, B sharing A's layers but the last.
pub fn contents(spec: &Spec) -> Result<(Content, Content)> {
    ensure!(
        spec.layers >= 2,
        "the benchmark images need at least 2 layers"
    );
    ensure!(spec.files >= 1, "the benchmark layers need at least 1 file");
    let mut shared = Vec::new();
    for i in 0..spec.layers - 1 {
        shared.push(Rc::new(layer(spec, i, spec.seed.wrapping_add(i as u64))?));
    }
    let last = spec.layers - 1;
    let a_last = Rc::new(layer(spec, last, spec.seed.wrapping_add(last as u64))?);
    let b_last = Rc::new(layer(spec, last, !spec.seed.wrapping_add(last as u64))?);
    let content = |last: Rc<Layer>| {
        let mut layers = shared.clone();
        layers.push(last);
        Content {
            history: layers
                .iter()
                .map(|_| History::layer("bench layer"))
                .collect(),
            layers,
            config: RunConfig {
                cmd: vec!["/bin/true".into()],
                ..RunConfig::default()
            },
        }
    };
    Ok((content(a_last), content(b_last)))
}

/// The format both images are pushed in.
pub const FORMAT: Format = Format::OciManifest;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_share_all_but_the_last_layer() {
        let spec = Spec {
            size_mib: 2,
            layers: 3,
            files: 2,
            seed: 7,
        };
        let (a, b) = contents(&spec).expect("build");
        let ids = |c: &Content| {
            c.layers
                .iter()
                .map(|l| l.diff_id.clone())
                .collect::<Vec<_>>()
        };
        let (ia, ib) = (ids(&a), ids(&b));
        assert_eq!(ia[..2], ib[..2]);
        assert_ne!(ia[2], ib[2]);
        let (a2, _) = contents(&spec).expect("build again");
        assert_eq!(ids(&a2), ia, "deterministic");
        // Random halves do not compress much.
        let compressed: usize = a.layers.iter().map(|l| l.blob.data.len()).sum();
        assert!(compressed > (2 << 20) / 2, "{compressed}");
    }
}
