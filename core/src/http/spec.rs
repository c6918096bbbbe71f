//! The OpenAPI service: every route group, in the order of the spec.

use poem_openapi::OpenApiService;

use super::{
    account, admin, admin_page, backchannel, conflict_pages, forward, key_pages, keys, login,
    pages, sessions,
};

/// Every route group, in the order of the spec.
pub type Apis = (
    pages::PagesApi,
    login::LoginApi,
    admin::AdminApi,
    admin_page::AdminPageApi,
    account::AccountApi,
    sessions::SessionsApi,
    keys::KeysApi,
    key_pages::KeyPagesApi,
    conflict_pages::ConflictPagesApi,
    backchannel::BackchannelApi,
    forward::ForwardApi,
);
/// The OpenAPI service of authnz (also what `authnz openapi` prints).
pub fn openapi_service(public_url: &str) -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            pages::PagesApi,
            login::LoginApi,
            admin::AdminApi,
            admin_page::AdminPageApi,
            account::AccountApi,
            sessions::SessionsApi,
            keys::KeysApi,
            key_pages::KeyPagesApi,
            conflict_pages::ConflictPagesApi,
            backchannel::BackchannelApi,
            forward::ForwardApi,
        ),
        "authnz",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Sign in with your organization's identity provider. A script starts a login with \
             `GET /authnz/{idp}/login` (it answers `{\"redirect_uri\": ...}`), sends the person's \
             browser to that URL, and the IdP returns to `/authnz/{idp}/callback`, which starts a \
             session (cookie `authnz_session`).",
    )
    .server(public_url.trim_end_matches('/'))
}
