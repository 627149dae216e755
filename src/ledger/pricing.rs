//! What a request cost: usage at a deployment's price, in integer micro-dollars.

#[cfg(test)]
use crate::config::price::PerThousand;
use crate::config::price::{PerMtok, Price};
use crate::model::usage::Usage;

/// The cost of `usage` at `price`, in micro-dollars. `usage.input_tokens` includes the
/// cached and cache-written tokens, which are billed at their own prices.
pub fn cost_micros(price: &Price, usage: &Usage) -> u64 {
    let cached = u128::from(usage.cached_input_tokens);
    let written = u128::from(usage.cache_write_tokens);
    let plain = u128::from(usage.input_tokens).saturating_sub(cached + written);
    let rate = |p: Option<PerMtok>| u128::from(p.unwrap_or(price.input).0);
    // micro-dollars per million tokens × tokens: millionths of a micro-dollar.
    let scaled = plain * u128::from(price.input.0)
        + cached * rate(price.cached_input)
        + written * rate(price.cache_write)
        + u128::from(usage.output_tokens) * u128::from(price.output.0);
    // An uplift in percent scales the exact product, so it too is rounded only once. Web
    // searches are billed per search, not per token: no uplift (in the same hundred-millionths).
    let searches = u128::from(usage.web_searches) * u128::from(price.web_search.map_or(0, |p| p.0)) * 100_000;
    let scaled = scaled.saturating_mul(u128::from(price.uplift_pct)).saturating_add(searches);
    let micros = (scaled + 50_000_000) / 100_000_000;
    u64::try_from(micros).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::price::parse_usd;

    fn price(input: &str, output: &str) -> Price {
        Price {
            input: PerMtok(parse_usd(input).unwrap()),
            output: PerMtok(parse_usd(output).unwrap()),
            cached_input: None,
            cache_write: None,
            web_search: None,
            uplift_pct: 100,
        }
    }

    fn usage(input: u64, output: u64) -> Usage {
        Usage { input_tokens: input, output_tokens: output, ..Usage::default() }
    }

    #[test]
    fn claude_prices_from_april_2026() {
        // Opus 4.6 $5 / $25, Sonnet 4.6 $3 / $15, Haiku 4.5 $1 / $5 per MTok.
        let opus = price("5", "25");
        assert_eq!(cost_micros(&opus, &usage(1_000_000, 1_000_000)), 30_000_000);
        let sonnet = price("3", "15");
        assert_eq!(cost_micros(&sonnet, &usage(2_000, 500)), 6_000 + 7_500);
        let haiku = price("1", "5");
        assert_eq!(cost_micros(&haiku, &usage(1, 1)), 6, "$1 per million tokens is one micro-dollar a token");
        assert_eq!(cost_micros(&haiku, &usage(100_000, 0)), 100_000);
    }

    #[test]
    fn rounding_is_half_up_once_per_request() {
        let p = price("0.5", "0"); // 0.5 micro-dollars per token
        assert_eq!(cost_micros(&p, &usage(1, 0)), 1, "0.5 rounds up");
        assert_eq!(cost_micros(&p, &usage(3, 0)), 2, "1.5 rounds up");
        let p = price("0.4", "0");
        assert_eq!(cost_micros(&p, &usage(1, 0)), 0, "0.4 rounds down");
        assert_eq!(cost_micros(&p, &usage(5, 0)), 2);
    }

    #[test]
    fn cached_and_cache_written_tokens_have_their_own_prices() {
        let p = Price {
            uplift_pct: 100,
            web_search: None,
            input: PerMtok(3_000_000),
            output: PerMtok(15_000_000),
            cached_input: Some(PerMtok(300_000)),
            cache_write: Some(PerMtok(3_750_000)),
        };
        let u = Usage {
            input_tokens: 10_000,
            output_tokens: 1_000,
            cached_input_tokens: 6_000,
            cache_write_tokens: 2_000,
            web_searches: 0,
        };
        // 2,000 plain × 3 + 6,000 × 0.3 + 2,000 × 3.75 + 1,000 × 15
        assert_eq!(cost_micros(&p, &u), 6_000 + 1_800 + 7_500 + 15_000);
        // Without a cached price, cached tokens cost the input price.
        let plain = price("3", "15");
        assert_eq!(cost_micros(&plain, &u), 30_000 + 15_000);
        // Inconsistent usage (more cached than input) never underflows.
        let odd = Usage { input_tokens: 1, cached_input_tokens: 5, ..Usage::default() };
        assert_eq!(cost_micros(&p, &odd), 2);
    }

    #[test]
    fn huge_usage_does_not_overflow() {
        let p = price("1000000", "1000000");
        assert_eq!(cost_micros(&p, &usage(u64::MAX, u64::MAX)), u64::MAX);
    }

    #[test]
    fn an_uplift_multiplies_the_whole_cost_before_the_one_rounding() {
        let list = price("5", "25");
        let us = Price { uplift_pct: 110, ..list };
        assert_eq!(cost_micros(&list, &usage(1_000, 100)), 5_000 + 2_500);
        assert_eq!(cost_micros(&us, &usage(1_000, 100)), 8_250, "1.1 × 7,500");
        assert_eq!(cost_micros(&Price { uplift_pct: 110, ..price("0.5", "0") }, &usage(1, 0)), 1, "0.55 rounds up");
        assert_eq!(cost_micros(&us, &usage(u64::MAX, u64::MAX)), u64::MAX);
    }

    #[test]
    fn web_searches_cost_their_price_per_thousand_apart_from_tokens() {
        let p = Price { web_search: Some(PerThousand(10_000_000)), uplift_pct: 110, ..price("3", "15") };
        let u = Usage { input_tokens: 1_000, web_searches: 3, ..Usage::default() };
        // 1,000 × $3/MTok × 1.1 = 3,300; 3 searches at $10 per 1,000 = 30,000.
        assert_eq!(cost_micros(&p, &u), 3_300 + 30_000);
        assert_eq!(cost_micros(&price("3", "15"), &u), 3_000, "no search price: tokens only");
    }
}
