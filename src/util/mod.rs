//! Codecs and helpers with no knowledge of the gateway: hashing, base64, dates, URLs,
//! server-sent events and the JSON reader.

pub mod base64;
pub mod hash;
pub mod sse;
pub mod time;
pub mod uri;
pub mod valueread;
