//! The AWS event-stream framing (`application/vnd.amazon.eventstream`), in which Bedrock's
//! ConverseStream answers. Each message is self-delimiting:
//!
//! ```text
//! total length u32 | headers length u32 | prelude CRC u32 | headers | payload | message CRC u32
//! ```
//!
//! (big-endian; CRC-32/ISO-HDLC, the prelude CRC over the two lengths, the message CRC
//! over everything before it). Network chunks split messages anywhere, so the decoder
//! keeps the unfinished tail; a corrupt frame is an error, since once a length cannot be
//! trusted there is no way to find where the next message starts.

use std::fmt;

/// AWS caps a message at 16 MiB and its headers at 128 KiB. Enforcing the caps bounds
/// what a corrupt or hostile length can make the decoder buffer.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;
pub const MAX_HEADERS_LEN: usize = 128 * 1024;

/// The two lengths and the prelude CRC.
const PRELUDE_LEN: usize = 12;
const CRC_LEN: usize = 4;
const MIN_FRAME_LEN: usize = PRELUDE_LEN + CRC_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(&'a [u8]),
    String(&'a str),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: HeaderValue<'a>,
}

impl<'a> Header<'a> {
    /// A string header, the only kind the AWS `:`-prefixed headers use.
    pub fn string(name: &'a str, value: &'a str) -> Self {
        Header { name, value: HeaderValue::String(value) }
    }
}

/// One decoded message, borrowing from the decoder's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub headers: Vec<Header<'a>>,
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&HeaderValue<'a>> {
        self.headers.iter().find(|h| h.name == name).map(|h| &h.value)
    }

    /// A header's value when it is a string; `None` when absent or of another type.
    pub fn string_header(&self, name: &str) -> Option<&'a str> {
        match self.header(name) {
            Some(HeaderValue::String(s)) => Some(s),
            _ => None,
        }
    }

    /// `event`, `exception` (a modelled error such as `throttlingException`) or `error`.
    pub fn message_type(&self) -> Option<&'a str> {
        self.string_header(":message-type")
    }

    pub fn event_type(&self) -> Option<&'a str> {
        self.string_header(":event-type")
    }

    pub fn exception_type(&self) -> Option<&'a str> {
        self.string_header(":exception-type")
    }

    pub fn error_code(&self) -> Option<&'a str> {
        self.string_header(":error-code")
    }

    pub fn error_message(&self) -> Option<&'a str> {
        self.string_header(":error-message")
    }

    pub fn content_type(&self) -> Option<&'a str> {
        self.string_header(":content-type")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    PreludeCrc {
        expected: u32,
        computed: u32,
    },
    MessageCrc {
        expected: u32,
        computed: u32,
    },
    /// A total length below the 16-byte minimum or above [`MAX_FRAME_LEN`].
    FrameLength(u32),
    /// A headers length that does not fit in the frame or exceeds [`MAX_HEADERS_LEN`].
    HeadersLength {
        headers: u32,
        total: u32,
    },
    /// A header runs past the end of the headers section.
    TruncatedHeader,
    UnknownHeaderType(u8),
    /// A header name or string value that is not UTF-8.
    InvalidUtf8,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::PreludeCrc { expected, computed } => {
                write!(f, "event-stream prelude CRC mismatch: frame says {expected:#010x}, computed {computed:#010x}")
            }
            DecodeError::MessageCrc { expected, computed } => {
                write!(f, "event-stream message CRC mismatch: frame says {expected:#010x}, computed {computed:#010x}")
            }
            DecodeError::FrameLength(total) => write!(f, "event-stream frame length {total} out of bounds"),
            DecodeError::HeadersLength { headers, total } => {
                write!(f, "event-stream headers length {headers} out of bounds for a frame of {total} bytes")
            }
            DecodeError::TruncatedHeader => write!(f, "event-stream header runs past the headers section"),
            DecodeError::UnknownHeaderType(t) => write!(f, "unknown event-stream header value type {t}"),
            DecodeError::InvalidUtf8 => write!(f, "event-stream header name or string value is not UTF-8"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A message the encoder cannot frame: each is a length over its field's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// Over 255 bytes.
    HeaderName(usize),
    /// A byte-array or string value over 65535 bytes.
    HeaderValue(usize),
    /// Over [`MAX_HEADERS_LEN`].
    Headers(usize),
    /// Over [`MAX_FRAME_LEN`].
    Frame(usize),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, len) = match self {
            EncodeError::HeaderName(len) => ("header name", len),
            EncodeError::HeaderValue(len) => ("header value", len),
            EncodeError::Headers(len) => ("headers section", len),
            EncodeError::Frame(len) => ("frame", len),
        };
        write!(f, "event-stream {what} of {len} bytes is too long")
    }
}

