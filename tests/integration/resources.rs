//! Bounded resources: a flood of `/login` answers 429 past a per-client cap, the pending-login
//! table keeps at most `max_pending_logins` (dropping the oldest), pending logins expire and are
//! swept, and expired sessions are swept.

use authnz_tests::{Browser, Reserved};

fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(address))
        .build()
        .unwrap()
}

/// Starts a login; its status and (when 200) the state in its authorize URL.
async fn start(client: &reqwest::Client, url: &str) -> (u16, Option<String>) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let body: serde_json::Value = response.json().await.unwrap();
    let authorize = url::Url::parse(body["redirect_uri"].as_str().unwrap()).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(name, _)| name == "state")
        .map(|(_, value)| value.into_owned());
    (status, state)
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
    // Two clients of two networks: one network may take only its share of the table.
    let (first, second) = (client_from([127, 0, 0, 1]), client_from([127, 1, 0, 2]));
    let mut states = Vec::new();
    for _ in 0..5 {
        let (status, state) = start(&first, &login).await;
        assert_eq!(status, 200);
        states.push(state.unwrap());
    }
    let refused = first.get(&login).send().await.unwrap();
    assert_eq!(refused.status(), 429, "per-client cap");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "too_many_logins");
    for _ in 0..5 {
        let (status, state) = start(&second, &login).await;
        assert_eq!(
            status, 200,
            "another client still gets in, past the table's size"
        );
        states.push(state.unwrap());
    }
    assert_eq!(
        server.count("pending_logins").await,
        8,
        "the table holds max_pending_logins; refused logins store nothing"
    );
    let store = &server.app.store;
    for (i, state) in states.iter().enumerate().take(2) {
        assert!(
            store.take_pending_login(state).await.unwrap().is_none(),
            "login {i}, the oldest, was dropped"
        );
    }
    assert!(
        store
            .take_pending_login(&states[9])
            .await
            .unwrap()
            .is_some(),
        "the newest is kept"
    );
    assert_eq!(server.count("pending_logins").await, 7);

    // Ten minutes on: the old pending logins are swept and logins work again.
    server.app.clock.advance(601);
    let swept = store
        .sweep_pending_logins(server.app.clock.now() - 600)
        .await
        .unwrap();
    assert_eq!(swept, 7);
    assert_eq!(server.count("pending_logins").await, 0);
    assert_eq!(start(&first, &login).await.0, 200);
}

#[tokio::test]
async fn expired_sessions_are_swept() {
    let server = Reserved::new()
        .start_server("session_ttl_minutes = 1\n", "[idps.dev]\nkind = \"dev\"\n")
        .await;
    let browser = Browser::new();
    crate::login_flow::dev_login(&browser, &server.url, "dev", "sid", None).await;
    assert_eq!(server.count("sessions").await, 1);
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
            .await
            .unwrap(),
        1
    );
    assert_eq!(server.count("sessions").await, 0);
    assert_eq!(server.count("identity_sessions").await, 0);
}

/// Behind a trusted reverse proxy each person has their own cap; a client that is not a trusted
/// proxy cannot pick its address with `X-Forwarded-For`.
#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_cap() {
    // Not the dev IdP: it serves no client off this machine.
    let idp = authnz_tests::hostile::HostileIdp::start().await;
    let server = Reserved::new()
        .start_server(
            "max_logins_per_client = 2\ntrusted_proxies = [\"127.0.0.1\"]\n",
            &idp.idp_toml("corp"),
        )
        .await;
    let login = format!("{}/authnz/corp/login", server.url);
    let (proxy, direct) = (client_from([127, 0, 0, 1]), client_from([127, 0, 0, 2]));
    let status = |client: &reqwest::Client, forwarded: &'static str| {
        let request = client.get(&login).header("X-Forwarded-For", forwarded);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Through the proxy: one person's cap...
    assert_eq!(status(&proxy, "198.51.100.7").await, 200);
    assert_eq!(status(&proxy, "198.51.100.7").await, 200);
    assert_eq!(status(&proxy, "198.51.100.7").await, 429, "their cap");
    // ...is not another's,
    assert_eq!(status(&proxy, "198.51.100.8").await, 200, "someone else");
    // and writing another address into the header in front of the proxy's entry changes
    // nothing: the rightmost untrusted address counts.
    assert_eq!(status(&proxy, "203.0.113.1, 198.51.100.7").await, 429);
    // A client that is not a trusted proxy: its header is ignored, its own address counts.
    assert_eq!(status(&direct, "203.0.113.2").await, 200);
    assert_eq!(status(&direct, "203.0.113.3").await, 200);
    assert_eq!(
        status(&direct, "203.0.113.4").await,
        429,
        "one cap, whatever it claims"
    );
}

/// A flood from many /64s of one network takes at most its share of the pending-login table:
/// another person's sign-in, started before it, survives.
#[tokio::test]
async fn a_flood_from_one_network_does_not_push_out_other_sign_ins() {
    let idp = authnz_tests::hostile::HostileIdp::start().await;
    let server = Reserved::new()
        .start_server(
            "max_pending_logins = 64\nmax_logins_per_client = 2\ntrusted_proxies = [\"127.0.0.1\"]\n",
            &idp.idp_toml("corp"),
        )
        .await;
    let login = format!("{}/authnz/corp/login", server.url);
    let proxy = client_from([127, 0, 0, 1]);
    let from = |client: &str| {
        let request = proxy.get(&login).header("X-Forwarded-For", client);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let state = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|body| {
                    authnz_tests::query_param(body["redirect_uri"].as_str()?, "state")
                });
            (status, state)
        }
    };
    let (status, victim) = from("203.0.113.9").await;
    assert_eq!(status, 200);
    // 400 sign-ins from 400 /64s of one /32 (eight /48s of it).
    let mut admitted = 0;
    for n in 0..400 {
        if from(&format!("2001:db8:{:x}:{n:x}::1", n % 8)).await.0 == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 16, "a quarter of the table for one /32");
    assert!(
        server
            .app
            .store
            .take_pending_login(&victim.unwrap())
            .await
            .unwrap()
            .is_some(),
        "the flood pushed out another person's sign-in"
    );
}
