//! A throwaway PostgreSQL cluster for the tests: initialised in a temporary directory on the
//! first use in a test binary, reachable only on a unix socket there, and stopped (its files
//! removed) by a watchdog once the test process is gone. Each test makes its own database.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use authnz::config::{DbTls, Migrate, PostgresConfig};

pub struct Cluster {
    /// The unix-socket directory (the `host` of a connection string).
    pub socket_dir: PathBuf,
    bin: PathBuf,
    data: PathBuf,
    /// The port (it names the socket file too): 5432 unless the settings say `port = N`.
    pub port: u16,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The newest PostgreSQL's binaries (`/usr/lib/postgresql/<version>/bin`, Debian's layout).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("PostgreSQL is missing: scripts/test installs Debian's postgresql (apt-get install postgresql)")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

/// `program args…`, as the `postgres` user when running as root (PostgreSQL refuses root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The cluster of this test binary, started on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(Cluster::start)
}

impl Cluster {
    /// A cluster of its own (for a test that stops it); stopped when the test process ends.
    pub fn start() -> Self {
        Self::start_with("", &[])
    }

    /// [`Cluster::start`] with more settings for `postgresql.conf`, and files (name, bytes)
    /// put in its data directory for the server alone (mode 0600), e.g. a TLS key.
    pub fn start_with(settings: &str, files: &[(&str, &[u8])]) -> Self {
        let bin = bin_dir();
        let root = tempfile::Builder::new()
            .prefix("authnz-pg-")
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        let data = root.join("data");
        let socket_dir = root.join("sock");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&socket_dir).unwrap();
        if is_root() {
            run(
                {
                    let mut chown = Command::new("chown");
                    chown.args(["-R", "postgres:postgres"]).arg(&root);
                    chown
                },
                "chown",
            );
        }
        let mut initdb = as_postgres(&bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        run(initdb, "initdb");
        // Settings in the cluster's own file, so that a restart keeps them.
        {
            use std::io::Write;
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .expect("postgresql.conf");
            writeln!(
                conf,
                "listen_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 400\n{settings}",
                socket_dir.display()
            )
            .expect("postgresql.conf written");
        }
        for (name, bytes) in files {
            use std::os::unix::fs::PermissionsExt;
            let path = data.join(name);
            std::fs::write(&path, bytes).expect("a cluster file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if is_root() {
                let mut chown = Command::new("chown");
                chown.arg("postgres:postgres").arg(&path);
                run(chown, "chown");
            }
        }
        let mut start = as_postgres(&bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("log"))
            .args(["-w", "start"]);
        run(start, "pg_ctl start");
        let port = settings
            .lines()
            .find_map(|line| line.strip_prefix("port = ")?.trim().parse().ok())
            .unwrap_or(5432);
        let cluster = Cluster {
            socket_dir: socket_dir.clone(),
            bin: bin.clone(),
            data: data.clone(),
            port,
        };
        // The watchdog: once this process is gone, stop the cluster and remove its files. It
        // outlives this process on purpose, so it is never waited for.
        let stop = if is_root() {
            format!("runuser -u postgres -- {}", bin.join("pg_ctl").display())
        } else {
            bin.join("pg_ctl").display().to_string()
        };
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {root}",
                pid = std::process::id(),
                data = data.display(),
                root = root.display(),
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the cluster's watchdog starts");
        cluster
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let mut stop = as_postgres(&self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"]);
        run(stop, "pg_ctl stop");
    }

    /// Starts it again after [`Cluster::stop`].
    pub fn restart(&self) {
        let mut start = as_postgres(&self.bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("log"))
            .args(["-w", "start"]);
        run(start, "pg_ctl start");
    }
    /// The data directory (where [`Cluster::start_with`] puts its files).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A connection string to database `name` on the socket.
    pub fn url(&self, name: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={name}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// Makes a new, empty database; returns its name.
    pub fn create_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let mut psql = Command::new(self.bin.join("psql"));
        psql.arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", "postgres", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"));
        run(psql, "CREATE DATABASE");
        name
    }

    /// `[server.postgres]` for database `name`, without TLS (a unix socket).
    pub fn config(&self, name: &str) -> PostgresConfig {
        PostgresConfig {
            connection: self.url(name).parse().expect("a connection string"),
            tls: DbTls::Disable,
            ca_file: None,
            pool_size: 8,
            migrate: Migrate::Auto,
        }
    }

    /// The `[server.postgres]` table of an `idps.toml` for database `name`.
    pub fn toml(&self, name: &str) -> String {
        format!(
            "[server.postgres]\nurl = \"{}\"\ntls = \"disable\"\n",
            self.url(name)
        )
    }

    /// Runs SQL on database `name` with psql; returns what it printed (unaligned, no headers).
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", name, "-At", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            output.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}
