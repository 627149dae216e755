//! A small HTTP/1.1 client for the end-to-end tests (std + serde_json only). It talks
//! only to `http://127.0.0.1:PORT/...`, one connection per request (`Connection: close`
//! unless the caller sends its own `Connection` header).
//!
//! Cut connections: a body that ends before its framing says it should (no terminating
//! zero-size chunk, or fewer bytes than `Content-Length`) is an `Err` of kind
//! `UnexpectedEof` (or `ConnectionReset` when the peer reset), from `send`,
//! `Streaming::next_chunk` and `Streaming::collect` alike. `Ok(None)` from `next_chunk`
//! therefore always means the body ended properly. Only a body delimited by the
//! connection closing (neither chunked nor with a length) cannot tell the two apart.
//! Every read times out after 60 s, so a hung server fails a test instead of hanging it.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);
const MAX_LINE: u64 = 64 * 1024;

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

pub struct Response {
    pub status: u16,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Panics, showing the body, when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {} body is not JSON ({e}): {}", self.status, self.text()))
    }
}

/// Sends one request and reads the whole answer.
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> io::Result<Response> {
    let mut streaming = send_streaming(method, url, headers, body)?;
    let status = streaming.status;
    let headers = std::mem::take(&mut streaming.headers);
    let body = streaming.collect()?;
    Ok(Response { status, headers, body })
}

enum Framing {
    /// Bytes left.
    Length(u64),
    /// Bytes left in the current chunk; 0 means a chunk-size line comes next.
    Chunked(u64),
    UntilClose,
    Done,
}

/// An answer whose head has arrived and whose body is read as it comes.
pub struct Streaming {
    pub status: u16,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    framing: Framing,
}

fn cut(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("connection closed before the end of the answer ({what})"))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Streaming {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The next piece of body bytes (one read's worth, without chunk framing) and when
    /// it was read; `None` once the body has properly ended.
    pub fn next_chunk(&mut self) -> io::Result<Option<(Instant, Vec<u8>)>> {
        let wanted = match self.framing {
            Framing::Done | Framing::Length(0) => {
                self.framing = Framing::Done;
                return Ok(None);
            }
            Framing::Length(left) => left,
            Framing::Chunked(0) => {
                let line = read_line(&mut self.reader)?;
                let size = line.split(';').next().unwrap_or("").trim();
                let size =
                    u64::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
                if size == 0 {
                    while !read_line(&mut self.reader)?.is_empty() {}
                    self.framing = Framing::Done;
                    return Ok(None);
                }
                self.framing = Framing::Chunked(size);
                size
            }
            Framing::Chunked(left) => left,
            Framing::UntilClose => u64::MAX,
        };
        let mut buf = vec![0; wanted.min(64 * 1024) as usize];
        let n = self.reader.read(&mut buf)?;
        let arrived = Instant::now();
        buf.truncate(n);
        match &mut self.framing {
            Framing::UntilClose if n == 0 => {
                self.framing = Framing::Done;
                return Ok(None);
            }
            _ if n == 0 => return Err(cut("mid-data")),
            Framing::Length(left) => *left -= n as u64,
            Framing::Chunked(left) => {
                *left -= n as u64;
                if *left == 0 && !read_line(&mut self.reader)?.is_empty() {
                    return Err(invalid("chunk longer than its size".into()));
                }
            }
            Framing::UntilClose | Framing::Done => {}
        }
        Ok(Some((arrived, buf)))
    }

    /// The rest of the body; an error if the connection was cut before its end.
    pub fn collect(mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        while let Some((_, piece)) = self.next_chunk()? {
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }
}

/// Sends one request and returns once the answer's status and headers have arrived.
/// Interim `1xx` answers are skipped. When `body` is given and `headers` set neither
/// `Content-Length` nor `Transfer-Encoding`, a `Content-Length` is added; otherwise the
/// body is sent as given (so a test can send a hand-made chunked body).
pub fn send_streaming(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> io::Result<Streaming> {
    let (addr, target) = parse_url(url)?;
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.set_nodelay(true)?;

    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    if let Some(body) = body {
        if !has("content-length") && !has("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(body.unwrap_or_default());
    (&stream).write_all(&message)?;

    let mut reader = BufReader::new(stream);
    let (status, headers) = loop {
        let (status, headers) = read_head(&mut reader)?;
        if !(100..200).contains(&status) {
            break (status, headers);
        }
    };
    let length = find_header(&headers, "content-length");
    let chunked =
        find_header(&headers, "transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let framing = if method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 {
        Framing::Done
    } else if chunked {
        Framing::Chunked(0)
    } else if let Some(length) = length {
        let length = length.parse().map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };
    Ok(Streaming { status, headers, reader, framing })
}

/// The `data:` payloads of an SSE body, in order (one per `data:` line).
pub fn sse_data_lines(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| data.strip_prefix(' ').unwrap_or(data).to_string())
        .collect()
}

/// Accepts only `http://127.0.0.1[:PORT][/path]`: tests must never reach another host.
fn parse_url(url: &str) -> io::Result<(SocketAddr, String)> {
    let refuse = || {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: only http://127.0.0.1:PORT/... URLs are allowed"))
    };
    let rest = url.strip_prefix("http://").ok_or_else(refuse)?;
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    let port = match authority.strip_prefix("127.0.0.1") {
        Some("") => 80,
        Some(port) => port.strip_prefix(':').and_then(|p| p.parse().ok()).ok_or_else(refuse)?,
        None => return Err(refuse()),
    };
    let target = match target {
        "" => "/".to_string(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_string(),
    };
    Ok((SocketAddr::from(([127, 0, 0, 1], port)), target))
}

fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<(u16, Vec<(String, String)>)> {
    let status_line = read_line(reader)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok((status, headers));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
}

/// One line without its line ending; an `UnexpectedEof` error if the connection closes
/// first.
fn read_line(reader: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = Vec::new();
    reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(cut("mid-line"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| invalid("line is not UTF-8".into()))
}
