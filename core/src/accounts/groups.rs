//! The groups a login records for its identity: from the entry's `groups_claim`, else the
//! provider's own mapping, else the `groups` claim; unknown when the IdP says it left them out.

use authnz_plugin::{MappedIdentity, VerifiedClaims};
use serde_json::Value;

/// At most this many groups are recorded; an IdP that sends more is treated as one that
/// signalled an overage (unknown), so that a truncated list never passes a policy it should not.
pub const MAX_GROUPS: usize = 256;

/// The longest group name recorded (longer ones are dropped).
const MAX_GROUP_LEN: usize = 256;

/// The identity's groups from this login, as the IdP names them; `None`: unknown.
pub fn groups_of(
    claim: Option<&str>,
    claims: &VerifiedClaims,
    mapped: &MappedIdentity,
) -> Option<Vec<String>> {
    let name = claim.unwrap_or("groups");
    // Entra: too many groups for the token; they are behind a Graph call (`_claim_names`),
    // or only `hasgroups: true` is said. Either way the list here is not the person's.
    let overage = claims
        .claims
        .get("_claim_names")
        .and_then(Value::as_object)
        .is_some_and(|names| names.contains_key(name))
        || claims.claims.get("hasgroups").and_then(Value::as_bool) == Some(true);
    if overage {
        return None;
    }
    let groups: Vec<String> = if claim.is_none() && !mapped.groups.is_empty() {
        mapped.groups.clone()
    } else {
        match claims.claims.get(name) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        }
    };
    if groups.len() > MAX_GROUPS {
        return None;
    }
    let mut kept: Vec<String> = groups
        .into_iter()
        .filter(|group| {
            !group.is_empty()
                && group.len() <= MAX_GROUP_LEN
                && !group.chars().any(char::is_control)
        })
        .collect();
    kept.sort();
    kept.dedup();
    Some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> VerifiedClaims {
        VerifiedClaims {
            issuer: "https://idp.example".into(),
            subject: "s".into(),
            claims: value.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn groups_come_from_the_claim_the_provider_or_nowhere() {
        let none = MappedIdentity::default();
        let keycloak = MappedIdentity {
            groups: vec!["/staff".into()],
            ..MappedIdentity::default()
        };
        let many: Vec<String> = (0..=MAX_GROUPS).map(|n| format!("g{n}")).collect();
        type Row<'a> = (
            &'a str,
            Option<&'a str>,
            Value,
            &'a MappedIdentity,
            Option<Vec<&'a str>>,
        );
        let rows: [Row; 11] = [
            (
                "a list",
                None,
                json!({"groups": ["b", "a", "a"]}),
                &none,
                Some(vec!["a", "b"]),
            ),
            (
                "one string",
                None,
                json!({"groups": "staff"}),
                &none,
                Some(vec!["staff"]),
            ),
            ("no claim", None, json!({}), &none, Some(vec![])),
            (
                "other items skipped",
                None,
                json!({"groups": ["ok", 3, null, "", "bad\nname"]}),
                &none,
                Some(vec!["ok"]),
            ),
            (
                "configured claim",
                Some("roles"),
                json!({"roles": ["r"], "groups": ["g"]}),
                &none,
                Some(vec!["r"]),
            ),
            (
                "configured claim absent",
                Some("roles"),
                json!({"groups": ["g"]}),
                &keycloak,
                Some(vec![]),
            ),
            (
                "provider mapping",
                None,
                json!({"groups": ["g"]}),
                &keycloak,
                Some(vec!["/staff"]),
            ),
            (
                "Entra overage",
                None,
                json!({"_claim_names": {"groups": "src1"}, "groups": ["x"]}),
                &none,
                None,
            ),
            (
                "Entra hasgroups",
                None,
                json!({"hasgroups": true}),
                &none,
                None,
            ),
            (
                "overage of the configured claim",
                Some("roles"),
                json!({"_claim_names": {"roles": "src1"}}),
                &none,
                None,
            ),
            ("too many", None, json!({"groups": many}), &none, None),
        ];
        for (why, claim, value, mapped, want) in rows {
            let want = want.map(|groups| groups.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(groups_of(claim, &claims(value), mapped), want, "{why}");
        }
    }
}
