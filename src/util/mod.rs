//! Codecs and helpers with no knowledge of the gateway: hashing, base64, dates, URLs,
//! server-sent events, the JSON reader and a bounded map.

pub mod base64;
pub mod bounded;
pub mod hash;
pub mod sse;
pub mod time;
pub mod uri;
pub mod valueread;
