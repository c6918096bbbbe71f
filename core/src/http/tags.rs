//! The tags that group the operations of the spec.

use poem_openapi::Tags;

#[derive(Tags)]
pub(crate) enum ApiTags {
    /// Logging in and out through an identity provider.
    Authnz,
    /// Identities, API keys and tokens of the logged-in user.
    Account,
    /// Server status and configuration reload, for the admins named in the config.
    Admin,
    /// Who is signed in, for the reverse proxy in front of an application; the keys that
    /// sign the identity assertions it may verify.
    Apps,
}
