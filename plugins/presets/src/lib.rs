//! The research identity providers Galaxy ships, as ready-made kinds.
//!
//! Most are OpenID providers with one well-known issuer, so a preset is that issuer, a label
//! and default scopes, plus the one quirk (if any) that sets the IdP apart, commented with its
//! source. `issuer = "..."` in the config still overrides the issuer (a test or staging
//! instance). `tapis` is plain OAuth 2.0 and needs the tenant's URL.
//!
//! A preset is one block: its [`Kind`] (name, description, settings type), its factory and,
//! when it maps claims its own way, its mapping; [`KINDS`] lists them. The core registers
//! [`KINDS`] and composes the config schema from them, so a new preset is written here alone.

use authnz_plugin::schemars::{self, JsonSchema};
use authnz_plugin::serde::Deserialize;
use authnz_plugin::{
    standard_identity, ApiCall, ConfigError, IdentityProvider, JsonValue, Kind, LoginContext,
    MapError, MappedIdentity, OAuth2Endpoints, ProviderInfo, ProviderSettings, TokenAnswer,
    TomlValue, VerifiedClaims,
};

/// Every preset kind, sorted by name.
pub const KINDS: &[Kind] = &[
    CILOGON,
    EGI_CHECKIN,
    EINFRACZ,
    ELIXIR,
    GLOBUS,
    LIFESCIENCE,
    NFDI,
    ORCID,
    TAPIS,
];

type Built = Result<Box<dyn IdentityProvider>, Vec<ConfigError>>;

/// `kind = "globus"`.
pub const GLOBUS: Kind = Kind::new("globus", globus).described("Globus Auth.");

/// Globus Auth. Source: docs.globus.org (Globus Auth API); Galaxy uses social-core's
/// `GlobusOpenIdConnect`. Quirk: `preferred_username` is an identity such as
/// `jdoe@globusid.org` or `jdoe@university.edu`; the local username is the part before `@`
/// (social-core does the same). The key stays `sub`, so two `jdoe`s remain two people.
pub fn globus(settings: &ProviderSettings) -> Built {
    let info = openid("globus", "Globus", "https://auth.globus.org");
    preset(
        settings,
        &[],
        info,
        Vec::new(),
        Mapping::Claims(globus_identity),
    )
}

/// Standard, the username cut at `@`.
fn globus_identity(claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
    let mut identity = standard_identity(claims);
    if let Some(name) = claims.str("preferred_username") {
        let local = name.split('@').next().unwrap_or(name);
        identity.username = Some(local.to_string()).filter(|l| !l.is_empty());
    }
    Ok(identity)
}

/// `kind = "elixir"`.
pub const ELIXIR: Kind = Kind::new("elixir", elixir).described("ELIXIR AAI.");

/// ELIXIR AAI (MITREid-based, hence the trailing slash in its issuer). Source: Galaxy's sample
/// `Elixir` provider and social-core's `ElixirOpenIdConnect`. ELIXIR's login has since moved
/// into LifeScience Login; if this issuer stops answering, use `lifescience`.
pub fn elixir(settings: &ProviderSettings) -> Built {
    let info = openid("elixir", "ELIXIR", "https://login.elixir-czech.org/oidc/");
    preset(settings, &[], info, Vec::new(), Mapping::STANDARD)
}

/// `kind = "lifescience"`.
pub const LIFESCIENCE: Kind = Kind::new("lifescience", lifescience)
    .described("LifeScience Login (LS AAI), the life-science research infrastructures' AAI.");

/// LifeScience Login (LS AAI), the life-science research infrastructures' AAI. Source:
/// lifescience-ri.eu (LS Login service documentation); the issuer keeps its trailing slash.
pub fn lifescience(settings: &ProviderSettings) -> Built {
    let info = openid(
        "lifescience",
        "LifeScience Login",
        "https://login.aai.lifescience-ri.eu/oidc/",
    );
    preset(settings, &[], info, Vec::new(), Mapping::STANDARD)
}

/// `kind = "nfdi"`.
pub const NFDI: Kind = Kind::new("nfdi", nfdi)
    .described("NFDI-AAI's Infrastructure Proxy, run by DFN for Germany's NFDI consortia.");

