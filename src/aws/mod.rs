//! The two AWS wire pieces Bedrock needs and no SDK provides on Workers: request signing
//! (SigV4) and the binary event-stream framing of ConverseStream answers. Both are pure:
//! bytes and plain data in and out, the clock and the network left to the caller.

pub mod eventstream;
pub mod sigv4;
