//! Token counts as providers report them, and what one upstream call is billed for when
//! the report is missing or may be partial.

use crate::model::chat::estimate_tokens;

/// Token counts as the provider reported them. `input_tokens` includes the cached
/// (cache-read) and cache-written ones, which are billed at their own prices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    /// Web searches a server tool ran (Anthropic's `usage.server_tool_use`), billed apart
    /// from tokens.
    pub web_searches: u64,
}

impl Usage {
    /// The gateway's estimate of a call: the prompt's estimated tokens, and output from the
    /// characters that reached the client (about four a token).
    pub fn estimate(input_tokens: u64, output_chars: usize) -> Usage {
        Usage { input_tokens, output_tokens: estimate_tokens(output_chars), ..Usage::default() }
    }

    /// Each field the larger of the two.
    pub fn at_least(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.max(other.input_tokens),
            output_tokens: self.output_tokens.max(other.output_tokens),
            cached_input_tokens: self.cached_input_tokens.max(other.cached_input_tokens),
            cache_write_tokens: self.cache_write_tokens.max(other.cache_write_tokens),
            web_searches: self.web_searches.max(other.web_searches),
        }
    }

    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            cached_input_tokens: self.cached_input_tokens.saturating_add(other.cached_input_tokens),
            cache_write_tokens: self.cache_write_tokens.saturating_add(other.cache_write_tokens),
            web_searches: self.web_searches.saturating_add(other.web_searches),
        }
    }
}

/// What one upstream call is billed for: what its provider reported, and the usage billed,
/// which is the report raised field by field to the gateway's estimate when the report is
/// missing or may be partial (the call did not complete). Billed above reported is the
/// estimated part; a provider's report is never lowered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consumed {
    pub reported: Usage,
    pub billed: Usage,
}

impl Consumed {
    /// A complete answer's own usage.
    pub fn reported(usage: Usage) -> Consumed {
        Consumed { reported: usage, billed: usage }
    }

    /// A call that did not complete (or reported nothing): whatever it reported is a lower
    /// bound, and so is the estimate.
    pub fn at_least(reported: Option<Usage>, estimate: Usage) -> Consumed {
        let reported = reported.unwrap_or_default();
        Consumed { reported, billed: reported.at_least(estimate) }
    }

    pub fn is_estimated(&self) -> bool {
        self.billed != self.reported
    }
}

/// What a stream translator keeps to bill its stream, updated as events pass (O(1) per
/// event, no allocation): the provider's latest usage report, the prompt's estimate, and
/// the characters of output relayed to the client.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    pub reported: Option<Usage>,
    pub estimated_input: u64,
    pub relayed_chars: usize,
}

impl Meter {
    pub fn new(estimated_input: u64) -> Meter {
        Meter { estimated_input, ..Meter::default() }
    }

    /// Counts output text that reached the client.
    pub fn relayed(&mut self, text: &str) {
        self.relayed_chars += text.chars().count();
    }

    /// A stream that completed is billed from the provider's final usage. One cut, failed
    /// or without a report is billed at least for its prompt and for what reached the
    /// client, whatever the provider had said before the end (Anthropic's `message_start`
    /// counts one output token, Gemini's chunks count none until the last).
    pub fn consumed(&self, complete: bool) -> Consumed {
        match (complete, self.reported) {
            (true, Some(usage)) => Consumed::reported(usage),
            _ => Consumed::at_least(self.reported, Usage::estimate(self.estimated_input, self.relayed_chars)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_stream_is_billed_as_reported() {
        let mut m = Meter::new(500);
        m.relayed("a long answer that the provider counted differently");
        m.reported = Some(Usage { input_tokens: 40, output_tokens: 3, ..Usage::default() });
        let c = m.consumed(true);
        assert_eq!((c.billed, c.is_estimated()), (m.reported.unwrap(), false));
    }

    #[test]
    fn an_incomplete_stream_takes_the_larger_of_report_and_estimate_per_field() {
        let mut m = Meter::new(20);
        m.relayed("0123456789abcdefghij0123456789abcdefghi\u{e9}"); // 40 characters
        m.reported = Some(Usage {
            input_tokens: 50,
            output_tokens: 1,
            cached_input_tokens: 30,
            cache_write_tokens: 0,
            web_searches: 0,
        });
        let c = m.consumed(false);
        assert_eq!(
            c.billed,
            Usage {
                input_tokens: 50,
                output_tokens: 10,
                cached_input_tokens: 30,
                cache_write_tokens: 0,
                web_searches: 0
            }
        );
        assert_eq!(c.reported, m.reported.unwrap());
        assert!(c.is_estimated());
        // A report above the estimate stays as it is, and is not an estimate.
        m.reported = Some(Usage { input_tokens: 50, output_tokens: 12, ..Usage::default() });
        assert!(!m.consumed(false).is_estimated());
        // Nothing reported, nothing relayed: the prompt, estimated.
        let c = Meter::new(7).consumed(false);
        assert_eq!((c.billed, c.reported), (Usage { input_tokens: 7, ..Usage::default() }, Usage::default()));
        // Complete without a report: estimated too, never a silent zero.
        assert_eq!(Meter::new(7).consumed(true), c);
    }
}
