//! Server-sent events, incrementally. Network chunks split events anywhere (inside a
//! field, between `\r` and `\n`), so the decoder keeps what it has not yet seen the end
//! of, resumes scanning where it stopped, and hands each complete event out with its raw
//! bytes, which lets a same-format stream pass through without re-encoding.

use std::borrow::Cow;

#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned for line ends.
    scanned: usize,
    /// Start of the line being scanned.
    line_start: usize,
}

#[derive(Debug, PartialEq)]
pub struct Event<'a> {
    /// The event's bytes as received, terminating blank line included.
    pub raw: &'a [u8],
    pub event: Option<&'a str>,
    /// `data` lines joined with `\n`; `None` for an event without data (e.g. a comment).
    pub data: Option<Cow<'a, str>>,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; calls `on_event` for every event completed by them, in order.
    #[inline]
    pub fn push(&mut self, chunk: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        self.push_dyn(chunk, &mut on_event);
    }

    /// The one body of [`Self::push`]: not generic, so the wasm holds one copy of the
    /// scanner instead of one per callback (the callback is an indirect call per event).
    #[inline(never)]
    fn push_dyn(&mut self, chunk: &[u8], on_event: &mut dyn FnMut(Event<'_>)) {
        self.buf.extend_from_slice(chunk);
        let buf = &self.buf;
        let mut event_start = 0;
        let mut line_start = self.line_start;
        let mut i = self.scanned;
        while i < buf.len() {
            let b = buf[i];
            if b != b'\n' && b != b'\r' {
                i += 1;
                continue;
            }
            let mut end = i + 1;
            if b == b'\r' {
                // A `\r` at the end of what we have may be the first half of `\r\n`.
                if end == buf.len() {
                    break;
                }
                if buf[end] == b'\n' {
                    end += 1;
                }
            }
            if line_start == i {
                if i > event_start {
                    on_event(parse(&buf[event_start..end]));
                }
                event_start = end;
            }
            line_start = end;
            i = end;
        }
        self.buf.drain(..event_start);
        self.scanned = i - event_start;
        self.line_start = line_start - event_start;
    }

    /// True when bytes of an unfinished event are pending: at end of stream, a sign that
    /// the stream was cut mid-event.
    pub fn has_partial(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }
}

fn parse(raw: &[u8]) -> Event<'_> {
    let mut event = None;
    let mut data: Option<Cow<'_, str>> = None;
    for line in raw.split(|&b| b == b'\n' || b == b'\r').filter(|l| !l.is_empty()) {
        if line[0] == b':' {
            continue;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                let value = String::from_utf8_lossy(value);
                data = Some(match data {
                    None => value,
                    Some(prev) => Cow::Owned(format!("{prev}\n{value}")),
                });
            }
            b"event" => event = std::str::from_utf8(value).ok(),
            _ => {}
        }
    }
    Event { raw, event, data }
}

/// Appends one event; multi-line data becomes several `data:` lines.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (Vec<u8>, Option<String>, Option<String>);

    fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> (Vec<Owned>, bool) {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        let mut last = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            d.push(&input[last..c], |e| {
                out.push((e.raw.to_vec(), e.event.map(str::to_string), e.data.map(|d| d.into_owned())))
            });
            last = c;
        }
        (out, d.has_partial())
    }

    const STREAM: &[u8] = b": keep-alive\n\ndata: {\"a\":1}\n\nevent: message_start\ndata: {\"b\":\ndata: 2}\n\n\
data:line1\r\ndata:line2\r\n\r\ndata: x\r\rdata: [DONE]\n\n";

    #[test]
    fn decodes_fields_and_line_endings() {
        let (events, partial) = decode_in_pieces(STREAM, &[]);
        assert!(!partial);
        let data: Vec<Option<&str>> = events.iter().map(|e| e.2.as_deref()).collect();
        assert_eq!(
            data,
            vec![None, Some("{\"a\":1}"), Some("{\"b\":\n2}"), Some("line1\nline2"), Some("x"), Some("[DONE]")]
        );
        assert_eq!(events[2].1.as_deref(), Some("message_start"));
        assert_eq!(events[1].0, b"data: {\"a\":1}\n\n");
        let raw: Vec<u8> = events.iter().flat_map(|e| e.0.clone()).collect();
        assert_eq!(raw, STREAM, "raw bytes of all events reproduce the stream");
    }

    #[test]
    fn every_single_split_point_gives_the_same_events() {
        let (whole, _) = decode_in_pieces(STREAM, &[]);
        for cut in 0..=STREAM.len() {
            assert_eq!(decode_in_pieces(STREAM, &[cut]).0, whole, "cut at {cut}");
        }
    }

    #[test]
    fn every_pair_of_split_points_gives_the_same_events() {
        let (whole, _) = decode_in_pieces(STREAM, &[]);
        for a in 0..=STREAM.len() {
            for b in a..=STREAM.len() {
                assert_eq!(decode_in_pieces(STREAM, &[a, b]).0, whole, "cuts at {a}, {b}");
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let cuts: Vec<usize> = (1..STREAM.len()).collect();
        assert_eq!(decode_in_pieces(STREAM, &cuts).0, decode_in_pieces(STREAM, &[]).0);
    }

    #[test]
    fn empty_input_and_partial_tail() {
        assert_eq!(decode_in_pieces(b"", &[]), (vec![], false));
        assert_eq!(decode_in_pieces(b"\n\n\r\n", &[]), (vec![], false));
        let (events, partial) = decode_in_pieces(b"data: 1\n\ndata: {\"cut", &[]);
        assert_eq!(events.len(), 1);
        assert!(partial);
    }

    #[test]
    fn huge_event_in_tiny_pieces_is_linear() {
        let payload = "x".repeat(2_000_000);
        let input = format!("data: {payload}\n\n").into_bytes();
        let cuts: Vec<usize> = (1..input.len()).step_by(7).collect();
        let (events, _) = decode_in_pieces(&input, &cuts);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].2.as_deref().map(str::len), Some(2_000_000));
    }

    #[test]
    fn unknown_fields_and_invalid_utf8_do_not_break_decoding() {
        let input = b"id: 7\nretry: 10\nfoo\ndata: \xff\xfe\n\ndata: ok\n\n";
        let (events, _) = decode_in_pieces(input, &[]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].2.as_deref(), Some("\u{fffd}\u{fffd}"));
        assert_eq!(events[1].2.as_deref(), Some("ok"));
    }

    #[test]
    fn writer_round_trips() {
        let mut out = Vec::new();
        write_event(&mut out, Some("error"), "a\nb");
        write_event(&mut out, None, "[DONE]");
        assert_eq!(out, b"event: error\ndata: a\ndata: b\n\ndata: [DONE]\n\n");
        let (events, _) = decode_in_pieces(&out, &[]);
        assert_eq!(events[0].2.as_deref(), Some("a\nb"));
        assert_eq!(events[0].1.as_deref(), Some("error"));
    }
}