/// NFDI-AAI's Infrastructure Proxy, run by DFN for Germany's NFDI consortia. Source:
/// doc.nfdi-aai.de. (Community AAIs of NFDI such as Academic ID have their own issuers: use
/// `oidc` for those.)
pub fn nfdi(settings: &ProviderSettings) -> Built {
    let info = openid("nfdi", "NFDI", "https://infraproxy.nfdi-aai.dfn.de");
    preset(settings, &[], info, Vec::new(), Mapping::STANDARD)
}

/// `kind = "einfracz"`.
pub const EINFRACZ: Kind = Kind::new("einfracz", einfracz)
    .described("e-INFRA CZ, the Czech research e-infrastructure login.");

/// e-INFRA CZ, the Czech research e-infrastructure login (Perun-based proxy). Source:
/// docs.e-infra.cz; the issuer keeps its trailing slash.
pub fn einfracz(settings: &ProviderSettings) -> Built {
    let info = openid("einfracz", "e-INFRA CZ", "https://login.e-infra.cz/oidc/");
    preset(settings, &[], info, Vec::new(), Mapping::STANDARD)
}

/// `kind = "orcid"`.
pub const ORCID: Kind =
    Kind::new("orcid", orcid).described("ORCID: researchers sign in with their ORCID iD.");

/// ORCID, the researchers' persistent identifier. Source: info.orcid.org (OpenID Connect) and
/// its discovery document, whose only scope is `openid`. Quirks: `sub` is the ORCID iD
/// (`0000-0002-1825-0097`), the key; userinfo carries `given_name`, `family_name` and `name`
/// (the credit name), and neither it nor the ID token an email (ORCID shares emails only
/// through its member API), so an ORCID login never links to an account by email. The
/// username is the person's name, or the iD when ORCID gives none.
pub fn orcid(settings: &ProviderSettings) -> Built {
    let mut info = openid("orcid", "ORCID", "https://orcid.org");
    info.scopes.clear();
    info.icon = Some(authnz_plugin::mark(
        "0 0 24 24",
        "#A6CE39",
        icondata_si::SiOrcid.data,
    ));
    preset(
        settings,
        &[],
        info,
        Vec::new(),
        Mapping::Claims(orcid_identity),
    )
}

/// The iD as the key; the name (or the iD) as the username; no email.
fn orcid_identity(claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
    let text = |name: &str| claims.str(name).map(str::trim).filter(|v| !v.is_empty());
    let names: Vec<&str> = [text("given_name"), text("family_name")]
        .into_iter()
        .flatten()
        .collect();
    let full_name = Some(names.join(" ")).filter(|name| !name.is_empty());
    Ok(MappedIdentity {
        subject: claims.subject.clone(),
        username: full_name.clone().or_else(|| Some(claims.subject.clone())),
        email: None,
        email_verified: false,
        display_name: text("name").map(str::to_string).or(full_name),
        ..Default::default()
    })
}

/// `kind = "egi_checkin"`.
pub const EGI_CHECKIN: Kind = Kind::new("egi_checkin", egi_checkin)
    .described("EGI Check-in.")
    .with_settings::<EgiCheckinSettings>();

/// The settings of `egi_checkin`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "authnz_plugin::serde", deny_unknown_fields)]
pub struct EgiCheckinSettings {
    /// Which Check-in instance: `production`, `demo` or `development`.
    #[schemars(extend("default" = "production"))]
    pub environment: Option<EgiEnvironment>,
}

/// The EGI Check-in instance.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "authnz_plugin::serde", rename_all = "snake_case")]
pub enum EgiEnvironment {
    Production,
    Demo,
    Development,
}

