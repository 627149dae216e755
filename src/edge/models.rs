//! `GET /v1/models` (the aliases a key may use) and `GET /v1/spend` (its month so far).

use super::respond;
use super::spend;
use super::state::State;
use crate::config::budget::Budget;
use crate::config::price::format_usd;
use crate::config::KeyConfig;
use crate::model::error::GatewayError;
use crate::policy::keys;
use crate::policy::routing;
use worker::web_sys::Response;
use worker::Env;

pub fn models(state: &State, key: &KeyConfig) -> Result<Response, GatewayError> {
    let data: Vec<serde_json::Value> = state
        .gateway
        .config
        .aliases
        .iter()
        .filter(|a| keys::may_use(key, &a.name))
        .map(|a| {
            serde_json::json!({
                "id": a.name,
                "object": "model",
                "created": 0,
                "owned_by": "llm-edge-gateway",
                "description": a.description,
                "deployments": a.deployments,
                "capabilities": routing::alias_capabilities(&state.gateway, a),
            })
        })
        .collect();
    respond::json(200, &serde_json::json!({"object": "list", "data": data}))
}

/// `GET /v1/spend`: the key's own month-to-date spend, and its team's, with their budgets.
pub async fn own_spend(env: &Env, state: &State, key: &KeyConfig) -> Result<Response, GatewayError> {
    let team = key.team.as_deref().map(str::to_ascii_lowercase);
    let spend = spend::current(env, &key.id, team.as_deref().unwrap_or_default()).await;
    let budget_json = |b: Option<&Budget>| {
        b.map(|b| serde_json::json!({"monthly_usd": format_usd(b.monthly_usd.0), "mode": format!("{:?}", b.mode).to_ascii_lowercase()}))
    };
    let team_budget = team.as_deref().and_then(|t| state.gateway.config.budgets.teams.get(t));
    respond::json(
        200,
        &serde_json::json!({
            "month": spend.month,
            "key": {
                "id": key.id,
                "spend_usd": format_usd(spend.keys.get(&key.id).copied().unwrap_or(0)),
                "budget": budget_json(key.budget.as_ref()),
            },
            "team": team.as_ref().map(|t| serde_json::json!({
                "name": t,
                "spend_usd": format_usd(spend.teams.get(t).copied().unwrap_or(0)),
                "budget": budget_json(team_budget),
            })),
            "as_of_ms": spend.at_ms,
        }),
    )
}
