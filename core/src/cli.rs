//! The `authnz` command line: serve, check a config, print the OpenAPI spec.
//!
//! It lives in the library so that the tests run the very same code as the binary.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config;
use crate::http::openapi_service;
use crate::registry::Registry;
use crate::state::App;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "authnz",
    version,
    about = "Sign in with your organization's identity provider"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the login server.
    Serve {
        /// The config file.
        #[arg(long, default_value = "idps.toml")]
        config: PathBuf,
    },
    /// Validate a config file without serving; exits non-zero on any problem.
    Check {
        #[arg(long, default_value = "idps.toml")]
        config: PathBuf,
        /// Also run discovery and fetch the JWKS of every IdP, and report what was found.
        #[arg(long)]
        online: bool,
    },
    /// Print the OpenAPI spec (JSON).
    Openapi,
    /// Print the JSON Schema of idps.toml (for editors: taplo, VS Code Even Better TOML).
    Schema,
    /// Convert Galaxy's oidc_backends_config.xml into an idps.toml (printed).
    ImportGalaxy {
        /// The XML file.
        file: PathBuf,
    },
    /// Write a new secret key (for `secret_key_file`) to PATH, mode 0600; an existing file is
    /// never overwritten. Replicas that share a database must share this file.
    Keygen {
        /// Where to write it.
        path: PathBuf,
    },
    /// Apply the database migrations that the PostgreSQL database of --config lacks (for
    /// `migrate = "check"`; with "auto", every replica applies them at start).
    Migrate {
        #[arg(long, default_value = "idps.toml")]
        config: PathBuf,
    },
    /// Copy an embedded (sled) database into the PostgreSQL database that --config names:
    /// users, identities with their sealed tokens, sessions and API keys. Run it with the
    /// server stopped; running it again copies nothing twice.
    CopyStore {
        /// The sled directory (`database` of the old config).
        #[arg(long)]
        from: PathBuf,
        /// The config naming the PostgreSQL database and the same secret key file.
        #[arg(long, default_value = "idps.toml")]
        config: PathBuf,
    },
    /// List the built-in provider kinds and, with --config, each configured provider with its
    /// origin (built-in or library path) and versions.
    Providers {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Check { config, online } => match config::load(&config, &Registry::builtin()) {
            Ok(config) => {
                for idp in &config.unavailable {
                    println!(
                        "{}: warning: idps.{} is unavailable: {}",
                        config.source.display(),
                        idp.name,
                        idp.reason
                    );
                }
                let unavailable = match config.unavailable.len() {
                    0 => String::new(),
                    n => format!(", {n} unavailable"),
                };
                println!(
                    "{}: ok ({} identity provider{}{unavailable})",
                    config.source.display(),
                    config.idps.len(),
                    if config.idps.len() == 1 { "" } else { "s" }
                );
                if online {
                    check_online(&config)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} problem(s) found", errors.0.len());
                ExitCode::FAILURE
            }
        },
        Command::Providers { config } => providers(config),
        Command::Migrate { config } => on_postgres(&config, |_, postgres| async move {
            let applied = crate::store::PgStore::migrate(&postgres).await?;
            Ok(format!(
                "{applied} migration(s) applied; the schema is up to date"
            ))
        }),
        Command::CopyStore { from, config } => {
            on_postgres(&config, |config, postgres| async move {
                copy_store(&from, &config, &postgres).await
            })
        }
        Command::Keygen { path } => match crate::crypto::write_new_key(&path) {
            Ok(_) => {
                println!(
                    "wrote a new secret key to {} (mode 0600): name it in secret_key_file, keep it secret, and give every replica the same file",
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        },
        Command::ImportGalaxy { file } => {
            let xml = match std::fs::read_to_string(&file) {
                Ok(xml) => xml,
                Err(err) => {
                    eprintln!("{}: cannot read: {err}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            match crate::galaxy::import(&xml) {
                Ok(toml) => {
                    print!("{toml}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("{}: {err}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Schema => {
            println!("{}", crate::schema::json_schema());
            ExitCode::SUCCESS
        }
        Command::Openapi => {
            println!("{}", openapi_service("http://127.0.0.1:8080").spec());
            ExitCode::SUCCESS
        }
    }
}

fn serve(path: PathBuf) -> ExitCode {
    // RUST_LOG filters (default `info`); AUTHNZ_LOG_FORMAT=json writes one JSON object a line.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,poem=warn"));
    if std::env::var("AUTHNZ_LOG_FORMAT").is_ok_and(|format| format == "json") {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let config = match config::load(&path, &Registry::builtin()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "authnz: {} problem(s) in {}; not starting",
                errors.0.len(),
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    for idp in &config.unavailable {
        tracing::warn!(idp = %idp.name, reason = %idp.reason, "identity provider unavailable; the others are served");
    }
    for idp in config.idps.iter().filter(|idp| idp.is_dev()) {
        tracing::warn!(
            idp = %idp.name,
            "THE DEV IDP IS ENABLED: anyone can sign in as anyone. Remove [idps.{}] before real use.",
            idp.name
        );
    }
    if config.server.trusted_proxies.is_empty()
        && config.server.listen.ip().is_loopback()
        && config.server.public_url.scheme() == "https"
    {
        tracing::warn!(
            "authnz listens on loopback behind an https public_url, so a reverse proxy forwards to it: \
             name it in [server] trusted_proxies, or every person shares the proxy's per-client login cap"
        );
    }
    let listen = config.server.listen;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("authnz: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let app = App::new(config).await?;
        let listener = std::net::TcpListener::bind(listen).map_err(|err| {
            crate::state::StartError::Listen {
                addr: listen.to_string(),
                reason: err.to_string(),
            }
        })?;
        println!("authnz: open {} in a browser", app.server.public_url);
        crate::server::serve(app, listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("authnz: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `task` on the `[server.postgres]` of the config at `path`, printing what it says.
fn on_postgres<F, Fut>(path: &std::path::Path, task: F) -> ExitCode
where
    F: FnOnce(config::Config, config::PostgresConfig) -> Fut,
    Fut: std::future::Future<Output = Result<String, crate::state::StartError>>,
{
    let (config, postgres) = match config::load(path, &Registry::builtin()) {
        Ok(config) => match config.server.postgres.clone() {
            Some(postgres) => (config, postgres),
            None => {
                eprintln!(
                    "authnz: {} has no [server.postgres]: name the PostgreSQL database there",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        },
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("authnz: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task(config, postgres)) {
        Ok(said) => {
            println!("authnz: {said}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("authnz: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `copy-store`: both databases must be the key file's (the tokens stay sealed as they are).
async fn copy_store(
    from: &std::path::Path,
    config: &config::Config,
    postgres: &config::PostgresConfig,
) -> Result<String, crate::state::StartError> {
    use crate::store::Store;
    let server = &config.server;
    if !from.join("db").exists() && !from.join("conf").exists() {
        return Err(crate::store::StoreError::Backend(format!(
            "{} is not a sled database directory",
            from.display()
        ))
        .into());
    }
    let vault = crate::crypto::TokenVault::load_shared(
        &server.secret_key_file,
        &server.previous_secret_key_files,
    )?;
    let sled: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(crate::store::SledStore::open(from, 16 << 20)?);
    crate::state::check_key_canary(&*sled, &vault, &server.secret_key_file).await?;
    let target = crate::store::PgStore::connect(postgres).await?;
    crate::state::check_key_canary(&target, &vault, &server.secret_key_file).await?;
    let report = target.copy_from(&sled.dump().await?).await?;
    Ok(format!(
        "copied {} into PostgreSQL: {report}",
        from.display()
    ))
}

fn providers(config: Option<PathBuf>) -> ExitCode {
    let registry = Registry::builtin();
    println!(
        "authnz {} (provider SDK {})",
        env!("CARGO_PKG_VERSION"),
        authnz_plugin::abi::SDK_VERSION_C.trim_end_matches('\0')
    );
    println!("built-in kinds: {}", registry.kinds().join(", "));
    let Some(path) = config else {
        return ExitCode::SUCCESS;
    };
    match config::load(&path, &registry) {
        Ok(config) => {
            println!("{}:", config.source.display());
            for idp in &config.idps {
                println!("  {:<16} kind {:<12} {}", idp.name, idp.kind, idp.origin);
            }
            for idp in &config.unavailable {
                println!(
                    "  {:<16} kind {:<12} unavailable: {}",
                    idp.name, idp.kind, idp.reason
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// `check --online`: discovery and JWKS of every IdP (the dev IdP needs the server running).
fn check_online(config: &config::Config) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("authnz: cannot start the runtime");
        return ExitCode::FAILURE;
    };
    let Ok(http) = crate::protocol::IdpHttp::new(crate::protocol::HttpLimits::default()) else {
        eprintln!("authnz: cannot build the HTTP client");
        return ExitCode::FAILURE;
    };
    let mut failed = 0;
    runtime.block_on(async {
        for idp_config in config.idps.iter().filter(|idp| !idp.is_dev()) {
            let name = idp_config.name.clone();
            let idp = match crate::protocol::Idp::new(idp_config.clone(), config.server.public_url.as_str(), http.clone()) {
                Ok(idp) => idp,
                Err(reason) => {
                    println!("idps.{name}: failed: {reason}");
                    failed += 1;
                    continue;
                }
            };
            match idp.discovered().await {
                Ok(found) => {
                    let (_, jwks) = found.jwks_snapshot();
                    let extra = found.metadata.additional_metadata();
                    println!(
                        "idps.{name}: ok: issuer {}, {} signing key(s), algorithms {}, token endpoint {}, userinfo {}, revocation {}, end-session {}",
                        found.metadata.issuer().as_str(),
                        jwks,
                        found.algs.join(" "),
                        found.metadata.token_endpoint().map(|u| u.as_str().to_string()).unwrap_or_else(|| "none".into()),
                        if found.metadata.userinfo_endpoint().is_some() { "yes" } else { "no" },
                        if extra.revocation_endpoint.is_some() { "yes" } else { "no" },
                        if extra.end_session_endpoint.is_some() { "yes" } else { "no" },
                    );
                    let mut problems = idp.algorithm_problems(&found);
                    problems.extend(idp.client_auth_problems(&found));
                    problems.extend(idp.par_problems(&found));
                    problems.extend(idp.dpop_problems(&found));
                    for problem in &problems {
                        println!("idps.{name}: failed: {problem}");
                    }
                    if !problems.is_empty() {
                        failed += 1;
                    }
                }
                Err(_) => {
                    println!("idps.{name}: failed: {}", idp.last_error().unwrap_or_else(|| "discovery failed".into()));
                    failed += 1;
                }
            }
        }
    });
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{failed} identity provider(s) failed the online check");
        ExitCode::FAILURE
    }
}
