//! What the IdP's redirect back must satisfy before its code is redeemed.

use super::*;

impl Idp {
    /// Whether `iss` (an authorization response's RFC 9207 parameter) names this IdP: the
    /// configured issuer exactly, or, for a multi-tenant IdP, its template with one tenant.
    pub fn issuer_matches(&self, iss: &str) -> bool {
        if iss == self.config.issuer {
            return true;
        }
        let Some((prefix, suffix)) = self
            .info
            .issuer_template
            .as_deref()
            .and_then(|t| t.split_once("{tenantid}"))
        else {
            return false;
        };
        iss.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .is_some_and(is_guid)
    }

    /// Whether the IdP promised RFC 9207 `iss` in authorization responses.
    pub async fn promises_iss(&self) -> Result<bool, FlowError> {
        Ok(self
            .discovered()
            .await?
            .metadata
            .additional_metadata()
            .authorization_response_iss_parameter_supported
            == Some(true))
    }
}

/// `8-4-4-4-12` hexadecimal digits.
pub(super) fn is_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}
