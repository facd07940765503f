//! TLS to both engines, as managed databases require: servers started here with a certificate
//! from a CA this test makes (openssl), ferry connecting with `sslmode=verify-full` (PostgreSQL,
//! the replication connection included) and `ssl-mode=VERIFY_IDENTITY` (MariaDB, the binary log
//! connection included). The servers say the sessions are encrypted; a certificate from another
//! CA, or TLS demanded of a server without it, is refused with a clear error.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_testkit::{MariaDbServer, PostgresServer};

use crate::common::{servers, stop};

struct Certificates {
    directory: PathBuf,
}

impl Certificates {
    /// A CA, a server certificate for 127.0.0.1 and localhost signed by it, and another CA.
    fn make(name: &str) -> Certificates {
        let directory =
            std::env::temp_dir().join(format!("ferry-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let openssl = |arguments: &[&str]| {
            let output = Command::new("openssl")
                .args(arguments)
                .current_dir(&directory)
                .output()
                .expect("openssl runs");
            assert!(
                output.status.success(),
                "openssl {arguments:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        for ca in ["ca", "other"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=ferry test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        std::fs::write(
            directory.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Certificates { directory }
    }

    fn path(&self, file: &str) -> String {
        self.directory.join(file).display().to_string()
    }

    /// Copies of the server's files that `user` owns (servers refuse keys others can read).
    fn for_user(&self, user: &str) -> (String, String) {
        let directory = self.directory.join(user);
        std::fs::create_dir_all(&directory).unwrap();
        for file in ["server.pem", "server.key", "ca.pem"] {
            std::fs::copy(self.directory.join(file), directory.join(file)).unwrap();
        }
        set_mode(&directory.join("server.key"), 0o600);
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:{user}")])
                .arg(&directory)
                .status()
                .unwrap();
            assert!(status.success());
        }
        (
            directory.join("server.pem").display().to_string(),
            directory.join("server.key").display().to_string(),
        )
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

fn ferry(command: &str, source: &str, target: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg(command)
        .args(["--source", source, "--target", target])
        .args(extra)
        .env("FERRY_LOG", "info")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_mariadb_over_verified_tls() {
    let certificates = Certificates::make("servers");
    let (certificate, key) = certificates.for_user("postgres");
    let postgres = PostgresServer::start_with(&[
        ("ssl", "on"),
        ("ssl_cert_file", &format!("'{certificate}'")),
        ("ssl_key_file", &format!("'{key}'")),
    ])
    .expect("a PostgreSQL server with TLS");
    let plain_source = postgres.create_database("tls_source").await.unwrap();
    let client = postgres.connect("tls_source").await.unwrap();
    client
        .batch_execute("CREATE TABLE public.t (id int PRIMARY KEY, v text); INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 500) g;")
        .await
        .unwrap();
    let ca = certificates.path("ca.pem");
    let source = format!("{plain_source}?sslmode=verify-full&sslrootcert={ca}");
    let target = servers()
        .target
        .create_database("tls_target")
        .await
        .unwrap();

    // The right CA: check passes, and a run copies and streams over TLS.
    let check = ferry("check", &source, &target, &["--name", "tls"]);
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let log = std::env::temp_dir().join(format!("ferry-tls-run-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "run", "--source", &source, "--target", &target, "--name", "tls",
        ])
        .env("FERRY_LOG", "info")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let target_client = servers().target.connect("tls_target").await.unwrap();
    client
        .batch_execute("INSERT INTO public.t VALUES (1000, 'streamed')")
        .await
        .unwrap();
    wait_for_row(
        "the streamed row",
        &target_client,
        "SELECT 1 FROM public.t WHERE id = 1000",
        &log,
    )
    .await;
    // The walsender streams once the copy is done (the row above may have come with the copy;
    // the session that created the slot is a walsender too, gone after the copy).
    wait_for_row(
        "the replication connection",
        &client,
        "SELECT 1 FROM pg_stat_replication WHERE state = 'streaming'",
        &log,
    )
    .await;
    let encrypted = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl),
                    (SELECT bool_and(s2.ssl) FROM pg_stat_replication r JOIN pg_stat_ssl s2 ON s2.pid = r.pid WHERE r.state = 'streaming')
             FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
             WHERE a.application_name LIKE 'ferry%'",
            &[],
        )
        .await
        .unwrap();
    assert!(encrypted.get::<_, i64>(0) >= 1, "ferry's sessions use TLS");
    assert_eq!(encrypted.get::<_, i64>(1), 0, "no plain session of ferry's");
    assert_eq!(
        encrypted.get::<_, Option<bool>>(2),
        Some(true),
        "the replication connection uses TLS"
    );
    assert_eq!(stop(&mut run), Some(0));

    // Another CA's certificate is refused, naming the certificate; TLS demanded of a server
    // without it is refused too.
    let wrong = format!(
        "{plain_source}?sslmode=verify-full&sslrootcert={}",
        certificates.path("other.pem")
    );
    let check = ferry("check", &wrong, &target, &["--name", "tls"]);
    let text = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        !check.status.success() && text.to_lowercase().contains("certificate"),
        "{text}"
    );
    let demanding = format!("{target}?sslmode=require");
    let check = ferry("check", &source, &demanding, &["--name", "tls"]);
    let text = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(!check.status.success() && text.contains("target"), "{text}");

    // MariaDB with TLS, verified by name (127.0.0.1 is in the certificate), into PostgreSQL.
    let (certificate, key) = certificates.for_user("mysql");
    let mariadb = MariaDbServer::start_with(
        7,
        &[
            &format!("--ssl-cert={certificate}"),
            &format!("--ssl-key={key}"),
            &format!("--ssl-ca={ca}"),
        ],
    )
    .expect("a MariaDB server with TLS");
    let plain_mysql = mariadb.create_database("tls_my").unwrap();
    mariadb
        .execute("USE tls_my; CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_300;")
        .unwrap();
    let mysql_source = format!("{plain_mysql}?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}");
    let mysql_target = servers().target.create_database("tls_my").await.unwrap();
    let copy = ferry("copy", &mysql_source, &mysql_target, &["--name", "tls_my"]);
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let count: i64 = servers()
        .target
        .connect("tls_my")
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM tls_my.t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 300);
    let wrong = format!(
        "{plain_mysql}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        certificates.path("other.pem")
    );
    let check = ferry("check", &wrong, &mysql_target, &[]);
    assert!(
        !check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// Waits up to a minute for `sql` to answer a row; shows the run's log otherwise.
async fn wait_for_row(what: &str, client: &tokio_postgres::Client, sql: &str, log: &Path) {
    ferry_testkit::wait_until(what, std::time::Duration::from_secs(60), || async {
        client.query_opt(sql, &[]).await.ok()?
    })
    .await
    .unwrap_or_else(|error| {
        panic!(
            "{error}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    });
}
