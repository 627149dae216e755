//! What a cost tag value may be (`x-gateway-team`, `-feature`, `-env`): requests'
//! values are lowercased and checked against this, and so is every team the config names,
//! so that the two compare equal.

pub const MAX_LEN: usize = 64;

/// 1 to 64 lowercase letters, digits, `.`, `_` and `-`.
pub fn is_tag_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_LEN
        && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}
