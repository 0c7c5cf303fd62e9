//! Lexical checks of the names inside a layer tar: an entry path becomes a
//! list of plain components (no `..`, not absolute) before anything
//! touches the filesystem, and whiteout names are classified.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Why a name in the archive is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// Starts with `/`.
    Absolute,
    /// Has a `..` component.
    DotDot,
    /// Names the layer root where a file is needed.
    Empty,
}

impl PathRefusal {
    /// A short human reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Absolute => "absolute path refused",
            Self::DotDot => "'..' component refused",
            Self::Empty => "empty path refused",
        }
    }
}

/// Splits a tar path into plain components; `.` and empty components are
/// dropped, a leading `/` or any `..` is refused. An empty result is the
/// layer root itself.
pub fn components(raw: &[u8]) -> Result<Vec<OsString>, PathRefusal> {
    if raw.first() == Some(&b'/') {
        return Err(PathRefusal::Absolute);
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(PathRefusal::DotDot),
            c => out.push(OsStr::from_bytes(c).to_owned()),
        }
    }
    Ok(out)
}

/// OCI whiteout prefix.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// OCI opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What a final path component means.
#[derive(Debug, PartialEq, Eq)]
pub enum Name<'a> {
    /// A normal file name.
    Plain,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.NAME`: NAME is deleted.
    Whiteout(&'a OsStr),
    /// Another `.wh..wh.` name (aufs metadata): ignored.
    AufsMeta,
    /// `.wh.` with an empty, `.` or `..` name: refused.
    BadWhiteout,
}

/// Classifies a final component.
pub fn classify(name: &OsStr) -> Name<'_> {
    let b = name.as_bytes();
    if b == OPAQUE_MARKER.as_bytes() {
        return Name::Opaque;
    }
    if b.starts_with(b".wh..wh.") {
        return Name::AufsMeta;
    }
    match b.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        None => Name::Plain,
        Some(b"" | b"." | b"..") => Name::BadWhiteout,
        Some(rest) => Name::Whiteout(OsStr::from_bytes(rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_refuse_escapes() {
        assert_eq!(components(b"./a//b/./c/").expect("ok"), ["a", "b", "c"]);
        assert!(components(b"./").expect("ok").is_empty());
        assert_eq!(components(b"/etc/passwd"), Err(PathRefusal::Absolute));
        assert_eq!(components(b"../x"), Err(PathRefusal::DotDot));
        assert_eq!(components(b"a/../../x"), Err(PathRefusal::DotDot));
        assert_eq!(components(b"a/..").err(), Some(PathRefusal::DotDot));
        assert_eq!(components(b"..a/b..").expect("ok"), ["..a", "b.."]);
    }

    #[test]
    fn whiteouts() {
        assert_eq!(classify(OsStr::new("x")), Name::Plain);
        assert_eq!(classify(OsStr::new(".wh..wh..opq")), Name::Opaque);
        assert_eq!(classify(OsStr::new(".wh..wh.plnk")), Name::AufsMeta);
        assert_eq!(
            classify(OsStr::new(".wh.x")),
            Name::Whiteout(OsStr::new("x"))
        );
        assert_eq!(classify(OsStr::new(".wh..")), Name::BadWhiteout);
        assert_eq!(classify(OsStr::new(".wh...")), Name::BadWhiteout);
        assert_eq!(classify(OsStr::new(".wh.")), Name::BadWhiteout);
    }
}
