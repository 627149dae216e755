//! Which behaviour a request gets: a scripted fault if one applies, else the last
//! `[mock:key=value,...]` directive in the body, else a normal answer.

use std::str::FromStr;
use std::sync::Mutex;

/// How the mock answers one request; `Behaviour::default()` is a normal answer.
/// Field names are the keys used in directives and in `POST /_mock/script`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Behaviour {
    /// Answer this status with the format's error body (any status but 200).
    pub status: Option<u16>,
    /// Error code for a 400 (`context_length_exceeded`, `content_filter`) or any status.
    pub error_code: Option<String>,
    /// `Retry-After` seconds; sent with every 429 (default 1) and with any status when set.
    pub retry_after: Option<u64>,
    /// Sleep before the status line.
    pub first_byte_delay_ms: Option<u64>,
    /// Sleep between streamed events; overrides `Options::chunk_delay_ms`.
    pub chunk_delay_ms: Option<u64>,
    /// Number of content chunks of a streamed answer (default: one per word).
    pub chunks: Option<usize>,
    /// Streams only: send this many content chunks, then close the connection abruptly.
    pub cut_after: Option<usize>,
    /// The answer text (default: a deterministic greeting that echoes the prompt).
    pub reply: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    /// Answer with a call to this function, when the request offers tools.
    pub tool_call: Option<String>,
    /// The tool call's arguments, a JSON text (default `{}`).
    pub tool_args: Option<String>,
    /// Read the request, then close the connection without answering: an upstream that
    /// crashed (or a connection lost) after the request reached it.
    pub hang_up: bool,
    /// Answer 200 with a body that is not the format's (cut short JSON), as a provider or
    /// a proxy in front of it might.
    pub garbled: bool,
    /// Anthropic: report inference ran here (`usage.inference_geo`), whatever was asked.
    pub inference_geo: Option<String>,
}

impl Behaviour {
    /// Parses the inside of a directive: `status=429,retry_after=2`. Values cannot
    /// contain `,` or `]`.
    pub fn parse(spec: &str) -> Result<Behaviour, String> {
        let mut behaviour = Behaviour::default();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| format!("expected key=value, got `{pair}`"))?;
            behaviour.set(key.trim(), value.trim())?;
        }
        Ok(behaviour)
    }

    /// Sets one field from its textual value. Unknown keys are errors so that a typo in
    /// a test fails loudly instead of silently giving a normal answer.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn num<T: FromStr>(key: &str, value: &str) -> Result<Option<T>, String> {
            value.parse().map(Some).map_err(|_| format!("`{key}` needs a whole number, got `{value}`"))
        }
        let text = || Some(value.to_string());
        let flag = || match value {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err(format!("`{key}` is 1 or 0, not `{value}`")),
        };
        match key {
            "status" => self.status = num(key, value)?,
            "error_code" => self.error_code = text(),
            "retry_after" => self.retry_after = num(key, value)?,
            "first_byte_delay_ms" => self.first_byte_delay_ms = num(key, value)?,
            "chunk_delay_ms" => self.chunk_delay_ms = num(key, value)?,
            "chunks" => self.chunks = num(key, value)?,
            "cut_after" => self.cut_after = num(key, value)?,
            "reply" => self.reply = text(),
            "prompt_tokens" => self.prompt_tokens = num(key, value)?,
            "completion_tokens" => self.completion_tokens = num(key, value)?,
            "cached_tokens" => self.cached_tokens = num(key, value)?,
            "tool_call" => self.tool_call = text(),
            "tool_args" => self.tool_args = text(),
            "hang_up" => self.hang_up = flag()?,
            "garbled" => self.garbled = flag()?,
            "inference_geo" => self.inference_geo = text(),
            _ => return Err(format!("unknown mock field `{key}`")),
        }
        Ok(())
    }
}

/// A fault that applies to requests whose tag equals `tag` (or `tag` is `*`) and whose
/// body contains `needle` (an empty needle matches any body). Parallel tests share one
/// mock, so each test scopes its scripts with a nonce it also puts in its prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Script {
    pub tag: String,
    pub needle: String,
    /// How many requests it applies to; `None` = until cleared.
    pub times: Option<u32>,
    pub behaviour: Behaviour,
}

#[derive(Default)]
pub(crate) struct Scripts(Mutex<Vec<Script>>);

impl Scripts {
    pub(crate) fn add(&self, script: Script) {
        lock(&self.0).push(script);
    }

    pub(crate) fn clear(&self) {
        lock(&self.0).clear();
    }

    /// Uses up one application of the oldest script that applies; checking and
    /// consuming under one lock keeps `times` exact when requests race.
    fn take(&self, tag: &str, body: &str) -> Option<Behaviour> {
        let mut scripts = lock(&self.0);
        let index = scripts
            .iter()
            .position(|s| s.times != Some(0) && (s.tag == "*" || s.tag == tag) && body.contains(&s.needle))?;
        let script = &mut scripts[index];
        let behaviour = script.behaviour.clone();
        if let Some(times) = &mut script.times {
            *times -= 1;
            if *times == 0 {
                scripts.remove(index);
            }
        }
        Some(behaviour)
    }
}