/// EGI Check-in, the EGI federation's AAI (Keycloak-based since 2023), with one issuer per
/// `environment`: `production` (default), `demo` or `development`. Source: docs.egi.eu
/// (Check-in endpoints); social-core's `EGICheckinOpenIdConnect` has the same three.
pub fn egi_checkin(settings: &ProviderSettings) -> Built {
    let mut errors = Vec::new();
    let issuer = match settings.optional_str("environment", &mut errors).as_deref() {
        None | Some("production") => "https://aai.egi.eu/auth/realms/egi",
        Some("demo") => "https://aai-demo.egi.eu/auth/realms/egi",
        Some("development") => "https://aai-dev.egi.eu/auth/realms/egi",
        Some(_) => {
            errors.push(ConfigError::new(
                "environment",
                "expected \"production\", \"demo\" or \"development\"",
            ));
            ""
        }
    };
    let info = openid("egi_checkin", "EGI Check-in", issuer);
    preset_with(
        settings,
        &["environment"],
        errors,
        info,
        Vec::new(),
        Mapping::STANDARD,
    )
}

/// `kind = "cilogon"`.
pub const CILOGON: Kind = Kind::new("cilogon", cilogon)
    .described("CILogon.")
    .with_settings::<CilogonSettings>();

/// The settings of `cilogon`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "authnz_plugin::serde", deny_unknown_fields)]
pub struct CilogonSettings {
    /// Sent as `idphint`.
    pub idp_hint: Option<String>,
    /// Sent as `selected_idp` and enforced on the verified `idp` claim.
    pub allowed_idps: Option<Vec<String>>,
}

/// CILogon, the US research federation gateway (InCommon, eduGAIN, ORCID, ...). Source:
/// cilogon.org/oidc. Quirks:
/// - scope `org.cilogon.userinfo` (Galaxy's default too) releases the `idp` claim, the
///   entityID of the IdP the person chose at CILogon;
/// - `idp_hint` is sent as `idphint`, which skips CILogon's chooser (Galaxy sends it);
/// - `allowed_idps` is sent as `selected_idp`, comma-joined, which limits the chooser to those
///   IdPs (as JupyterHub's CILogonOAuthenticator does with its `shown_idps`). The chooser is
///   only a convenience anyone can bypass by editing the URL, so the list is *enforced* on the
///   verified `idp` claim (Galaxy's `allowed_idp` restricted the hint instead).
pub fn cilogon(settings: &ProviderSettings) -> Built {
    let mut errors = Vec::new();
    let idp_hint = settings.optional_str("idp_hint", &mut errors);
    let allowed_idps = str_list(settings, "allowed_idps", &mut errors);
    if let Some(hint) = &idp_hint {
        if hint.trim().is_empty() {
            errors.push(ConfigError::new("idp_hint", "must not be empty"));
        } else if !allowed_idps.is_empty() && !allowed_idps.contains(hint) {
            errors.push(ConfigError::new(
                "idp_hint",
                "is not one of allowed_idps: that person could never sign in",
            ));
        }
    }
    let mut params = Vec::new();
    if let Some(hint) = idp_hint {
        params.push(("idphint".to_string(), hint));
    }
    if !allowed_idps.is_empty() {
        params.push(("selected_idp".to_string(), allowed_idps.join(",")));
    }
    let mut info = openid("cilogon", "CILogon", "https://cilogon.org");
    info.scopes.push("org.cilogon.userinfo".into());
    let mapping = Mapping::CILogon { allowed_idps };
    preset_with(
        settings,
        &["idp_hint", "allowed_idps"],
        errors,
        info,
        params,
        mapping,
    )
}

/// `kind = "tapis"`.
pub const TAPIS: Kind = Kind::new("tapis", tapis)
    .described("Tapis (OAuth 2.0).")
    .with_settings::<TapisSettings>();

/// The settings of `tapis`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "authnz_plugin::serde", deny_unknown_fields)]
pub struct TapisSettings {
    /// The tenant's base URL, e.g. `https://tacc.tapis.io`.
    pub url: String,
}

