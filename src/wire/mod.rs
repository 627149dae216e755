//! Client-facing wire shapes that both the ingresses and the providers write.

pub mod anthropic;
pub mod openai;