impl std::error::Error for EncodeError {}

/// Frames one message.
pub fn encode(headers: &[Header<'_>], payload: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut encoded_headers = Vec::new();
    for header in headers {
        write_header(&mut encoded_headers, header)?;
    }
    if encoded_headers.len() > MAX_HEADERS_LEN {
        return Err(EncodeError::Headers(encoded_headers.len()));
    }
    let total = MIN_FRAME_LEN + encoded_headers.len() + payload.len();
    if total > MAX_FRAME_LEN {
        return Err(EncodeError::Frame(total));
    }
    let mut out = Vec::with_capacity(total);
    // Both lengths fit in u32: they were just checked against caps far below u32::MAX.
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(encoded_headers.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out.extend_from_slice(&encoded_headers);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    Ok(out)
}

fn write_header(out: &mut Vec<u8>, header: &Header<'_>) -> Result<(), EncodeError> {
    let name_len = u8::try_from(header.name.len()).map_err(|_| EncodeError::HeaderName(header.name.len()))?;
    out.push(name_len);
    out.extend_from_slice(header.name.as_bytes());
    match header.value {
        HeaderValue::Bool(true) => out.push(0),
        HeaderValue::Bool(false) => out.push(1),
        HeaderValue::Byte(v) => write_typed(out, 2, &v.to_be_bytes()),
        HeaderValue::Short(v) => write_typed(out, 3, &v.to_be_bytes()),
        HeaderValue::Int(v) => write_typed(out, 4, &v.to_be_bytes()),
        HeaderValue::Long(v) => write_typed(out, 5, &v.to_be_bytes()),
        HeaderValue::Bytes(v) => write_sized(out, 6, v)?,
        HeaderValue::String(v) => write_sized(out, 7, v.as_bytes())?,
        HeaderValue::Timestamp(v) => write_typed(out, 8, &v.to_be_bytes()),
        HeaderValue::Uuid(v) => write_typed(out, 9, &v),
    }
    Ok(())
}

fn write_typed(out: &mut Vec<u8>, value_type: u8, value: &[u8]) {
    out.push(value_type);
    out.extend_from_slice(value);
}

fn write_sized(out: &mut Vec<u8>, value_type: u8, value: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(value.len()).map_err(|_| EncodeError::HeaderValue(value.len()))?;
    write_typed(out, value_type, &len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// Incremental decoder: feed it the response body's chunks as they arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Set by the first corrupt frame; the stream cannot be resynchronised after it.
    failed: Option<DecodeError>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; calls `on_message` for every message completed by them, in order. A
    /// corrupt frame stops decoding: the messages before it are delivered, then this and
    /// every later call return the error.
    pub fn push(&mut self, chunk: &[u8], mut on_message: impl FnMut(Message<'_>)) -> Result<(), DecodeError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        self.buf.extend_from_slice(chunk);
        let mut consumed = 0;
        let outcome = loop {
            match next_message(&self.buf[consumed..]) {
                Ok(Some((message, len))) => {
                    on_message(message);
                    consumed += len;
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        match outcome {
            Ok(()) => {
                self.buf.drain(..consumed);
                Ok(())
            }
            Err(error) => {
                self.buf = Vec::new();
                self.failed = Some(error.clone());
                Err(error)
            }
        }
    }

    /// True when bytes of an unfinished message are pending: at end of stream, a sign that
    /// the stream was cut mid-message.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// The message at the start of `bytes` and its frame length, or `None` while the frame is
/// incomplete.
fn next_message(bytes: &[u8]) -> Result<Option<(Message<'_>, usize)>, DecodeError> {
    let Some(prelude) = read_prelude(bytes)? else {
        return Ok(None);
    };
    match bytes.get(..prelude.total) {
        Some(frame) => Ok(Some((decode_frame(frame, prelude.headers)?, prelude.total))),
        None => Ok(None),
    }
}

/// Frame and headers lengths, checked against each other and the caps.
struct Prelude {
    total: usize,
    headers: usize,
}

/// Checks the prelude as soon as it has arrived, so that a corrupt length is reported at
/// once rather than after buffering up to 16 MiB.
fn read_prelude(bytes: &[u8]) -> Result<Option<Prelude>, DecodeError> {
    let Some(prelude) = bytes.get(..PRELUDE_LEN) else {
        return Ok(None);
    };
    let mut reader = Reader { bytes: prelude };
    let (total, headers, expected) = (reader.u32()?, reader.u32()?, reader.u32()?);
    let computed = crc32(&prelude[..8]);
    if computed != expected {
        return Err(DecodeError::PreludeCrc { expected, computed });
    }
    let (total_len, headers_len) = (total as usize, headers as usize);
    if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&total_len) {
        return Err(DecodeError::FrameLength(total));
    }
    if headers_len > MAX_HEADERS_LEN || headers_len > total_len - MIN_FRAME_LEN {
        return Err(DecodeError::HeadersLength { headers, total });
    }
    Ok(Some(Prelude { total: total_len, headers: headers_len }))
}

/// Decodes one whole frame; the slicing cannot fail because `read_prelude` checked that
/// the prelude, headers and CRC fit in it.
fn decode_frame(frame: &[u8], headers_len: usize) -> Result<Message<'_>, DecodeError> {
    let (body, crc) = frame.split_at(frame.len() - CRC_LEN);
    let expected = Reader { bytes: crc }.u32()?;
    let computed = crc32(body);
    if computed != expected {
        return Err(DecodeError::MessageCrc { expected, computed });
    }
    let (headers, payload) = body[PRELUDE_LEN..].split_at(headers_len);
    Ok(Message { headers: decode_headers(headers)?, payload })
}

fn decode_headers(bytes: &[u8]) -> Result<Vec<Header<'_>>, DecodeError> {
    let mut reader = Reader { bytes };
    let mut headers = Vec::new();
    while !reader.bytes.is_empty() {
        let name_len = reader.u8()?;
        let name = std::str::from_utf8(reader.take(usize::from(name_len))?).map_err(|_| DecodeError::InvalidUtf8)?;
        headers.push(Header { name, value: decode_value(&mut reader)? });
    }
    Ok(headers)
}

fn decode_value<'a>(reader: &mut Reader<'a>) -> Result<HeaderValue<'a>, DecodeError> {
    Ok(match reader.u8()? {
        0 => HeaderValue::Bool(true),
        1 => HeaderValue::Bool(false),
        2 => HeaderValue::Byte(i8::from_be_bytes(reader.array()?)),
        3 => HeaderValue::Short(i16::from_be_bytes(reader.array()?)),
        4 => HeaderValue::Int(i32::from_be_bytes(reader.array()?)),
        5 => HeaderValue::Long(i64::from_be_bytes(reader.array()?)),
        6 => HeaderValue::Bytes(reader.sized()?),
        7 => HeaderValue::String(std::str::from_utf8(reader.sized()?).map_err(|_| DecodeError::InvalidUtf8)?),
        8 => HeaderValue::Timestamp(i64::from_be_bytes(reader.array()?)),
        9 => HeaderValue::Uuid(reader.array()?),
        other => return Err(DecodeError::UnknownHeaderType(other)),
    })
}

/// Bounds-checked big-endian reads: running out of bytes is an error, not a panic.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError::TruncatedHeader);
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?.try_into().map_err(|_| DecodeError::TruncatedHeader)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A value preceded by its u16 length.
    fn sized(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = u16::from_be_bytes(self.array()?);
        self.take(usize::from(len))
    }
}

/// CRC-32/ISO-HDLC (reflected polynomial 0xEDB88320, the zlib/gzip CRC), table-driven.
fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| CRC_TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8))
}

