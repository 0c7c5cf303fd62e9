//! Upgrade negotiation and the small JSON messages of the streaming protocols.
//!
//! SPDY clients list the protocols they speak in `X-Stream-Protocol-Version`
//! (one header per protocol); WebSocket clients in `Sec-WebSocket-Protocol`
//! (comma separated). The server picks the first protocol, in the client's
//! order of preference, that it supports for the requested operation, and
//! echoes it back. A client that offers nothing usable gets 403 with the
//! supported list in `X-Accepted-Stream-Protocol-Versions`.

use serde::{Deserialize, Serialize};

/// SPDY request/response header listing stream protocols.
pub const HEADER_STREAM_PROTOCOL_VERSION: &str = "X-Stream-Protocol-Version";
/// Response header listing what the server accepts, on a failed negotiation.
pub const HEADER_ACCEPTED_STREAM_PROTOCOL_VERSIONS: &str = "X-Accepted-Stream-Protocol-Versions";
/// WebSocket subprotocol header.
pub const HEADER_WEBSOCKET_PROTOCOL: &str = "Sec-WebSocket-Protocol";

/// The operation a streaming URL was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `/exec/{token}`.
    Exec,
    /// `/attach/{token}`.
    Attach,
    /// `/portforward/{token}`.
    PortForward,
}

/// How the HTTP connection is upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `Upgrade: SPDY/3.1`.
    Spdy,
    /// `Upgrade: websocket`.
    WebSocket,
}

/// A negotiated stream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamProtocol {
    /// `channel.k8s.io` (SPDY v1: stdin/stdout/stderr/error, error as text).
    ChannelV1,
    /// `v2.channel.k8s.io` (SPDY: v1 with stream creation fixes).
    ChannelV2,
    /// `v3.channel.k8s.io` (SPDY: adds the resize stream).
    ChannelV3,
    /// `v4.channel.k8s.io` (SPDY and WebSocket: JSON `Status` on the error
    /// stream, with the exit code).
    ChannelV4,
    /// `v5.channel.k8s.io` (WebSocket: adds the close channel).
    ChannelV5,
    /// `portforward.k8s.io` (SPDY port-forward).
    PortForward,
    /// `SPDY/3.1+portforward.k8s.io` (SPDY frames tunnelled in WebSocket).
    PortForwardTunnel,
    /// `v4.channel.k8s.io` for port-forward: WebSocket channels per port.
    PortForwardChannels,
}

impl StreamProtocol {
    /// The protocol's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ChannelV1 => "channel.k8s.io",
            Self::ChannelV2 => "v2.channel.k8s.io",
            Self::ChannelV3 => "v3.channel.k8s.io",
            Self::ChannelV4 | Self::PortForwardChannels => "v4.channel.k8s.io",
            Self::ChannelV5 => "v5.channel.k8s.io",
            Self::PortForward => "portforward.k8s.io",
            Self::PortForwardTunnel => "SPDY/3.1+portforward.k8s.io",
        }
    }

    /// What the server supports for an operation over a transport, in the
    /// server's order of preference.
    pub fn supported(op: Operation, transport: Transport) -> &'static [StreamProtocol] {
        match (op, transport) {
            (Operation::PortForward, Transport::Spdy) => &[Self::PortForward],
            (Operation::PortForward, Transport::WebSocket) => {
                &[Self::PortForwardTunnel, Self::PortForwardChannels]
            }
            (_, Transport::Spdy) => &[
                Self::ChannelV4,
                Self::ChannelV3,
                Self::ChannelV2,
                Self::ChannelV1,
            ],
            (_, Transport::WebSocket) => &[Self::ChannelV5, Self::ChannelV4],
        }
    }

    /// Whether the error stream carries a JSON `Status` (v4 and later)
    /// rather than plain text.
    pub fn status_is_json(self) -> bool {
        matches!(self, Self::ChannelV4 | Self::ChannelV5)
    }

    /// Whether the protocol has a resize stream/channel.
    pub fn has_resize(self) -> bool {
        matches!(self, Self::ChannelV3 | Self::ChannelV4 | Self::ChannelV5)
    }
}

/// Negotiation failure; answer 403 (SPDY) or 400 (WebSocket) with
/// [`NegotiationError::accepted`] in `X-Accepted-Stream-Protocol-Versions`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// The client offered no protocol.
    #[error("unable to upgrade: no stream protocol offered")]
    NoneOffered {
        /// What the server supports.
        accepted: String,
    },
    /// No offered protocol is supported.
    #[error("unable to upgrade: none of the offered protocols [{offered}] is supported")]
    NoMatch {
        /// What the client offered.
        offered: String,
        /// What the server supports.
        accepted: String,
    },
}