/// Poisoning only means another connection's thread panicked; the data is still sound.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn select(scripts: &Scripts, tag: &str, body: &str) -> Result<Behaviour, String> {
    if let Some(behaviour) = scripts.take(tag, body) {
        return Ok(behaviour);
    }
    match directives(body).last() {
        Some(spec) => Behaviour::parse(&json_unescaped(spec)),
        None => Ok(Behaviour::default()),
    }
}

/// Directives are found in the raw body, which is JSON for every provider format, so a
/// value such as `tool_args={\"city\": \"Paris\"}` arrives escaped: undo that when the
/// text is a valid JSON string body.
fn json_unescaped(spec: &str) -> String {
    serde_json::from_str(&format!("\"{spec}\"")).unwrap_or_else(|_| spec.to_string())
}

/// Byte ranges of every complete `[mock:...]` in `text`, in order.
fn directive_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("[mock:").map(|i| from + i) {
        let Some(len) = text[start..].find(']') else {
            break;
        };
        from = start + len + 1;
        spans.push((start, from));
    }
    spans
}

/// The insides of every complete directive in `text`, in order.
fn directives(text: &str) -> Vec<&str> {
    let inner = |(start, end): (usize, usize)| &text[start + "[mock:".len()..end - 1];
    directive_spans(text).into_iter().map(inner).collect()
}

/// `text` without its directives, so the default reply echoes only what a person wrote.
pub(crate) fn strip_directives(text: &str) -> String {
    let mut out = String::new();
    let mut kept_from = 0;
    for (start, end) in directive_spans(text) {
        out.push_str(&text[kept_from..start]);
        kept_from = end;
    }
    out.push_str(&text[kept_from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(tag: &str, needle: &str, times: Option<u32>, status: u16) -> Script {
        let behaviour = Behaviour { status: Some(status), ..Behaviour::default() };
        Script { tag: tag.into(), needle: needle.into(), times, behaviour }
    }

    #[test]
    fn the_last_directive_wins() {
        let body = r#"{"messages":[{"content":"[mock:status=500] then [mock:chunks=3, reply=Hi there]"}]}"#;
        let behaviour = select(&Scripts::default(), "eu", body).unwrap();
        assert_eq!(behaviour.chunks, Some(3));
        assert_eq!(behaviour.reply.as_deref(), Some("Hi there"));
        assert_eq!(behaviour.status, None);
    }

    #[test]
    fn directives_reject_unknown_keys_and_bad_numbers() {
        let flags = Behaviour::parse("hang_up=1,garbled=true").unwrap();
        assert!(flags.hang_up && flags.garbled);
        assert!(Behaviour::parse("hang_up=yes").unwrap_err().contains("hang_up"));
        assert!(Behaviour::parse("stauts=500").unwrap_err().contains("stauts"));
        assert!(Behaviour::parse("status=abc").unwrap_err().contains("status"));
        assert!(Behaviour::parse("status").is_err());
        assert_eq!(Behaviour::parse("").unwrap(), Behaviour::default());
    }

    #[test]
    fn directive_values_are_json_unescaped() {
        let body = r#"{"content":"[mock:tool_args={\"city\": \"Paris\"}]"}"#;
        let behaviour = select(&Scripts::default(), "eu", body).unwrap();
        assert_eq!(behaviour.tool_args.as_deref(), Some(r#"{"city": "Paris"}"#));
        let plain = select(&Scripts::default(), "eu", r#"[mock:reply=say "hi"]"#).unwrap();
        assert_eq!(plain.reply.as_deref(), Some(r#"say "hi""#));
    }

    #[test]
    fn an_unterminated_directive_is_plain_text() {
        assert_eq!(select(&Scripts::default(), "eu", "[mock:status=500").unwrap(), Behaviour::default());
    }

    #[test]
    fn strip_directives_keeps_the_rest() {
        assert_eq!(strip_directives("a [mock:x=1]b[mock:y=2] c [mock:z"), "a b c [mock:z");
    }

    #[test]
    fn scripts_match_on_tag_and_needle_and_run_out() {
        let scripts = Scripts::default();
        scripts.add(script("us", "nonce-1", Some(2), 503));
        scripts.add(script("*", "nonce-2", None, 429));
        let status = |tag, body| select(&scripts, tag, body).unwrap().status;

        assert_eq!(status("eu", "x nonce-1 x"), None, "wrong tag");
        assert_eq!(status("us", "no needle"), None);
        assert_eq!(status("us", "x nonce-1 x"), Some(503));
        assert_eq!(status("us", "x nonce-1 x"), Some(503));
        assert_eq!(status("us", "x nonce-1 x"), None, "used up");
        for _ in 0..3 {
            assert_eq!(status("any", "nonce-2 [mock:status=500]"), Some(429));
        }
        scripts.clear();
        assert_eq!(status("any", "nonce-2 [mock:status=500]"), Some(500));
    }

    #[test]
    fn an_empty_needle_matches_everything_with_that_tag() {
        let scripts = Scripts::default();
        scripts.add(script("eu", "", Some(1), 500));
        assert_eq!(select(&scripts, "us", "x").unwrap().status, None);
        assert_eq!(select(&scripts, "eu", "x").unwrap().status, Some(500));
        assert_eq!(select(&scripts, "eu", "x").unwrap().status, None);
    }
}
