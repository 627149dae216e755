//! What the gateway decides about a request: who is calling (keys, tags), where it may go
//! (residency), in which order (routing, health), whether to try again (attempts) and
//! whether it may spend (budgets).

pub mod attempts;
pub mod budget;
pub mod health;
pub mod keys;
pub mod residency;
pub mod routing;
pub mod tags;

#[cfg(test)]
mod properties;
