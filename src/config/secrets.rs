//! Which Worker secrets a deployment may read. The config is edited at run time through
//! the admin API, so the names it gives secrets cannot be trusted on their own: a
//! deployment naming `ADMIN_TOKEN` with an attacker's `base_url` would send the token
//! there. The deploy decides instead, in the var `PROVIDER_SECRETS` (names separated by
//! commas), which only a deploy can change. A deployment may name only a listed secret,
//! and never the admin token or a gateway key's secret, whatever the list says.

use super::{is_secret_name, Config};

/// The secret that holds the admin API's tokens.
pub const ADMIN_TOKEN: &str = "ADMIN_TOKEN";
/// The var with the list.
pub const VAR: &str = "PROVIDER_SECRETS";

/// The secrets deployments may read, as the deploy lists them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderSecrets {
    names: Vec<String>,
}

impl ProviderSecrets {
    /// The var's list; unset or blank lists none (no deployment may read a secret). A
    /// name that is not a secret name, or the admin token, makes the whole list invalid.
    pub fn parse(var: Option<&str>) -> Result<ProviderSecrets, String> {
        let mut names = Vec::new();
        for name in var.unwrap_or_default().split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !is_secret_name(name) {
                return Err(format!("{VAR}: `{name}` is not a secret name (A-Z, 0-9, _)"));
            }
            if name == ADMIN_TOKEN {
                return Err(format!("{VAR} may not list {ADMIN_TOKEN}: no deployment may read it"));
            }
            names.push(name.to_string());
        }
        Ok(ProviderSecrets { names })
    }

    /// Why a deployment of `c` may not read the secret `name`, if it may not.
    fn refusal(&self, c: &Config, name: &str) -> Option<String> {
        if name == ADMIN_TOKEN {
            return Some("is the admin API's token; no deployment may read it".into());
        }
        if let Some(k) = c.keys.iter().find(|k| k.secret.as_deref() == Some(name)) {
            return Some(format!("is the secret of key `{}`; no deployment may read it", k.id));
        }
        if !self.names.iter().any(|n| n == name) {
            let listed = if self.names.is_empty() { "none".to_string() } else { self.names.join(", ") };
            return Some(format!(
                "is not in {VAR}, the secrets a deployment may read ({listed}); a deploy adds it there"
            ));
        }
        None
    }

    /// Whether a deployment of `c` may read `name` (checked again at request time, so a
    /// stored config that names another secret never resolves it).
    pub fn may_read(&self, c: &Config, name: &str) -> bool {
        self.refusal(c, name).is_none()
    }

    /// Whether a gateway key may be held in the secret `name` (checked again when keys are
    /// read, so a stored config cannot turn the admin token or a provider key into one).
    pub fn may_hold_key(&self, name: &str) -> bool {
        name != ADMIN_TOKEN && !self.names.iter().any(|n| n == name)
    }

    /// Every secret `c` names is where it may be: a deployment's in the list, never the
    /// admin token or a key's; a key's never the admin token or a listed provider secret
    /// (a key held in a provider's secret would make the provider key a gateway key).
    pub fn check(&self, c: &Config) -> Result<(), String> {
        for d in &c.deployments {
            for (field, name) in d.secrets() {
                if let Some(why) = self.refusal(c, name) {
                    return Err(format!("deployment `{}`: {field} `{name}` {why}", d.id));
                }
            }
        }
        for k in &c.keys {
            let Some(name) = k.secret.as_deref() else { continue };
            if !self.may_hold_key(name) {
                return Err(format!(
                    "key `{}`: secret `{name}` is {}; a key needs a secret of its own",
                    k.id,
                    if name == ADMIN_TOKEN { "the admin API's token" } else { "a provider secret (PROVIDER_SECRETS)" }
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn sample_with(edit: impl FnOnce(&mut serde_json::Value)) -> Config {
        let mut v: serde_json::Value = serde_json::from_str(&config::tests::sample()).unwrap();
        edit(&mut v);
        config::parse(&v.to_string()).unwrap().config
    }

    #[test]
    fn the_list_is_read_strictly() {
        let p = ProviderSecrets::parse(Some(" US_KEY, OTHER_KEY ,")).unwrap();
        assert_eq!(p.names, ["US_KEY", "OTHER_KEY"]);
        assert_eq!(ProviderSecrets::parse(None).unwrap(), ProviderSecrets::default());
        assert_eq!(ProviderSecrets::parse(Some("  ")).unwrap(), ProviderSecrets::default());
        assert!(ProviderSecrets::parse(Some("US_KEY,lower")).unwrap_err().contains("`lower` is not a secret name"));
        assert!(ProviderSecrets::parse(Some("US_KEY,ADMIN_TOKEN")).unwrap_err().contains("may not list ADMIN_TOKEN"));
    }

    #[test]
    fn a_deployment_reads_only_listed_secrets() {
        let listed = ProviderSecrets::parse(Some("US_KEY")).unwrap();
        let c = sample_with(|_| {});
        listed.check(&c).unwrap();
        assert!(listed.may_read(&c, "US_KEY"));
        let none = ProviderSecrets::default();
        assert!(none.check(&c).unwrap_err().contains("api_key_secret `US_KEY` is not in PROVIDER_SECRETS"));
        assert!(!none.may_read(&c, "US_KEY"));

        // The admin token and a key's secret are refused even when listed.
        let all = ProviderSecrets { names: vec!["ADMIN_TOKEN".into(), "GATEWAY_KEY_K2".into(), "US_KEY".into()] };
        let exfil = sample_with(|v| v["deployments"][2]["api_key_secret"] = "ADMIN_TOKEN".into());
        let e = all.check(&exfil).unwrap_err();
        assert_eq!(
            e,
            "deployment `us-a`: api_key_secret `ADMIN_TOKEN` is the admin API's token; no deployment may read it"
        );
        assert!(!all.may_read(&exfil, "ADMIN_TOKEN"));
        let key = sample_with(|v| v["deployments"][2]["api_key_secret"] = "GATEWAY_KEY_K2".into());
        assert!(all.check(&key).unwrap_err().contains("is the secret of key `k2`"));
        assert!(!all.may_read(&key, "GATEWAY_KEY_K2"));
        let unlisted = sample_with(|v| v["deployments"][2]["api_key_secret"] = "OTHER".into());
        assert!(listed.check(&unlisted).unwrap_err().contains("(US_KEY); a deploy adds it there"));
    }

    #[test]
    fn every_secret_field_of_a_deployment_is_checked() {
        let listed = ProviderSecrets::parse(Some("US_KEY,AWS_ID,AWS_KEY")).unwrap();
        let bedrock = sample_with(|v| {
            v["deployments"][0] = serde_json::json!({
                "id": "br", "provider": "bedrock", "model": "m", "base_url": "https://bedrock-runtime.us-east-1.amazonaws.com",
                "aws_region": "us-east-1", "aws_access_key_id_secret": "AWS_ID", "aws_secret_access_key_secret": "AWS_KEY",
                "aws_session_token_secret": "ADMIN_TOKEN", "jurisdiction": "us", "region": "us-east-1",
                "price": {"input": "1", "output": "1"}});
            v["aliases"][0]["deployments"][1] = "br".into();
        });
        assert!(listed
            .check(&bedrock)
            .unwrap_err()
            .starts_with("deployment `br`: aws_session_token_secret `ADMIN_TOKEN`"));
    }

    #[test]
    fn a_key_never_holds_the_admin_token_or_a_provider_secret() {
        let listed = ProviderSecrets::parse(Some("US_KEY")).unwrap();
        let admin = sample_with(|v| v["keys"][1]["secret"] = "ADMIN_TOKEN".into());
        assert!(listed.check(&admin).unwrap_err().contains("key `k2`: secret `ADMIN_TOKEN` is the admin API's token"));
        // Named by a deployment too, the deployment is refused first.
        let shared = sample_with(|v| v["keys"][1]["secret"] = "US_KEY".into());
        assert!(listed.check(&shared).unwrap_err().contains("`US_KEY` is the secret of key `k2`"));
        let spare = ProviderSecrets::parse(Some("US_KEY,SPARE_KEY")).unwrap();
        let provider = sample_with(|v| v["keys"][1]["secret"] = "SPARE_KEY".into());
        assert!(spare
            .check(&provider)
            .unwrap_err()
            .contains("secret `SPARE_KEY` is a provider secret (PROVIDER_SECRETS)"));
        assert!(!spare.may_hold_key("SPARE_KEY") && !spare.may_hold_key("ADMIN_TOKEN"));
        assert!(spare.may_hold_key("GATEWAY_KEY_K2"));
    }
}