impl NegotiationError {
    /// The comma-separated list the server supports.
    pub fn accepted(&self) -> &str {
        match self {
            Self::NoneOffered { accepted } | Self::NoMatch { accepted, .. } => accepted,
        }
    }
}

/// Splits header values (several headers and/or comma lists) into names.
pub fn parse_offers<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Picks the protocol for `op` over `transport` from the client's offers
/// (the values of `X-Stream-Protocol-Version` or `Sec-WebSocket-Protocol`),
/// honouring the client's order of preference.
pub fn negotiate<'a>(
    op: Operation,
    transport: Transport,
    offers: impl IntoIterator<Item = &'a str>,
) -> Result<StreamProtocol, NegotiationError> {
    let supported = StreamProtocol::supported(op, transport);
    let accepted = supported
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ");
    let offers = parse_offers(offers);
    if offers.is_empty() {
        return Err(NegotiationError::NoneOffered { accepted });
    }
    for offer in &offers {
        if let Some(p) = supported.iter().find(|p| p.name() == *offer) {
            return Ok(*p);
        }
    }
    Err(NegotiationError::NoMatch {
        offered: offers.join(", "),
        accepted,
    })
}

/// Object metadata of a `Status` (always empty here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMeta {}

/// One cause in `Status.details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// Machine-readable reason (`ExitCode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The value (the exit code in decimal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `Status.details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    /// The causes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// The Kubernetes `Status` sent on the error stream (v4 and later) when an
/// exec or attach ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Always `{}`.
    #[serde(default)]
    pub metadata: ListMeta,
    /// `Success` or `Failure`.
    pub status: String,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Machine-readable reason (`NonZeroExitCode`, `InternalError`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Extra detail (the exit code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

/// `Status.reason` for a non-zero exit.
pub const REASON_NON_ZERO_EXIT_CODE: &str = "NonZeroExitCode";
/// `StatusCause.reason` carrying the exit code.
pub const CAUSE_EXIT_CODE: &str = "ExitCode";

impl Status {
    /// The command exited 0.
    pub fn success() -> Self {
        Self {
            status: "Success".into(),
            ..Self::default()
        }
    }

    /// The command exited with `code` (non-zero).
    pub fn exit_code(code: i32) -> Self {
        Self {
            metadata: ListMeta {},
            status: "Failure".into(),
            message: Some(format!(
                "command terminated with non-zero exit code: exit status {code}"
            )),
            reason: Some(REASON_NON_ZERO_EXIT_CODE.into()),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    reason: Some(CAUSE_EXIT_CODE.into()),
                    message: Some(code.to_string()),
                }],
            }),
        }
    }

    /// Exit status as the exec result: `success()` for 0.
    pub fn from_exit(code: i32) -> Self {
        if code == 0 {
            Self::success()
        } else {
            Self::exit_code(code)
        }
    }

    /// Any other failure (the command could not run, the stream broke).
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            status: "Failure".into(),
            message: Some(message.into()),
            reason: Some("InternalError".into()),
            ..Self::default()
        }
    }

    /// The exit code this status reports: 0 for success, the `ExitCode`
    /// cause for a non-zero exit, `None` for other failures.
    pub fn code(&self) -> Option<i32> {
        if self.status == "Success" {
            return Some(0);
        }
        if self.reason.as_deref() != Some(REASON_NON_ZERO_EXIT_CODE) {
            return None;
        }
        self.details
            .as_ref()?
            .causes
            .iter()
            .find(|c| c.reason.as_deref() == Some(CAUSE_EXIT_CODE))?
            .message
            .as_ref()?
            .parse()
            .ok()
    }

    /// The JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// What to write on the error stream for `protocol`: JSON for v4 and
    /// later; for v1-v3, nothing on success and the message as text.
    pub fn error_stream_payload(&self, protocol: StreamProtocol) -> Option<Vec<u8>> {
        if protocol.status_is_json() {
            return Some(self.to_json());
        }
        if self.status == "Success" {
            return None;
        }
        Some(self.message.clone().unwrap_or_default().into_bytes())
    }
}

/// A terminal size from the resize stream/channel: `{"Width":W,"Height":H}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

impl TerminalSize {
    /// Parses one resize message (a WebSocket resize channel message).
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Errors from [`ResizeDecoder`].
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    /// A message is larger than the bound.
    #[error("resize message longer than {0} bytes")]
    TooLong(usize),
    /// Not a resize message.
    #[error("invalid resize message")]
    Json(#[source] serde_json::Error),
}

/// Splits the SPDY resize stream (concatenated JSON objects) into sizes,
/// buffering at most `max_len` bytes of an incomplete message.
#[derive(Debug)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
    max_len: usize,
}

impl Default for ResizeDecoder {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl ResizeDecoder {
    /// A decoder with a per-message bound.
    pub fn new(max_len: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_len,
        }
    }

