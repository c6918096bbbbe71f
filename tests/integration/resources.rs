//! Bounded resources: a flood of `/login` answers 429 past a per-client and a global cap, the
//! pending logins it made expire and are swept, and expired sessions are swept.

use authnz_tests::{Browser, Reserved};

fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(address))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_login_flood_is_capped_and_swept() {
    let server = Reserved::new()
        .start_server(
            "max_logins_per_client = 5\nmax_pending_logins = 8\n",
            "[idps.dev]\nkind = \"dev\"\n",
        )
        .await;
    let login = format!("{}/authnz/dev/login", server.url);
    let (first, second) = (client_from([127, 0, 0, 1]), client_from([127, 0, 0, 2]));
    let status = |client: reqwest::Client, url: String| async move {
        client.get(url).send().await.unwrap().status().as_u16()
    };
    for _ in 0..5 {
        assert_eq!(status(first.clone(), login.clone()).await, 200);
    }
    let refused = first.get(&login).send().await.unwrap();
    assert_eq!(refused.status(), 429, "per-client cap");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "too_many_logins");
    for _ in 0..3 {
        assert_eq!(
            status(second.clone(), login.clone()).await,
            200,
            "another client still gets in"
        );
    }
    assert_eq!(
        status(second.clone(), login.clone()).await,
        429,
        "global cap"
    );
    assert_eq!(
        server.count("pending_logins"),
        8,
        "refused logins store nothing"
    );

    // Ten minutes on: the old pending logins are swept and logins work again.
    server.app.clock.advance(601);
    let swept = server
        .app
        .store
        .sweep_pending_logins(server.app.clock.now() - 600)
        .unwrap();
    assert_eq!(swept, 8);
    assert_eq!(server.count("pending_logins"), 0);
    assert_eq!(status(first.clone(), login.clone()).await, 200);
}

#[tokio::test]
async fn expired_sessions_are_swept() {
    let server = Reserved::new()
        .start_server("session_ttl_minutes = 1\n", "[idps.dev]\nkind = \"dev\"\n")
        .await;
    let browser = Browser::new();
    crate::login_flow::dev_login(&browser, &server.url, "dev", "sid", None).await;
    assert_eq!(server.count("sessions"), 1);
    server.app.clock.advance(61);
    assert_eq!(
        browser.me(&server.url).await.0,
        401,
        "an expired session is refused before any sweep"
    );
    assert_eq!(
        server
            .app
            .store
            .sweep_expired(server.app.clock.now())
            .unwrap(),
        1
    );
    assert_eq!(server.count("sessions"), 0);
    assert_eq!(server.count("identity_sessions"), 0);
    assert_eq!(server.count("user_sessions"), 0);
}
