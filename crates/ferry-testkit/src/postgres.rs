//! A throwaway PostgreSQL server with logical replication enabled.

use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running PostgreSQL server on 127.0.0.1, trusting local connections as `postgres`.
pub struct PostgresServer {
    port: u16,
    directory: PathBuf,
    bin: PathBuf,
}

pub(crate) fn is_root() -> bool {
    // The numeric uid of this process, from /proc (no libc needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

/// The directory of the newest installed PostgreSQL server binaries (or `FERRY_PGBIN`).
pub(crate) fn postgres_bin() -> io::Result<PathBuf> {
    if let Ok(bin) = std::env::var("FERRY_PGBIN") {
        return Ok(PathBuf::from(bin));
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| io::Error::new(io::ErrorKind::NotFound, "PostgreSQL server binaries not found under /usr/lib/postgresql: install them with `apt-get install -y postgresql`"))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.parse().ok()).map(|version| (version, entry.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no initdb under /usr/lib/postgresql/*/bin: install the server with `apt-get install -y postgresql`"))
}

/// A free loopback port (bound and released).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs a command as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Starts a watchdog that, once this process is gone, runs `stop` (a shell command) and removes
/// `directory`, however this process ended.
pub(crate) fn clean_up_after_exit(stop: &str, directory: &Path) -> io::Result<()> {
    let script = format!(
        "trap '' HUP INT TERM; while [ -d /proc/{parent} ]; do sleep 1; done; {stop}; rm -rf {directory}",
        parent = std::process::id(),
        directory = directory.display()
    );
    // Its own process group, and deaf to the usual signals: `timeout` or a CI runner signalling
    // the whole group of the process under test must not take the watchdog with it.
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(())
}

fn run(mut command: Command, what: &str) -> io::Result<()> {
    let output = command.stdin(Stdio::null()).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

impl PostgresServer {
    /// Starts a server with `wal_level = logical`.
    pub fn start() -> io::Result<PostgresServer> {
        Self::start_with(&[])
    }

    /// Starts a server with extra `postgresql.conf` settings (they win over the defaults).
    pub fn start_with(settings: &[(&str, &str)]) -> io::Result<PostgresServer> {
        crate::sweep::sweep_stale_servers();
        let bin = postgres_bin()?;
        let port = free_port()?;
        let directory =
            std::env::temp_dir().join(format!("ferry-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory)?;
        if is_root() {
            run(
                {
                    let mut command = Command::new("chown");
                    command.arg("postgres:postgres").arg(&directory);
                    command
                },
                "chown",
            )?;
        }
        let data = directory.join("data");
        let mut initdb = as_postgres(&bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]);
        run(initdb, "initdb")?;
        let mut config = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nwal_level = logical\nmax_replication_slots = 80\n\
             max_wal_senders = 80\nmax_connections = 200\nfsync = off\nfull_page_writes = off\nshared_buffers = 128MB\n\
             log_min_messages = warning\nsynchronous_commit = on\n",
            directory.display()
        );
        for (name, value) in settings {
            config.push_str(&format!("{name} = {value}\n"));
        }
        let conf_path = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)?;
        existing.push_str(&config);
        std::fs::write(&conf_path, existing)?;
        let mut start = as_postgres(&bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(directory.join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        run(start, "pg_ctl start")?;
        let server = PostgresServer {
            port,
            directory,
            bin,
        };
        server.spawn_watchdog()?;
        Ok(server)
    }

    /// Stops the server and removes its directory once this process is gone.
    fn spawn_watchdog(&self) -> io::Result<()> {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.directory.join("data");
        let stop = if is_root() {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate -w stop",
                pg_ctl.display(),
                data.display()
            )
        } else {
            format!(
                "{} -D {} -m immediate -w stop",
                pg_ctl.display(),
                data.display()
            )
        };
        clean_up_after_exit(&format!("{stop} >/dev/null 2>&1"), &self.directory)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` as the superuser `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database and returns its URL.
    pub async fn create_database(&self, name: &str) -> io::Result<String> {
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .map_err(io::Error::other)?;
        Ok(self.url(name))
    }

    /// A plain client connection to `database`.
    pub async fn connect(&self, database: &str) -> io::Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.url(database), tokio_postgres::NoTls)
                .await
                .map_err(io::Error::other)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// The directory of the server binaries this server runs from (pgbench, psql, pg_dump
    /// are usually on PATH instead).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Restarts the server with a `fast` (clients disconnected, clean) or `immediate` (crash-like,
    /// recovery on start) shutdown.
    pub fn restart(&self, mode: &str) -> io::Result<()> {
        let mut restart = as_postgres(&self.bin.join("pg_ctl"));
        restart
            .arg("-D")
            .arg(self.directory.join("data"))
            .args(["-m", mode, "-w", "-t", "60", "-l"])
            .arg(self.directory.join("server.log"))
            .arg("restart");
        run(restart, "pg_ctl restart")
    }

    /// Stops the server now (fast shutdown); the directory goes with the watchdog.
    pub fn stop(&self) {
        let mut stop = as_postgres(&self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.directory.join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        let _ = run(stop, "pg_ctl stop");
    }
}
