//! The gateway's own vocabulary: the canonical chat request, the caller's location, token
//! usage, upstream error classes and the one error type clients see.

pub mod chat;
mod countries;
pub mod error;
pub mod error_class;
pub mod geo;
pub mod tag;
pub mod usage;
