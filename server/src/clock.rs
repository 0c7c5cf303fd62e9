//! Wall-clock time as the CRI carries it (nanoseconds since the Unix
//! epoch), and the random ids of pods, containers and exec files.

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new random 64-hex-digit id (the form pod and container ids take).
pub fn new_id() -> Result<String, crate::error::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        crate::error::Error::internal("generating an id", std::io::Error::other(e.to_string()))
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
