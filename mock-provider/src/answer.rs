//! The format-independent part of an answer: its text, how it is split into streamed
//! pieces, and its token counts. Everything is deterministic so tests can assert
//! exact replies and exact costs.

use crate::faults::{strip_directives, Behaviour};

pub(crate) struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
}

impl Usage {
    /// Defaults: prompt = characters of all message text / 4, rounded up, at least 1;
    /// completion = words of the generated text times the number of choices.
    pub(crate) fn new(behaviour: &Behaviour, prompt_chars: usize, generated: &str, choices: usize) -> Usage {
        let words = generated.split_whitespace().count() * choices;
        Usage {
            prompt: behaviour.prompt_tokens.unwrap_or(prompt_chars.div_ceil(4).max(1) as u64),
            completion: behaviour.completion_tokens.unwrap_or(words as u64),
            cached: behaviour.cached_tokens.unwrap_or(0),
        }
    }
}

pub(crate) fn reply(behaviour: &Behaviour, tag: &str, last_user_message: &str) -> String {
    if let Some(reply) = &behaviour.reply {
        return reply.clone();
    }
    let said: String = strip_directives(last_user_message).trim().chars().take(60).collect();
    format!("Hello from the mock provider ({tag}). You said: {said}")
}

/// Splits `text` into `chunks` pieces of nearly equal length (some may be empty when
/// there are more chunks than characters), or by default into one piece per word, each
/// keeping the whitespace that follows it. The pieces always concatenate to `text`.
pub(crate) fn pieces(text: &str, chunks: Option<usize>) -> Vec<&str> {
    let starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let cuts: Vec<usize> = match chunks {
        Some(0) => return Vec::new(),
        Some(n) => (1..n).map(|k| starts.get(k * starts.len() / n).copied().unwrap_or(text.len())).collect(),
        None => {
            let mut cuts = Vec::new();
            let (mut after_space, mut seen_word) = (false, false);
            for (i, c) in text.char_indices() {
                if !c.is_whitespace() && after_space && seen_word {
                    cuts.push(i);
                }
                seen_word |= !c.is_whitespace();
                after_space = c.is_whitespace();
            }
            cuts
        }
    };
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for cut in cuts {
        pieces.push(&text[from..cut]);
        from = cut;
    }
    pieces.push(&text[from..]);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_piece_per_word_by_default() {
        assert_eq!(pieces("Hello  big\nworld ", None), ["Hello  ", "big\n", "world "]);
        assert_eq!(pieces(" lead", None), [" lead"]);
        assert_eq!(pieces("", None), [""]);
    }

    #[test]
    fn a_given_number_of_pieces() {
        assert_eq!(pieces("abcdefg", Some(3)), ["ab", "cd", "efg"]);
        assert_eq!(pieces("héllo", Some(2)), ["hé", "llo"]);
        assert_eq!(pieces("ab", Some(4)), ["", "a", "", "b"]);
        assert!(pieces("ab", Some(0)).is_empty());
    }

    #[test]
    fn default_reply_and_usage_are_deterministic() {
        let plain = Behaviour::default();
        let text = reply(
            &plain,
            "eu-openai",
            "  [mock:chunks=2] What is the capital of France? Please answer in one word, thanks!",
        );
        assert_eq!(
            text,
            "Hello from the mock provider (eu-openai). You said: What is the capital of France? Please answer in one word, th"
        );
        let usage = Usage::new(&plain, 9, &text, 2);
        assert_eq!((usage.prompt, usage.completion, usage.cached), (3, 40, 0));

        let custom = Behaviour::parse("reply=Hi,prompt_tokens=7,completion_tokens=8,cached_tokens=5").unwrap();
        assert_eq!(reply(&custom, "eu", "ignored"), "Hi");
        let usage = Usage::new(&custom, 0, "Hi", 1);
        assert_eq!((usage.prompt, usage.completion, usage.cached), (7, 8, 5));
        assert_eq!(Usage::new(&plain, 0, "", 1).prompt, 1);
    }
}
