//! AWS event-stream frames as Bedrock sends them, written independently of the gateway's
//! decoder so that the mock checks it.

use serde_json::{json, Value};

/// One Anthropic stream event as InvokeModel streams it.
pub(crate) fn chunk_frame(event: &Value) -> Vec<u8> {
    let payload = json!({"bytes": crate::base64::encode(event.to_string().as_bytes())});
    frame(
        &[(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")],
        payload.to_string().as_bytes(),
    )
}

/// An exception frame ending a stream; `code` in either case (`ThrottlingException`).
pub(crate) fn exception_frame(code: &str, message: &str) -> Vec<u8> {
    // Exception frames name the type in lowerCamelCase: `throttlingException`.
    let mut kind = code.to_string();
    if let Some(first) = kind.get_mut(..1) {
        first.make_ascii_lowercase();
    }
    let headers =
        [(":exception-type", kind.as_str()), (":content-type", "application/json"), (":message-type", "exception")];
    frame(&headers, json!({"message": message}).to_string().as_bytes())
}

/// Frames one event-stream message; every header is a string (type 7). Deliberately not
/// the gateway's encoder: the mock is the independent check of the gateway's decoder.
/// Layout: total length, headers length, prelude CRC, headers, payload, message CRC, all
/// big-endian, CRC-32 (ISO-HDLC) over the bytes before it.
pub(crate) fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::new();
    for (name, value) in headers {
        encoded.push(name.len() as u8);
        encoded.extend_from_slice(name.as_bytes());
        encoded.push(7);
        encoded.extend_from_slice(&(value.len() as u16).to_be_bytes());
        encoded.extend_from_slice(value.as_bytes());
    }
    let total = 12 + encoded.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out.extend_from_slice(&encoded);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out
}

/// Bit by bit (reflected polynomial 0xEDB88320): a few frames per answer need no table.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_frame_without_headers_or_payload_is_the_16_byte_minimum() {
        // From the event-stream framing's published test vectors ("empty message").
        assert_eq!(frame(&[], b""), [0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff]);
    }
}
