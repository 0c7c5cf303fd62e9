//! The CRI log file: `<RFC3339Nano> <stdout|stderr> <P|F> <content>\n`.
//!
//! Output is cut at newlines; a line longer than [`MAX_LINE`] is written as
//! `P` (partial) records of that size and a final `F` record, and a piece
//! left without a newline when the stream ends is written as a `P` record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest content of one record.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// A container output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    fn name(self) -> &'static [u8] {
        match self {
            Self::Stdout => b"stdout",
            Self::Stderr => b"stderr",
        }
    }
}

/// Formats `t` as RFC 3339 in UTC with nine fractional digits, e.g.
/// `2026-11-29T07:12:00.123456789Z`.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Cuts a stream into records; shared by the log file and its tests.
#[derive(Debug, Default)]
pub(crate) struct LineCutter {
    pending: Vec<u8>,
}

impl LineCutter {
    /// Feeds `data`, calling `emit(partial, content)` per complete record.
    pub fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(bool, &[u8])) {
        while !data.is_empty() {
            let room = MAX_LINE - self.pending.len();
            match data.iter().take(room + 1).position(|&b| b == b'\n') {
                Some(i) => {
                    if self.pending.is_empty() {
                        emit(false, &data[..i]);
                    } else {
                        self.pending.extend_from_slice(&data[..i]);
                        emit(false, &self.pending);
                        self.pending.clear();
                    }
                    data = &data[i + 1..];
                }
                None if data.len() >= room => {
                    self.pending.extend_from_slice(&data[..room]);
                    emit(true, &self.pending);
                    self.pending.clear();
                    data = &data[room..];
                }
                None => {
                    self.pending.extend_from_slice(data);
                    data = &[];
                }
            }
        }
        if self.pending.is_empty() && self.pending.capacity() > MAX_LINE {
            self.pending = Vec::new();
        }
    }

    /// Ends the stream: a piece left without newline becomes a partial
    /// record.
    pub fn finish(&mut self, mut emit: impl FnMut(bool, &[u8])) {
        if !self.pending.is_empty() {
            emit(true, &self.pending);
        }
        self.pending = Vec::new();
    }
}

/// The container's CRI log file.
#[derive(Debug)]
pub(crate) struct CriLog {
    path: Option<PathBuf>,
    file: Option<File>,
    cutters: [LineCutter; 2],
    out: Vec<u8>,
    /// A write error not yet reported; only the first of a series is kept.
    pub failed: Option<std::io::Error>,
    /// Writes have been failing since the last open.
    failing: bool,
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
}

impl CriLog {
    /// Opens (creating) the log at `path`; no log at all for `None`.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = path.map(open_log).transpose()?;
        Ok(Self {
            path: path.map(Path::to_owned),
            file,
            cutters: Default::default(),
            out: Vec::new(),
            failed: None,
            failing: false,
        })
    }

    /// Opens the log path anew (kubelet rotated it) and only then closes
    /// the old file; on failure nothing changes and nothing is created
    /// elsewhere.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = open_log(path)?;
        self.file = Some(file);
        self.failed = None;
        self.failing = false;
        Ok(())
    }

    /// Writes `data` of `stream`, complete lines only.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        if self.file.is_none() {
            return;
        }
        let ts = rfc3339_nano(SystemTime::now());
        let out = &mut self.out;
        self.cutters[stream as usize].feed(data, |partial, content| {
            record(out, &ts, stream, partial, content)
        });
        self.flush();
    }

    /// Ends `stream`: writes its unfinished line as a partial record.
    pub fn finish(&mut self, stream: Stream) {
        if self.file.is_none() {
            return;
        }
        let ts = rfc3339_nano(SystemTime::now());
        let out = &mut self.out;
        self.cutters[stream as usize]
            .finish(|partial, content| record(out, &ts, stream, partial, content));
        self.flush();
    }

    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        if let Some(file) = &mut self.file {
            match file.write_all(&self.out) {
                Ok(()) => self.failing = false,
                Err(e) if !self.failing => {
                    self.failing = true;
                    self.failed = Some(e);
                }
                Err(_) => {}
            }
        }
        self.out.clear();
        if self.out.capacity() > 4 * MAX_LINE {
            self.out = Vec::new();
        }
    }
}

/// Appends one record to `out`.
pub(crate) fn record(out: &mut Vec<u8>, ts: &str, stream: Stream, partial: bool, content: &[u8]) {
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.name());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_849_920, 123_456_789);
        assert_eq!(rfc3339_nano(t), "2026-11-28T07:12:00.123456789Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_nano(leap), "2000-02-29T00:00:00.000000000Z");
        let end = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // 2024-12-31 23:59:59
        assert_eq!(rfc3339_nano(end), "2024-12-31T23:59:59.000000000Z");
    }

    fn cut(chunks: &[&[u8]]) -> Vec<(bool, Vec<u8>)> {
        let mut c = LineCutter::default();
        let mut v = Vec::new();
        for chunk in chunks {
            c.feed(chunk, |p, s| v.push((p, s.to_vec())));
        }
        c.finish(|p, s| v.push((p, s.to_vec())));
        v
    }

    #[test]
    fn lines_and_partials() {
        assert_eq!(
            cut(&[b"a\nb", b"c\n\nd"]),
            vec![
                (false, b"a".to_vec()),
                (false, b"bc".to_vec()),
                (false, b"".to_vec()),
                (true, b"d".to_vec()),
            ]
        );
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let mut input = long.clone();
        input.push(b'\n');
        let got = cut(&[&input[..100], &input[100..]]);
        assert_eq!(got.len(), 3);
        assert!(got[0].0 && got[1].0 && !got[2].0);
        assert_eq!(got[0].1.len(), MAX_LINE);
        assert_eq!(got[2].1.len(), 5);
        // A line of exactly MAX_LINE bytes stays one full record.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        let got = cut(&[&exact]);
        assert_eq!(got, vec![(false, vec![b'y'; MAX_LINE])]);
    }

    #[test]
    fn record_format() {
        let mut out = Vec::new();
        record(&mut out, "T", Stream::Stderr, true, b"hi");
        record(&mut out, "T", Stream::Stdout, false, b"");
        assert_eq!(out, b"T stderr P hi\nT stdout F \n");
    }

    #[test]
    fn reopen_failure_creates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("logs");
        std::fs::create_dir(&sub).expect("mkdir");
        let path = sub.join("c.log");
        let mut log = CriLog::open(Some(&path)).expect("open");
        log.write(Stream::Stdout, b"one\n");
        std::fs::rename(&path, sub.join("c.log.1")).expect("rename");
        log.reopen().expect("reopen");
        log.write(Stream::Stdout, b"two\n");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.ends_with(" stdout F two\n"), "{text}");
        std::fs::remove_dir_all(&sub).expect("rm");
        assert!(log.reopen().is_err());
        assert!(!sub.exists());
    }
}