/// Tapis (TACC's API platform), plain OAuth 2.0 per tenant: `url` is the tenant's base, e.g.
/// `https://tacc.tapis.io`. Sources: Galaxy's `lib/galaxy/authnz/tapis.py` and the Tapis
/// authenticator (`service/api.py`, `TokensResource`). Its quirks, all declared here:
/// - the token endpoint (`/v3/oauth2/tokens`, HTTP Basic client authentication) wraps its
///   answer: `{"result": {"access_token": {"access_token", "expires_in", ...},
///   "refresh_token": {"refresh_token", ...}}, "status": "success"}`;
/// - its API takes the token in `X-Tapis-Token`, not `Authorization: Bearer`;
/// - `/v3/oauth2/userinfo` answers `{"result": {"username", "email", ...}}`: the person is its
///   `username` (unique within the tenant); the email is not said to be verified.
///
/// Tapis ignores PKCE (it neither needs nor checks `code_challenge`); the state, bound to the
/// browser, and the exact redirect URI are what protect its logins.
pub fn tapis(settings: &ProviderSettings) -> Built {
    let mut errors = Vec::new();
    let url = settings
        .required_base_url("url", &mut errors)
        .unwrap_or_default();
    // `url` is a validated base without query or trailing slash.
    let info = ProviderInfo {
        kind: "tapis".into(),
        issuer: Some(url.clone()),
        scopes: Vec::new(),
        label: "Tapis".into(),
        oauth2: Some(OAuth2Endpoints {
            authorization_endpoint: format!("{url}/v3/oauth2/authorize"),
            token_endpoint: format!("{url}/v3/oauth2/tokens"),
            api_calls: vec![ApiCall {
                claim: "userinfo".into(),
                url: format!("{url}/v3/oauth2/userinfo"),
                token_header: Some("X-Tapis-Token".into()),
            }],
            token_answer: Some(TokenAnswer {
                access_token: "/result/access_token/access_token".into(),
                expires_in: Some("/result/access_token/expires_in".into()),
                refresh_token: Some("/result/refresh_token/refresh_token".into()),
            }),
        }),
        ..Default::default()
    };
    preset_with(
        settings,
        &["url"],
        errors,
        info,
        Vec::new(),
        Mapping::Claims(tapis_identity),
    )
}

/// The `userinfo` API answer; `username` is the key.
fn tapis_identity(claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
    let answer = claims.claims.get("userinfo");
    // Galaxy's tapis.py: the profile may be wrapped in `result`.
    let profile = answer.and_then(|a| a.get("result")).or(answer);
    let text = |name: &str| {
        profile
            .and_then(|p| p.get(name))
            .and_then(JsonValue::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_string)
    };
    let username = text("username")
        .ok_or_else(|| MapError::Invalid("the Tapis userinfo answer has no username".into()))?;
    Ok(MappedIdentity {
        subject: username.clone(),
        username: Some(username),
        // Tapis says nothing of verification: kept for display only.
        email: text("email"),
        email_verified: false,
        ..Default::default()
    })
}

/// How a preset turns verified claims into an identity.
#[derive(Debug, Clone)]
enum Mapping {
    /// A function of the verified claims alone.
    Claims(fn(&VerifiedClaims) -> Result<MappedIdentity, MapError>),
    /// Standard, after checking the `idp` claim against the allowed entityIDs (none: any).
    CILogon { allowed_idps: Vec<String> },
}

impl Mapping {
    /// [`standard_identity`].
    const STANDARD: Self = Self::Claims(|claims| Ok(standard_identity(claims)));
}

/// A preset provider: a fixed description, fixed authorize parameters and a [`Mapping`].
#[derive(Debug, Clone)]
pub struct PresetProvider {
    info: ProviderInfo,
    authorize_params: Vec<(String, String)>,
    mapping: Mapping,
}

/// The description of an OpenID preset, with the scopes every preset asks for.
fn openid(kind: &str, label: &str, issuer: &str) -> ProviderInfo {
    ProviderInfo {
        kind: kind.into(),
        issuer: Some(issuer.into()),
        scopes: vec!["email".into(), "profile".into()],
        label: label.into(),
        ..Default::default()
    }
}

/// A preset without settings errors of its own.
fn preset(
    settings: &ProviderSettings,
    known: &[&str],
    info: ProviderInfo,
    authorize_params: Vec<(String, String)>,
    mapping: Mapping,
) -> Built {
    preset_with(settings, known, Vec::new(), info, authorize_params, mapping)
}

