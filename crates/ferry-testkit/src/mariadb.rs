//! A throwaway MariaDB server with a row-based binary log (full row images), as ferry needs of a
//! MySQL-family source.

use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres::{clean_up_after_exit, free_port, is_root};

/// A running MariaDB server on 127.0.0.1; `root` has no password.
pub struct MariaDbServer {
    port: u16,
    directory: PathBuf,
    server_id: u32,
    process: u32,
}

impl MariaDbServer {
    /// Starts a server with server id 1.
    pub fn start() -> io::Result<MariaDbServer> {
        Self::start_with(1, &[])
    }

    /// Starts a server with this server id and extra `mariadbd` options (`--name=value`).
    pub fn start_with(server_id: u32, options: &[&str]) -> io::Result<MariaDbServer> {
        crate::sweep::sweep_stale_servers();
        let port = free_port()?;
        let directory =
            std::env::temp_dir().join(format!("ferry-mariadb-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory)?;
        // Its own temporary directory: a starting MariaDB deletes every `#sql*` file in its
        // tmpdir, which would pull temporary tables from under servers sharing /tmp.
        let scratch = directory.join("tmp");
        std::fs::create_dir_all(&scratch)?;
        let user = if is_root() { "mysql" } else { "" };
        if is_root() {
            let status = Command::new("chown")
                .arg("-R")
                .arg("mysql:mysql")
                .arg(&directory)
                .status()?;
            if !status.success() {
                return Err(io::Error::other("chown of the MariaDB directory failed"));
            }
        }
        let data = directory.join("data");
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", scratch.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ]);
        if !user.is_empty() {
            install.arg(format!("--user={user}"));
        }
        let output = install.stdin(Stdio::null()).output().map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("mariadb-install-db: {error} (install it with `apt-get install -y mariadb-server`)"),
            )
        })?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let socket = directory.join("mysqld.sock");
        let mut server = Command::new("mariadbd");
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!(
                "--pid-file={}",
                directory.join("mysqld.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                directory.join("error.log").display()
            ))
            .arg(format!("--log-bin={}", data.join("binlog").display()))
            .arg(format!("--server-id={server_id}"))
            .arg(format!("--tmpdir={}", scratch.display()))
            .args([
                "--bind-address=127.0.0.1",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
                "--skip-name-resolve",
                "--innodb-flush-log-at-trx-commit=2",
                "--sync-binlog=0",
                "--innodb-doublewrite=0",
                "--innodb-buffer-pool-size=256M",
                "--max-connections=300",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                "--local-infile=1",
            ])
            .args(options);
        if !user.is_empty() {
            server.arg(format!("--user={user}"));
        }
        let child = server
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = MariaDbServer {
            port,
            directory,
            server_id,
            process: child.id(),
        };
        server.spawn_watchdog()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "MariaDB did not start within 60 s: {}",
                    std::fs::read_to_string(server.directory.join("error.log")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// Kills the server once this process is gone and removes its directory.
    fn spawn_watchdog(&self) -> io::Result<()> {
        clean_up_after_exit(
            &format!("kill -9 {} 2>/dev/null; sleep 0.2", self.process),
            &self.directory,
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// The server's Unix socket (for the `mariadb` command-line tools).
    pub fn socket(&self) -> PathBuf {
        self.directory.join("mysqld.sock")
    }

    /// A URL for `database` as `root`.
    pub fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL through the `mariadb` client as root (no database selected unless the SQL says).
    pub fn execute(&self, sql: &str) -> io::Result<String> {
        let output = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "--batch", "--skip-column-names", "-e", sql])
            .stdin(Stdio::null())
            .output()?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(io::Error::other(format!(
                "mariadb: {}",
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, name: &str) -> io::Result<String> {
        self.execute(&format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
        ))?;
        Ok(self.url(name))
    }
}
