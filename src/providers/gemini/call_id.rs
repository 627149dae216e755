//! Tool call ids that carry thought signatures.
//!
//! Gemini 3 models require the `thoughtSignature` of each function call part to come back
//! with it in the history (Gemini API reference, "Thought signatures"). OpenAI clients
//! return a tool call's id unchanged, so the gateway carries the signature inside the id it
//! gives the call.

use crate::util::hash::sha256_hex;

/// Between a call's own id and the thought signature it carries. The id before it is
/// `call_` and hex digits, so the first occurrence is the separator.
const SIGNATURE_MARK: &str = "_ts_";

/// An OpenAI tool call id for call `index` of the answer identified by `answer`. Ids keep
/// to letters, digits, `_` and `-` (the signature in base64url) because other providers
/// restrict them, and a conversation may continue on another provider after a fallback.
pub(super) fn tool_call_id(answer: &str, index: usize, signature: Option<&str>) -> String {
    let mut id = format!("call_{}_{index}", &sha256_hex(answer.as_bytes())[..12]);
    if let Some(signature) = signature.filter(|s| !s.is_empty()) {
        id.push_str(SIGNATURE_MARK);
        id.extend(signature.chars().filter(|c| *c != '=').map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        }));
    }
    id
}

/// The thought signature a tool call id carries, in the base64 Gemini sent it in.
pub(super) fn signature_of(id: &str) -> Option<String> {
    let (_, encoded) = id.split_once(SIGNATURE_MARK)?;
    let mut signature: String = encoded
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !signature.len().is_multiple_of(4) {
        signature.push('=');
    }
    Some(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_survive_the_round_trip_through_an_id() {
        for signature in ["Cv8B+/x=", "AAAA", "a+b/cQ==", "EiYKJGYxZDQ5"] {
            let id = tool_call_id("chatcmpl-x", 3, Some(signature));
            assert_eq!(signature_of(&id).as_deref(), Some(signature), "{id}");
        }
        assert_eq!(signature_of(&tool_call_id("chatcmpl-x", 0, None)), None);
        assert_eq!(signature_of("call_abc"), None);
    }
}