/// A preset, or every settings error: `errors` found so far plus unknown keys.
fn preset_with(
    settings: &ProviderSettings,
    known: &[&str],
    mut errors: Vec<ConfigError>,
    info: ProviderInfo,
    authorize_params: Vec<(String, String)>,
    mapping: Mapping,
) -> Built {
    errors.extend(settings.unknown_keys(known));
    if errors.is_empty() {
        Ok(Box::new(PresetProvider {
            info,
            authorize_params,
            mapping,
        }))
    } else {
        Err(errors)
    }
}

/// An optional list of non-empty strings.
fn str_list(settings: &ProviderSettings, key: &str, errors: &mut Vec<ConfigError>) -> Vec<String> {
    let Some(value) = settings.settings.get(key) else {
        return Vec::new();
    };
    let items: Option<Vec<String>> = value.as_array().and_then(|items| {
        items
            .iter()
            .map(|item| match item {
                TomlValue::String(s) if !s.trim().is_empty() => Some(s.clone()),
                _ => None,
            })
            .collect()
    });
    match items {
        Some(items) if !items.is_empty() => items,
        Some(_) => {
            errors.push(ConfigError::new(
                key,
                "must not be empty (leave it out for any)",
            ));
            Vec::new()
        }
        None => {
            errors.push(ConfigError::new(
                key,
                "expected a list of non-empty strings",
            ));
            Vec::new()
        }
    }
}

impl IdentityProvider for PresetProvider {
    fn describe(&self) -> ProviderInfo {
        self.info.clone()
    }

    fn authorize_params(&self, _ctx: &LoginContext) -> Vec<(String, String)> {
        self.authorize_params.clone()
    }

