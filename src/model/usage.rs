//! Token counts as providers report them.

/// Token counts as the provider reported them. `input_tokens` includes the cached
/// (cache-read) and cache-written ones, which are billed at their own prices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Usage {
    /// What a stream reported; for one cut before it reported anything, an estimate of
    /// what was consumed (the prompt and the characters relayed), billed rather than a
    /// silent zero.
    pub fn reported_or_estimated(
        reported: Option<Usage>,
        estimated_input: u64,
        streamed_chars: usize,
    ) -> Option<Usage> {
        reported.or_else(|| {
            (streamed_chars > 0).then(|| Usage {
                input_tokens: estimated_input,
                output_tokens: crate::model::chat::estimate_tokens(streamed_chars),
                ..Usage::default()
            })
        })
    }
}