/// The CRC of every byte value, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    // Golden frames from the aws-c-event-stream test suite (awslabs/aws-c-event-stream,
    // tests/message_deserializer_test.c and message_streaming_decoder_test.c).
    const EMPTY: &[u8] = b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2\x48\xeb\x7d\x98\xc8\xff";
    const PAYLOAD_ONLY: &[u8] = b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfd\x52\x8c\x5a{'foo':'bar'}\xc3\x65\x39\x36";
    const CONTENT_TYPE: &[u8] = b"\x00\x00\x00\x3d\x00\x00\x00\x20\x07\xfd\x83\x96\
\x0ccontent-type\x07\x00\x10application/json{'foo':'bar'}\x8d\x9c\x08\xb1";
    const INT_HEADER: &[u8] =
        b"\x00\x00\x00\x1b\x00\x00\x00\x0b\xe5\xc0\xa0\x72\x05event\x04\x00\x00\x00\x20\x04\xa1\xd4\x7c";
    const BOOL_HEADER: &[u8] = b"\x00\x00\x00\x17\x00\x00\x00\x07\x29\x86\x01\x58\x05event\x00\x4b\x4d\x2b\xe7";
    const EMPTY_VALUES: &[u8] = b"\x00\x00\x00\x22\x00\x00\x00\x12\x2d\x9a\xd2\x45\
\x04buff\x06\x00\x00\x06string\x07\x00\x00\xc8\x4c\xf8\x53";
    /// Headers length 8 in a 20-byte frame, which has room for 4.
    const HEADERS_TOO_LONG: &[u8] =
        b"\x00\x00\x00\x14\x00\x00\x00\x08\xfe\x99\x66\x19\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    /// A total length of 12, below the 16-byte minimum.
    const TOO_SHORT: &[u8] = b"\x00\x00\x00\x0c\x00\x00\x00\x00\xa0\xd2\x32\x68\x00";

    /// A decoded message, owned, for comparisons across pushes.
    type Owned = (Vec<(String, String)>, Vec<u8>);

    fn owned(message: &Message<'_>) -> Owned {
        let headers = message.headers.iter().map(|h| (h.name.to_string(), format!("{:?}", h.value))).collect();
        (headers, message.payload.to_vec())
    }

    /// Feeds `input` cut at `cuts`; returns the messages and the first error.
    fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> (Vec<Owned>, Result<(), DecodeError>, bool) {
        let mut decoder = Decoder::new();
        let mut messages = Vec::new();
        let mut last = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            if let Err(error) = decoder.push(&input[last..cut], |m| messages.push(owned(&m))) {
                return (messages, Err(error), decoder.has_partial());
            }
            last = cut;
        }
        (messages, Ok(()), decoder.has_partial())
    }

    fn decode_one(frame: &[u8]) -> Result<Owned, DecodeError> {
        let (mut messages, result, partial) = decode_in_pieces(frame, &[]);
        result?;
        assert!(!partial && messages.len() == 1, "one whole message expected");
        Ok(messages.remove(0))
    }

    fn expected(headers: &[Header<'_>], payload: &[u8]) -> Owned {
        owned(&Message { headers: headers.to_vec(), payload })
    }

    /// A frame around hand-made header bytes, with correct lengths and CRCs.
    fn frame_with_raw_headers(headers: &[u8], payload: &[u8]) -> Vec<u8> {
        let total = (MIN_FRAME_LEN + headers.len() + payload.len()) as u32;
        let mut out = total.to_be_bytes().to_vec();
        out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32(&out).to_be_bytes());
        out.extend_from_slice(headers);
        out.extend_from_slice(payload);
        out.extend_from_slice(&crc32(&out).to_be_bytes());
        out
    }

    fn converse_stream() -> Vec<Vec<u8>> {
        let event = |event_type, payload: &str| {
            let headers = [
                Header::string(":event-type", event_type),
                Header::string(":content-type", "application/json"),
                Header::string(":message-type", "event"),
            ];
            encode(&headers, payload.as_bytes()).expect("encode")
        };
        vec![
            event("messageStart", r#"{"role":"assistant"}"#),
            event("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"Hello"}}"#),
            event("messageStop", r#"{"stopReason":"end_turn"}"#),
        ]
    }

    #[test]
    fn crc32_is_the_iso_hdlc_crc() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn golden_frames_decode_and_encode_byte_for_byte() {
        let json = b"{'foo':'bar'}";
        let cases: [(&[u8], &[Header<'_>], &[u8]); 6] = [
            (EMPTY, &[], b""),
            (PAYLOAD_ONLY, &[], json),
            (CONTENT_TYPE, &[Header::string("content-type", "application/json")], json),
            (INT_HEADER, &[Header { name: "event", value: HeaderValue::Int(0x20) }], b""),
            (BOOL_HEADER, &[Header { name: "event", value: HeaderValue::Bool(true) }], b""),
            (
                EMPTY_VALUES,
                &[Header { name: "buff", value: HeaderValue::Bytes(b"") }, Header::string("string", "")],
                b"",
            ),
        ];
        for (frame, headers, payload) in cases {
            assert_eq!(decode_one(frame), Ok(expected(headers, payload)));
            assert_eq!(encode(headers, payload).as_deref(), Ok(frame));
        }
    }

    #[test]
    fn golden_frames_with_bad_lengths_are_rejected() {
        assert_eq!(decode_one(HEADERS_TOO_LONG), Err(DecodeError::HeadersLength { headers: 8, total: 20 }));
        assert_eq!(decode_one(TOO_SHORT), Err(DecodeError::FrameLength(12)));
    }

    #[test]
    fn every_header_type_round_trips() {
        let headers = [
            Header { name: "t", value: HeaderValue::Bool(true) },
            Header { name: "f", value: HeaderValue::Bool(false) },
            Header { name: "byte", value: HeaderValue::Byte(-7) },
            Header { name: "short", value: HeaderValue::Short(-300) },
            Header { name: "int", value: HeaderValue::Int(i32::MIN) },
            Header { name: "long", value: HeaderValue::Long(i64::MAX) },
            Header { name: "bytes", value: HeaderValue::Bytes(&[0, 255, 1]) },
            Header::string("str", "héllo"),
            Header { name: "ts", value: HeaderValue::Timestamp(1_440_938_160_000) },
            Header { name: "id", value: HeaderValue::Uuid(*b"0123456789abcdef") },
        ];
        let frame = encode(&headers, b"\x00payload\xff").expect("encode");
        let mut decoder = Decoder::new();
        let mut seen = 0;
        decoder
            .push(&frame, |m| {
                assert_eq!(m, Message { headers: headers.to_vec(), payload: b"\x00payload\xff" });
                seen += 1;
            })
            .expect("decode");
        assert_eq!(seen, 1);
    }

    #[test]
    fn message_kinds_are_read_from_the_aws_headers() {
        let stream = converse_stream().concat();
        let mut decoder = Decoder::new();
        let mut kinds = Vec::new();
        decoder
            .push(&stream, |m| {
                let kind = [m.message_type(), m.event_type(), m.content_type(), m.exception_type()];
                kinds.push(kind.map(|h| h.map(str::to_string)));
            })
            .expect("decode");
        let expected = [Some("event"), Some("contentBlockDelta"), Some("application/json"), None];
        assert_eq!(kinds[1], expected.map(|h| h.map(str::to_string)));

        let exception = encode(
            &[Header::string(":message-type", "exception"), Header::string(":exception-type", "throttlingException")],
            br#"{"message":"Too many requests"}"#,
        )
        .expect("encode");
        let error = encode(
            &[
                Header::string(":message-type", "error"),
                Header::string(":error-code", "InternalFailure"),
                Header::string(":error-message", "boom"),
                Header { name: ":event-type", value: HeaderValue::Int(1) },
            ],
            b"",
        )
        .expect("encode");
        decoder
            .push(&[exception, error].concat(), |m| match m.message_type() {
                Some("exception") => assert_eq!(m.exception_type(), Some("throttlingException")),
                Some("error") => {
                    assert_eq!((m.error_code(), m.error_message()), (Some("InternalFailure"), Some("boom")));
                    // Present but not a string.
                    assert_eq!(m.event_type(), None);
                    assert_eq!(m.header(":event-type"), Some(&HeaderValue::Int(1)));
                }
                other => panic!("unexpected message type {other:?}"),
            })
            .expect("decode");
    }

    #[test]
    fn a_stream_split_at_any_one_or_two_points_decodes_the_same() {
        let stream = converse_stream().concat();
        let (whole, result, partial) = decode_in_pieces(&stream, &[]);
        assert_eq!((whole.len(), result, partial), (3, Ok(()), false));
        for a in 0..=stream.len() {
            assert_eq!(decode_in_pieces(&stream, &[a]), (whole.clone(), Ok(()), false), "cut at {a}");
            for b in a..=stream.len() {
                assert_eq!(decode_in_pieces(&stream, &[a, b]), (whole.clone(), Ok(()), false), "cuts at {a}, {b}");
            }
        }
        // Byte by byte.
        let cuts: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(decode_in_pieces(&stream, &cuts), (whole, Ok(()), false));
    }

    #[test]
    fn truncated_input_leaves_a_partial_message() {
        let frames = converse_stream();
        let stream = frames.concat();
        let frame_ends: Vec<usize> = frames
            .iter()
            .scan(0, |end, f| {
                *end += f.len();
                Some(*end)
            })
            .collect();
        for len in 0..stream.len() {
            let (messages, result, partial) = decode_in_pieces(&stream[..len], &[]);
            assert_eq!(result, Ok(()));
            assert_eq!(messages.len(), frame_ends.iter().filter(|&&end| end <= len).count(), "{len} bytes");
            assert_eq!(partial, len > 0 && !frame_ends.contains(&len), "{len} bytes");
        }
    }

    #[test]
    fn any_corrupted_byte_is_detected_after_the_frames_before_it() {
        let frames = converse_stream();
        let stream = frames.concat();
        let mut frame_of_byte = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            frame_of_byte.extend(std::iter::repeat_n(i, f.len()));
        }
        for (position, &frame) in frame_of_byte.iter().enumerate() {
            for flip in [0x01, 0x80, 0xff] {
                let mut corrupt = stream.clone();
                corrupt[position] ^= flip;
                let (messages, result, _) = decode_in_pieces(&corrupt, &[]);
                assert_eq!(messages.len(), frame, "byte {position} ^ {flip:#x}");
                assert!(result.is_err(), "byte {position} ^ {flip:#x}");
            }
        }
    }

    #[test]
    fn crc_errors_name_both_values_and_stick() {
        let mut corrupt = EMPTY.to_vec();
        corrupt[15] ^= 1;
        let error = DecodeError::MessageCrc { expected: 0x7d98_c8fe, computed: 0x7d98_c8ff };
        assert_eq!(decode_one(&corrupt), Err(error.clone()));

        let mut decoder = Decoder::new();
        assert_eq!(decoder.push(&corrupt, |_| panic!("no message")), Err(error.clone()));
        assert_eq!(decoder.push(EMPTY, |_| panic!("no message after a corrupt frame")), Err(error));

        let mut corrupt = EMPTY.to_vec();
        corrupt[8] ^= 1;
        assert_eq!(decode_one(&corrupt), Err(DecodeError::PreludeCrc { expected: 0x04c2_48eb, computed: 0x05c2_48eb }));
    }

    #[test]
    fn oversized_lengths_are_rejected_from_the_prelude_alone() {
        let prelude = |total: u32, headers: u32| {
            let mut out = total.to_be_bytes().to_vec();
            out.extend_from_slice(&headers.to_be_bytes());
            out.extend_from_slice(&crc32(&out).to_be_bytes());
            out
        };
        let too_big = (MAX_FRAME_LEN + 1) as u32;
        assert_eq!(decode_in_pieces(&prelude(too_big, 0), &[]).1, Err(DecodeError::FrameLength(too_big)));
        let headers = (MAX_HEADERS_LEN + 1) as u32;
        assert_eq!(
            decode_in_pieces(&prelude(1 << 20, headers), &[]).1,
            Err(DecodeError::HeadersLength { headers, total: 1 << 20 })
        );
        // At the caps, the prelude is fine and the decoder waits for the rest.
        let (_, result, partial) = decode_in_pieces(&prelude(MAX_FRAME_LEN as u32, MAX_HEADERS_LEN as u32), &[]);
        assert_eq!((result, partial), (Ok(()), true));
    }

    #[test]
    fn malformed_headers_are_errors() {
        let cases: [(&[u8], DecodeError); 5] = [
            (b"\x05eve", DecodeError::TruncatedHeader),
            (b"\x01a\x04\x00\x00", DecodeError::TruncatedHeader),
            (b"\x01a\x07\x00\x05abc", DecodeError::TruncatedHeader),
            (b"\x01a\x0a", DecodeError::UnknownHeaderType(10)),
            (b"\x01a\x07\x00\x01\xff", DecodeError::InvalidUtf8),
        ];
        for (headers, error) in cases {
            assert_eq!(decode_one(&frame_with_raw_headers(headers, b"x")), Err(error), "{headers:?}");
        }
        assert_eq!(decode_one(&frame_with_raw_headers(b"\x01\xff\x00", b"")), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn the_encoder_refuses_what_does_not_fit() {
        let long_name = "n".repeat(256);
        assert_eq!(encode(&[Header::string(&long_name, "")], b""), Err(EncodeError::HeaderName(256)));
        let long_value = "v".repeat(65_536);
        assert_eq!(encode(&[Header::string("n", &long_value)], b""), Err(EncodeError::HeaderValue(65_536)));
        let big_value = "v".repeat(60_000);
        let three = [Header::string("a", &big_value), Header::string("b", &big_value), Header::string("c", &big_value)];
        assert_eq!(encode(&three, b""), Err(EncodeError::Headers(3 * (2 + 3 + 60_000))));
        let payload = vec![0; MAX_FRAME_LEN - MIN_FRAME_LEN + 1];
        assert_eq!(encode(&[], &payload), Err(EncodeError::Frame(MAX_FRAME_LEN + 1)));
        assert_eq!(encode(&[], &payload[1..]).map(|f| f.len()), Ok(MAX_FRAME_LEN));
    }
}