    fn map_identity(&self, claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
        match &self.mapping {
            Mapping::Claims(map) => map(claims),
            Mapping::CILogon { allowed_idps } => {
                let idp = claims.str("idp").unwrap_or_default();
                if !allowed_idps.is_empty() && !allowed_idps.iter().any(|allowed| allowed == idp) {
                    return Err(MapError::Denied(
                        "the identity provider you chose at CILogon is not accepted here".into(),
                    ));
                }
                Ok(standard_identity(claims))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(kind: &str, text: &str) -> Built {
        let factory = KINDS.iter().find(|k| k.name == kind).unwrap().factory;
        factory(&ProviderSettings {
            name: kind.into(),
            settings: text.parse().unwrap(),
        })
    }

    fn claims(json: serde_json::Value) -> VerifiedClaims {
        VerifiedClaims {
            issuer: "https://idp.example".into(),
            subject: "sub-1".into(),
            claims: json.as_object().cloned().unwrap(),
        }
    }

    #[test]
    fn kinds_are_sorted_unique_and_named_by_their_description() {
        let names: Vec<&str> = KINDS.iter().map(|kind| kind.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        for name in names {
            let settings = if name == "tapis" {
                "url = \"https://tacc.tapis.io\""
            } else {
                ""
            };
            let info = build(name, settings).unwrap().describe();
            assert_eq!(info.kind, name);
            assert!(!info.label.is_empty(), "{name}");
            assert!(info.issuer_template.is_none(), "{name}");
        }
    }

    /// The property names of a kind's settings schema.
    fn declared(kind: &str) -> Vec<String> {
        let kind = KINDS.iter().find(|k| k.name == kind).unwrap();
        let schema = (kind.settings_schema)(&mut schemars::SchemaGenerator::default());
        let properties = schema.get("properties").and_then(JsonValue::as_object);
        properties
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect()
    }

    #[test]
    fn settings_types_read_what_the_factories_accept() {
        let read = |text: &str| TomlValue::Table(text.parse().unwrap());
        let egi = read("environment = \"demo\"").try_into::<EgiCheckinSettings>();
        assert!(matches!(
            egi,
            Ok(EgiCheckinSettings {
                environment: Some(EgiEnvironment::Demo)
            })
        ));
        let cilogon = read(
            "idp_hint = \"https://a.example/idp\"\nallowed_idps = [\"https://a.example/idp\"]",
        )
        .try_into::<CilogonSettings>();
        assert!(cilogon.is_ok(), "{cilogon:?}");
        let tapis = read("url = \"https://tacc.tapis.io\"").try_into::<TapisSettings>();
        assert_eq!(tapis.unwrap().url, "https://tacc.tapis.io");
        assert!(
            read("url = \"https://tacc.tapis.io\"\ntenant_id = \"tacc\"")
                .try_into::<TapisSettings>()
                .is_err()
        );
        assert_eq!(declared("cilogon"), ["allowed_idps", "idp_hint"]);
        assert_eq!(declared("egi_checkin"), ["environment"]);
        assert_eq!(declared("tapis"), ["url"]);
        assert!(declared("globus").is_empty());
    }

    #[test]
    fn settings_and_description_table() {
        // (kind, settings, Ok((issuer, authorize params)) or Err(keys with errors))
        type Want = Result<
            (&'static str, &'static [(&'static str, &'static str)]),
            &'static [&'static str],
        >;
        let cases: [(&str, &str, Want); 25] = [
            ("globus", "", Ok(("https://auth.globus.org", &[]))),
            ("orcid", "", Ok(("https://orcid.org", &[]))),
            ("orcid", "sandbox = true", Err(&["sandbox"])),
            ("elixir", "", Ok(("https://login.elixir-czech.org/oidc/", &[]))),
            (
                "lifescience",
                "",
                Ok(("https://login.aai.lifescience-ri.eu/oidc/", &[])),
            ),
            ("nfdi", "", Ok(("https://infraproxy.nfdi-aai.dfn.de", &[]))),
            ("einfracz", "", Ok(("https://login.e-infra.cz/oidc/", &[]))),
            ("cilogon", "", Ok(("https://cilogon.org", &[]))),
            ("egi_checkin", "", Ok(("https://aai.egi.eu/auth/realms/egi", &[]))),
            (
                "egi_checkin",
                "environment = \"production\"",
                Ok(("https://aai.egi.eu/auth/realms/egi", &[])),
            ),
            (
                "egi_checkin",
                "environment = \"demo\"",
                Ok(("https://aai-demo.egi.eu/auth/realms/egi", &[])),
            ),
            (
                "egi_checkin",
                "environment = \"development\"",
                Ok(("https://aai-dev.egi.eu/auth/realms/egi", &[])),
            ),
            ("egi_checkin", "environment = \"prod\"", Err(&["environment"])),
            ("globus", "url = \"https://auth.globus.org\"", Err(&["url"])),
            ("elixir", "environment = \"demo\"", Err(&["environment"])),
            (
                "cilogon",
                "idp_hint = \"https://idp.uni.example/idp/shibboleth\"",
                Ok((
                    "https://cilogon.org",
                    &[("idphint", "https://idp.uni.example/idp/shibboleth")],
                )),
            ),
            (
                "cilogon",
                "allowed_idps = [\"https://a.example/idp\", \"http://github.com/login/oauth/authorize\"]",
                Ok((
                    "https://cilogon.org",
                    &[(
                        "selected_idp",
                        "https://a.example/idp,http://github.com/login/oauth/authorize",
                    )],
                )),
            ),
            (
                "cilogon",
                "idp_hint = \"https://a.example/idp\"\nallowed_idps = [\"https://a.example/idp\", \"https://b.example/idp\"]",
                Ok((
                    "https://cilogon.org",
                    &[
                        ("idphint", "https://a.example/idp"),
                        ("selected_idp", "https://a.example/idp,https://b.example/idp"),
                    ],
                )),
            ),
            (
                "cilogon",
                "idp_hint = \"https://c.example/idp\"\nallowed_idps = [\"https://a.example/idp\"]",
                Err(&["idp_hint"]),
            ),
            ("cilogon", "allowed_idps = []", Err(&["allowed_idps"])),
            ("cilogon", "allowed_idps = \"https://a.example/idp\"", Err(&["allowed_idps"])),
            (
                "cilogon",
                "allowed_idps = [\"\"]\nidphint = \"x\"",
                Err(&["allowed_idps", "idphint"]),
            ),
            ("tapis", "", Err(&["url"])),
            ("tapis", "url = \"http://tacc.tapis.io\"", Err(&["url"])),
            (
                "tapis",
                "url = \"https://tacc.tapis.io\"\ntenant_id = \"tacc\"",
                Err(&["tenant_id"]),
            ),
        ];
        for (kind, text, want) in cases {
            match (build(kind, text), want) {
                (Ok(provider), Ok((issuer, params))) => {
                    let table: authnz_plugin::TomlTable = text.parse().unwrap();
                    let declared = declared(kind);
                    assert!(
                        table.keys().all(|key| declared.contains(key)),
                        "{kind} {text}"
                    );
                    let info = provider.describe();
                    assert_eq!(info.issuer.as_deref(), Some(issuer), "{kind} {text}");
                    assert!(info.oauth2.is_none(), "{kind}");
                    let found = provider.authorize_params(&LoginContext { idp: kind.into() });
                    let found: Vec<(&str, &str)> = found
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    assert_eq!(found, params, "{kind} {text}");
                }
                (Err(errors), Err(keys)) => {
                    let mut found: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
                    found.sort();
                    assert_eq!(found, keys, "{kind} {text}: {errors:?}");
                }
                (Ok(provider), Err(_)) => {
                    panic!("{kind} {text}: accepted as {:?}", provider.describe())
                }
                (Err(errors), Ok(_)) => panic!("{kind} {text}: rejected with {errors:?}"),
            }
        }
    }

    #[test]
    fn scopes_table() {
        let cases: [(&str, &[&str]); 4] = [
            ("globus", &["email", "profile"]),
            ("orcid", &[]),
            ("cilogon", &["email", "profile", "org.cilogon.userinfo"]),
            ("egi_checkin", &["email", "profile"]),
        ];
        for (kind, scopes) in cases {
            assert_eq!(build(kind, "").unwrap().describe().scopes, scopes, "{kind}");
        }
    }

    #[test]
    fn orcid_keys_by_the_id_names_by_the_name_and_never_trusts_an_email() {
        let provider = build("orcid", "").unwrap();
        assert_eq!(provider.describe().label, "ORCID");
        // (claims, username, display name)
        let cases = [
            (
                serde_json::json!({"given_name": "Sofia", "family_name": "Garcia", "name": "S. Garcia"}),
                "Sofia Garcia",
                Some("S. Garcia"),
            ),
            (
                serde_json::json!({"given_name": "Sofia", "family_name": " "}),
                "Sofia",
                Some("Sofia"),
            ),
            (
                serde_json::json!({"family_name": "Garcia"}),
                "Garcia",
                Some("Garcia"),
            ),
            (serde_json::json!({}), "0000-0002-1825-009X", None),
            (
                serde_json::json!({"email": "s@x.org", "email_verified": true, "given_name": ""}),
                "0000-0002-1825-009X",
                None,
            ),
        ];
        for (json, username, display_name) in cases {
            let mapped = provider
                .map_identity(&VerifiedClaims {
                    issuer: "https://orcid.org".into(),
                    subject: "0000-0002-1825-009X".into(),
                    claims: json.as_object().cloned().unwrap(),
                })
                .unwrap();
            assert_eq!(mapped.subject, "0000-0002-1825-009X", "{json}");
            assert_eq!(mapped.username.as_deref(), Some(username), "{json}");
            assert_eq!(mapped.display_name.as_deref(), display_name, "{json}");
            assert_eq!(
                (mapped.email, mapped.email_verified),
                (None, false),
                "{json}"
            );
        }
    }

    #[test]
    fn tapis_is_oauth2_with_userinfo_call() {
        for url in ["https://tacc.tapis.io", "https://tacc.tapis.io/"] {
            let info = build("tapis", &format!("url = \"{url}\""))
                .unwrap()
                .describe();
            assert_eq!(info.issuer.as_deref(), Some("https://tacc.tapis.io"));
            assert!(info.scopes.is_empty());
            assert_eq!(
                info.oauth2,
                Some(OAuth2Endpoints {
                    authorization_endpoint: "https://tacc.tapis.io/v3/oauth2/authorize".into(),
                    token_endpoint: "https://tacc.tapis.io/v3/oauth2/tokens".into(),
                    api_calls: vec![ApiCall {
                        claim: "userinfo".into(),
                        url: "https://tacc.tapis.io/v3/oauth2/userinfo".into(),
                        token_header: Some("X-Tapis-Token".into()),
                    }],
                    token_answer: Some(TokenAnswer {
                        access_token: "/result/access_token/access_token".into(),
                        expires_in: Some("/result/access_token/expires_in".into()),
                        refresh_token: Some("/result/refresh_token/refresh_token".into()),
                    }),
                })
            );
        }
    }

    #[test]
    fn mapping_table() {
        // (kind, settings, claims, Ok((subject, username, email_verified)) or Err(denied?))
        type Want = Result<(&'static str, Option<&'static str>, bool), bool>;
        let allowed = "allowed_idps = [\"https://a.example/idp\"]";
        let cases: [(&str, &str, serde_json::Value, Want); 15] = [
            (
                "globus",
                "",
                serde_json::json!({"preferred_username": "jdoe@globusid.org", "email": "j@x.org"}),
                Ok(("sub-1", Some("jdoe"), false)),
            ),
            (
                "globus",
                "",
                serde_json::json!({"preferred_username": "jdoe"}),
                Ok(("sub-1", Some("jdoe"), false)),
            ),
            (
                "globus",
                "",
                serde_json::json!({"email": "ann@x.org", "email_verified": true}),
                Ok(("sub-1", Some("ann"), true)),
            ),
            (
                "globus",
                "",
                serde_json::json!({"preferred_username": "@globusid.org"}),
                Ok(("sub-1", None, false)),
            ),
            (
                "elixir",
                "",
                serde_json::json!({"preferred_username": "ann", "email": "a@x.org"}),
                Ok(("sub-1", Some("ann"), false)),
            ),
            (
                "egi_checkin",
                "",
                serde_json::json!({"email": "a@x.org", "email_verified": true}),
                Ok(("sub-1", Some("a"), true)),
            ),
            (
                "cilogon",
                "",
                serde_json::json!({"idp": "https://z.example/idp", "email": "a@x.org"}),
                Ok(("sub-1", Some("a"), false)),
            ),
            (
                "cilogon",
                allowed,
                serde_json::json!({"idp": "https://a.example/idp", "email": "a@x.org"}),
                Ok(("sub-1", Some("a"), false)),
            ),
            (
                "cilogon",
                allowed,
                serde_json::json!({"idp": "https://z.example/idp"}),
                Err(true),
            ),
            ("cilogon", allowed, serde_json::json!({}), Err(true)),
            (
                "tapis",
                "url = \"https://tacc.tapis.io\"",
                serde_json::json!({"userinfo": {"username": "jdoe", "email": "j@x.org"}}),
                Ok(("jdoe", Some("jdoe"), false)),
            ),
            (
                "tapis",
                "url = \"https://tacc.tapis.io\"",
                serde_json::json!({"userinfo": {"result": {"username": "jdoe"}, "status": "success"}}),
                Ok(("jdoe", Some("jdoe"), false)),
            ),
            (
                "tapis",
                "url = \"https://tacc.tapis.io\"",
                serde_json::json!({"userinfo": {"username": ""}}),
                Err(false),
            ),
            (
                "tapis",
                "url = \"https://tacc.tapis.io\"",
                serde_json::json!({"userinfo": {"result": {"name": "x"}}}),
                Err(false),
            ),
            (
                "tapis",
                "url = \"https://tacc.tapis.io\"",
                serde_json::json!({"username": "from-an-id-token?"}),
                Err(false),
            ),
        ];
        for (kind, text, json, want) in cases {
            let provider = build(kind, text).unwrap();
            match (provider.map_identity(&claims(json.clone())), want) {
                (Ok(mapped), Ok((subject, username, verified))) => {
                    assert_eq!(mapped.subject, subject, "{kind} {json}");
                    assert_eq!(mapped.username.as_deref(), username, "{kind} {json}");
                    assert_eq!(mapped.email_verified, verified, "{kind} {json}");
                }
                (Err(MapError::Denied(_)), Err(true)) | (Err(MapError::Invalid(_)), Err(false)) => {
                }
                (result, want) => panic!("{kind} {json}: {result:?}, wanted {want:?}"),
            }
        }
    }
}
