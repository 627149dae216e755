//! A small HTTP/1.1 server core shared by every wire format: request parsing
//! (Content-Length or chunked bodies, `Expect: 100-continue`), keep-alive, and
//! responses that are either whole (Content-Length) or streamed chunk by chunk.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Once a request has started, the rest of it must arrive within this time; a client
/// that stops reading an answer for this long loses its connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_LINE: u64 = 16 * 1024;
const MAX_HEADERS: usize = 200;
const MAX_BODY: usize = 64 * 1024 * 1024;

pub(crate) struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The percent-decoded value of a query parameter.
    pub fn query(&self, key: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
    }
}

pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes the response to one request.
pub(crate) struct Responder {
    stream: TcpStream,
    keep_alive: bool,
}

impl Responder {
    fn head(&self, status: u16, headers: &[(&str, &str)], framing: &str) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.keep_alive {
            head.push_str("Connection: close\r\n");
        }
        head.push_str(framing);
        head.push_str("\r\n");
        head.into_bytes()
    }

    pub fn send(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        let framing = format!("Content-Length: {}\r\n", body.len());
        let mut message = self.head(status, headers, &framing);
        message.extend_from_slice(body);
        self.stream.write_all(&message)
    }

    pub fn json(&mut self, status: u16, headers: &[(&str, &str)], body: &serde_json::Value) -> io::Result<()> {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        self.send(status, &all, body.to_string().as_bytes())
    }

    pub fn start_stream(&mut self, status: u16, headers: &[(&str, &str)]) -> io::Result<()> {
        let head = self.head(status, headers, "Transfer-Encoding: chunked\r\n");
        self.stream.write_all(&head)
    }

    /// One chunk in one write (with TCP_NODELAY set), so that every event leaves the
    /// machine on its own and a client can observe the stream piece by piece.
    pub fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        let mut message = format!("{:x}\r\n", data.len()).into_bytes();
        message.extend_from_slice(data);
        message.extend_from_slice(b"\r\n");
        self.stream.write_all(&message)?;
        self.stream.flush()
    }

    pub fn end_stream(&mut self) -> io::Result<()> {
        self.stream.write_all(b"0\r\n\r\n")
    }

    /// Closes the connection mid-response, as a crashed or cut-off upstream would.
    pub fn cut(&mut self) -> io::Result<()> {
        self.keep_alive = false;
        self.stream.shutdown(Shutdown::Both)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Unknown",
    }
}

/// Serves requests on one connection until the client closes it, a response closes
/// it, or the server stops. A malformed request gets `bad_request`'s answer and ends
/// the connection, since the rest of the byte stream cannot be trusted.
pub(crate) fn serve(
    stream: TcpStream,
    stopping: &AtomicBool,
    bad_request: impl Fn(&str) -> serde_json::Value,
    handle: impl Fn(&Request, &mut Responder) -> io::Result<()>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = Responder { stream, keep_alive: true };
    while !stopping.load(Ordering::Relaxed) {
        let request = match read_request(&mut reader, &mut out) {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(e) => {
                out.keep_alive = false;
                return out.json(400, &[], &bad_request(&e.to_string()));
            }
        };
        out.keep_alive = !request.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        handle(&request, &mut out)?;
        if !out.keep_alive {
            break;
        }
    }
    Ok(())
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// `Ok(None)` when the client closed the connection between requests.
fn read_request(reader: &mut BufReader<TcpStream>, out: &mut Responder) -> io::Result<Option<Request>> {
    // No timeout while idle: the gateway's runtime pools connections, and closing one
    // it is about to reuse would fail a request for a reason no real provider causes.
    reader.get_ref().set_read_timeout(None)?;
    if reader.fill_buf()?.is_empty() {
        return Ok(None);
    }
    reader.get_ref().set_read_timeout(Some(REQUEST_TIMEOUT))?;

    let request_line = read_line(reader)?;
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("only HTTP/1.x is supported"));
    }
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(invalid("too many headers"));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| invalid("malformed header"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut request = Request { method: method.to_string(), target: target.to_string(), headers, body: Vec::new() };

    let chunked = request.header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let length = match request.header("content-length") {
        Some(n) if !chunked => n.parse().map_err(|_| invalid("bad Content-Length"))?,
        _ => 0,
    };
    if length > MAX_BODY {
        return Err(invalid("body too large"));
    }
    if (chunked || length > 0) && request.header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        out.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if chunked {
        request.body = read_chunked(reader)?;
    } else {
        request.body = vec![0; length];
        reader.read_exact(&mut request.body)?;
    }
    Ok(Some(request))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?;
        let size = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the blank line that ends the body.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?.is_empty() {
            return Err(invalid("chunk data longer than its size"));
        }
    }
}

/// One line without its CRLF; bounded so a client cannot grow it without end.
fn read_line(reader: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = Vec::new();
    reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(invalid("line too long or connection closed mid-request"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| invalid("request head is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c%2Fd%zz%"), "a b c/d%zz%");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