    /// Feeds bytes read from the stream; returns the complete sizes.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<TerminalSize>, ResizeError> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut used = 0;
        {
            let mut it =
                serde_json::Deserializer::from_slice(&self.buf).into_iter::<TerminalSize>();
            loop {
                match it.next() {
                    Some(Ok(s)) => {
                        sizes.push(s);
                        used = it.byte_offset();
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => return Err(ResizeError::Json(e)),
                    None => {
                        used = it.byte_offset();
                        break;
                    }
                }
            }
        }
        self.buf.drain(..used);
        if self.buf.len() > self.max_len {
            return Err(ResizeError::TooLong(self.max_len));
        }
        Ok(sizes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_in_client_order() {
        let p = negotiate(
            Operation::Exec,
            Transport::Spdy,
            ["v4.channel.k8s.io", "v3.channel.k8s.io"],
        );
        assert_eq!(p, Ok(StreamProtocol::ChannelV4));
        let p = negotiate(
            Operation::Exec,
            Transport::Spdy,
            ["v2.channel.k8s.io", "v4.channel.k8s.io"],
        );
        assert_eq!(p, Ok(StreamProtocol::ChannelV2));
        let p = negotiate(
            Operation::Attach,
            Transport::WebSocket,
            ["v5.channel.k8s.io, v4.channel.k8s.io"],
        );
        assert_eq!(p, Ok(StreamProtocol::ChannelV5));
        let p = negotiate(
            Operation::PortForward,
            Transport::WebSocket,
            ["SPDY/3.1+portforward.k8s.io", "v4.channel.k8s.io"],
        );
        assert_eq!(p, Ok(StreamProtocol::PortForwardTunnel));
        let p = negotiate(
            Operation::PortForward,
            Transport::WebSocket,
            ["v4.channel.k8s.io"],
        );
        assert_eq!(p, Ok(StreamProtocol::PortForwardChannels));
        let p = negotiate(
            Operation::PortForward,
            Transport::Spdy,
            ["portforward.k8s.io"],
        );
        assert_eq!(p, Ok(StreamProtocol::PortForward));
    }

    #[test]
    fn negotiation_failures_list_accepted() {
        let e = negotiate(Operation::Exec, Transport::Spdy, ["v9.channel.k8s.io"])
            .expect_err("no match");
        assert_eq!(
            e.accepted(),
            "v4.channel.k8s.io, v3.channel.k8s.io, v2.channel.k8s.io, channel.k8s.io"
        );
        let e = negotiate(Operation::Exec, Transport::WebSocket, [" , "]).expect_err("none");
        assert!(matches!(e, NegotiationError::NoneOffered { .. }));
        // Port-forward never negotiates an exec protocol.
        assert!(
            negotiate(
                Operation::PortForward,
                Transport::Spdy,
                ["v4.channel.k8s.io"]
            )
            .is_err()
        );
    }

    #[test]
    fn status_json_matches_kubernetes() {
        assert_eq!(
            String::from_utf8(Status::success().to_json()).expect("utf8"),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let s = Status::exit_code(3);
        let json = String::from_utf8(s.to_json()).expect("utf8");
        assert_eq!(
            json,
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        let back: Status = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.code(), Some(3));
        assert_eq!(Status::from_exit(0).code(), Some(0));
        assert_eq!(Status::failure("boom").code(), None);
        assert_eq!(
            Status::success().error_stream_payload(StreamProtocol::ChannelV2),
            None
        );
        assert_eq!(
            Status::failure("boom").error_stream_payload(StreamProtocol::ChannelV3),
            Some(b"boom".to_vec())
        );
    }

    #[test]
    fn resize_messages() {
        let t = TerminalSize::from_json(br#"{"Width":80,"Height":24}"#).expect("parse");
        assert_eq!(
            t,
            TerminalSize {
                width: 80,
                height: 24
            }
        );
        assert_eq!(t.to_json(), br#"{"Width":80,"Height":24}"#);
        let mut d = ResizeDecoder::default();
        assert_eq!(d.push(br#"{"Width":1,"Hei"#).expect("partial"), vec![]);
        let got = d
            .push(b"ght\":2}\n{\"Width\":3,\"Height\":4}\n")
            .expect("two");
        assert_eq!(
            got,
            vec![
                TerminalSize {
                    width: 1,
                    height: 2
                },
                TerminalSize {
                    width: 3,
                    height: 4
                }
            ]
        );
        assert!(d.push(br#"{"Width":"wide","Height":1}"#).is_err());
        let mut d = ResizeDecoder::new(16);
        assert!(d.push(&[b' '; 8]).expect("ws").is_empty());
        assert!(matches!(
            d.push(br#"{"Width":1,"Height":2222222222222222"#),
            Err(ResizeError::TooLong(16) | ResizeError::Json(_))
        ));
    }
}
