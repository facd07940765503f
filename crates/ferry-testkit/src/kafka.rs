//! A throwaway Kafka-protocol broker (tansu, in-memory storage) on a free loopback port.
//!
//! The binary comes from `FERRY_TANSU`, `tansu` on the PATH, `/usr/local/bin/tansu` or
//! `~/.cache/ferry-tools/tansu` (scripts/install-prerequisites.sh puts it there). It runs in its
//! own empty directory because tansu reads a `.env` file from its working directory. Topics are
//! not created automatically: tests create them.

use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres::{clean_up_after_exit, free_port};

pub struct KafkaServer {
    port: u16,
    directory: PathBuf,
    process: u32,
}

/// Where the tansu binary is.
pub fn tansu_binary() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FERRY_TANSU") {
        return Ok(PathBuf::from(path));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|directory| directory.join("tansu"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push(PathBuf::from("/usr/local/bin/tansu"));
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/ferry-tools/tansu"));
    }
    candidates.into_iter().find(|path| path.is_file()).ok_or_else(|| {
        io::Error::other("tansu (a Kafka-protocol broker) is not installed: run scripts/install-prerequisites.sh, or set FERRY_TANSU")
    })
}

impl KafkaServer {
    pub fn start() -> io::Result<KafkaServer> {
        let binary = tansu_binary()?;
        let port = free_port()?;
        let directory =
            std::env::temp_dir().join(format!("ferry-kafka-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory)?;
        let listener = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(directory.join("tansu.log"))?;
        let child = Command::new(binary)
            .current_dir(&directory)
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env("RUST_LOG", "warn")
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let server = KafkaServer {
            port,
            directory,
            process: child.id(),
        };
        clean_up_after_exit(
            &format!("kill -9 {} 2>/dev/null; sleep 0.2", server.process),
            &server.directory,
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "tansu did not start within 30 s: {}",
                    std::fs::read_to_string(server.directory.join("tansu.log")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kafka://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port)
    }
}

impl Drop for KafkaServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.process.to_string()])
            .status();
    }
}
