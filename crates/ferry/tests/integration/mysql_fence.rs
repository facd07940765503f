//! The MySQL/MariaDB write fence on a real server of its own (`read_only` covers a whole
//! server): it stops an application's writes, including a transaction open across it, lets
//! ferry's account write, belongs to one migration (another cannot lift it), comes back after
//! it was lost, restores what `read_only` was, and refuses accounts that cannot fence.

use ferry_connectors::mysql::{MysqlConfig, MysqlControl};
use ferry_core::connector::Switchover;
use ferry_testkit::MariaDbServer;
use mysql_async::prelude::Queryable;

use crate::mysql::ferry;

async fn app(server: &MariaDbServer) -> mysql_async::Conn {
    let url = format!("mysql://app:app@127.0.0.1:{}/fenced", server.port());
    mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
        .await
        .unwrap()
}

/// Whether the application's account can insert now (on a new session).
async fn app_writes(server: &MariaDbServer, id: i64) -> bool {
    let Ok(mut conn) = mysql_async::Conn::new(
        mysql_async::Opts::from_url(&format!(
            "mysql://app:app@127.0.0.1:{}/fenced",
            server.port()
        ))
        .unwrap(),
    )
    .await
    else {
        return false;
    };
    conn.exec_drop("INSERT INTO t VALUES (?)", (id,))
        .await
        .is_ok()
}

fn read_only(server: &MariaDbServer) -> String {
    server
        .execute("SELECT @@GLOBAL.read_only")
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_holds_belongs_to_its_migration_and_comes_back() {
    let server = MariaDbServer::start_with(21, &[]).expect("start MariaDB");
    server
        .execute(
            "CREATE DATABASE fenced; CREATE TABLE fenced.t (id BIGINT PRIMARY KEY);
             CREATE USER 'app'@'%' IDENTIFIED BY 'app'; GRANT SELECT, INSERT ON fenced.* TO 'app'@'%';
             CREATE USER 'weak'@'%'; GRANT SELECT, INSERT, REPLICATION SLAVE ON *.* TO 'weak'@'%';",
        )
        .unwrap();
    let control = MysqlControl::new(MysqlConfig::parse(&server.url("fenced"), None).unwrap());
    control.check_switchover().await.unwrap();
    assert!(app_writes(&server, 1).await);

    // A transaction open across the fence cannot commit after it.
    let mut open = app(&server).await;
    open.query_drop("START TRANSACTION").await.unwrap();
    open.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    let position = control.fence("first").await.unwrap();
    assert!(position.to_string().contains('/'), "{position}");
    assert!(
        open.query_drop("COMMIT").await.is_err(),
        "a transaction open across the fence committed"
    );
    assert!(
        !app_writes(&server, 3).await,
        "the application writes through the fence"
    );
    // ferry's account (root here) keeps writing.
    server.execute("INSERT INTO fenced.t VALUES (4)").unwrap();
    assert_eq!(control.fenced_by().await.unwrap().as_deref(), Some("first"));

    // Another migration can neither fence nor lift it.
    let other = control.fence("second").await.unwrap_err();
    assert_eq!(other.code(), "cutover.fenced_by_other", "{other}");
    control.unfence("second").await.unwrap();
    assert!(
        !app_writes(&server, 5).await,
        "another migration lifted the fence"
    );

    // Lost (as after a restart), it comes back.
    server.execute("SET GLOBAL read_only = OFF").unwrap();
    assert!(control
        .reassert_fence("second")
        .await
        .is_ok_and(|done| !done));
    assert!(control.reassert_fence("first").await.unwrap());
    assert!(
        !app_writes(&server, 6).await,
        "the lost fence did not come back"
    );

    // Lifted, the server is as it was.
    control.unfence("first").await.unwrap();
    assert_eq!(read_only(&server), "0");
    assert!(app_writes(&server, 7).await);
    assert_eq!(control.fenced_by().await.unwrap(), None);
    let rows = server
        .execute("SELECT GROUP_CONCAT(id ORDER BY id) FROM fenced.t")
        .unwrap();
    assert_eq!(rows.trim(), "1,4,7");

    // A server that was read-only before stays so.
    server.execute("SET GLOBAL read_only = ON").unwrap();
    control.fence("first").await.unwrap();
    control.unfence("first").await.unwrap();
    assert_eq!(read_only(&server), "1");
    server.execute("SET GLOBAL read_only = OFF").unwrap();

    // An account that cannot fence is told what to grant.
    let weak = MysqlControl::new(
        MysqlConfig::parse(
            &format!("mysql://weak@127.0.0.1:{}/fenced", server.port()),
            None,
        )
        .unwrap(),
    );
    let refused = weak.check_switchover().await.unwrap_err();
    assert_eq!(refused.code(), "cutover.privilege", "{refused}");
    assert!(refused.to_string().contains("READ_ONLY ADMIN"), "{refused}");

    // `check` says so before the migration starts.
    let checked = ferry(
        "check",
        &server.url("fenced"),
        &server.url("fenced_copy"),
        &[],
    )
    .output()
    .unwrap();
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(
        report.contains("warning[cutover.not_ready]") && report.contains("same MySQL server"),
        "{report}"
    );

    // Two databases of one server cannot be switched between: one fence would cover both.
    let same = ferry(
        "cutover",
        &server.url("fenced"),
        &server.url("fenced_copy"),
        &["--force"],
    )
    .output()
    .unwrap();
    assert!(!same.status.success());
    let stderr = String::from_utf8_lossy(&same.stderr);
    assert!(stderr.contains("cutover.same_server"), "{stderr}");
}

/// A MySQL target made read-only under ferry (whose account cannot write through it) pauses the
/// stream instead of ending it; writable again, ferry goes on by itself and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_mysql_target_pauses_the_stream_until_writable() {
    let name = "my_paused";
    let target = MariaDbServer::start_with(22, &[]).expect("start MariaDB");
    target
        .execute(&format!(
            "CREATE USER 'ferry'@'%'; GRANT ALL ON `{name}`.* TO 'ferry'@'%'; GRANT ALL ON `_ferry`.* TO 'ferry'@'%';"
        ))
        .unwrap();
    let source = crate::mysql::mariadb()
        .source
        .create_database(name)
        .unwrap();
    crate::mysql::sql(
        &crate::mysql::mariadb().source,
        name,
        "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t SELECT seq, seq FROM seq_1_to_500;",
    );
    let target_url = format!("mysql://ferry@127.0.0.1:{}/{name}", target.port());
    let mut run = crate::mysql::spawn_run(name, &source, &target_url);
    let count = |server: &MariaDbServer| {
        server
            .execute(&format!(
                "SELECT COUNT(*), COALESCE(SUM(v), 0) FROM `{name}`.t"
            ))
            .map(|text| text.trim().to_string())
            .unwrap_or_default()
    };
    let source_count = || {
        crate::mysql::sql(
            &crate::mysql::mariadb().source,
            name,
            "SELECT COUNT(*), COALESCE(SUM(v), 0) FROM t",
        )
        .trim()
        .to_string()
    };
    ferry_testkit::wait_until("the copy", std::time::Duration::from_secs(60), || async {
        (count(&target) == source_count()).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", crate::mysql::log_tail(name)));
    target.execute("SET GLOBAL read_only = ON").unwrap();
    crate::mysql::sql(
        &crate::mysql::mariadb().source,
        name,
        "UPDATE t SET v = v + 1 WHERE id <= 100; INSERT INTO t VALUES (1000, 1);",
    );
    ferry_testkit::wait_until(
        "ferry to pause",
        std::time::Duration::from_secs(60),
        || async {
            crate::mysql::log_tail(name)
                .contains("paused")
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", crate::mysql::log_tail(name)));
    assert!(
        run.try_wait().unwrap().is_none(),
        "ferry ended instead of pausing\n{}",
        crate::mysql::log_tail(name)
    );
    target.execute("SET GLOBAL read_only = OFF").unwrap();
    ferry_testkit::wait_until(
        "ferry to go on",
        std::time::Duration::from_secs(60),
        || async { (count(&target) == source_count()).then_some(()) },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", crate::mysql::log_tail(name)));
    assert_eq!(
        crate::common::stop(&mut run),
        Some(0),
        "{}",
        crate::mysql::log_tail(name)
    );
}

/// An applier commits a batch only while its process's migration lock connection still holds
/// the lock: once that connection is killed and another session took the lock, the next batch
/// fails with `migration.lock_lost` and nothing of it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_applier_refuses_to_commit_once_its_migration_lock_is_held_elsewhere() {
    use ferry_connectors::mysql::MysqlSink;
    use ferry_core::connector::{SchemaTarget, Sink, StateStore};

    let name = "my_applier_lock";
    let servers = crate::mysql::mariadb();
    let url = servers.target.create_database(name).unwrap();
    let sink = MysqlSink::new(MysqlConfig::parse(&url, None).unwrap());
    let _lock = sink.lock_migration(name).await.unwrap();
    sink.create_tables(&ferry_core::schema::Catalog::default())
        .await
        .unwrap();
    let mut applier = sink.open_applier(name).await.unwrap();
    let at = |offset: u64| {
        ferry_core::Position::Mysql(ferry_core::BinlogPosition {
            file: 1,
            offset,
            ..Default::default()
        })
    };
    let batch = ferry_core::change::Batch::default();
    applier.apply(&batch, at(100), None).await.unwrap();

    let lock = format!("CONCAT('ferry.migration.', SHA1('{name}'))");
    let mut admin = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
        .await
        .unwrap();
    let holder: Option<u64> = admin
        .query_first(format!("SELECT IS_USED_LOCK({lock})"))
        .await
        .unwrap()
        .flatten();
    admin
        .query_drop(format!(
            "KILL CONNECTION {}",
            holder.expect("the lock is held")
        ))
        .await
        .unwrap();
    let taken: Option<i64> = admin
        .query_first(format!("SELECT GET_LOCK({lock}, 10)"))
        .await
        .unwrap()
        .flatten();
    assert_eq!(taken, Some(1), "another session takes the lock");

    let refused = applier.apply(&batch, at(200), None).await.unwrap_err();
    assert_eq!(refused.code(), "migration.lock_lost", "{refused}");
    let stored: Option<String> = admin
        .query_first(format!(
            "SELECT position FROM `_ferry`.`streams` WHERE migration = '{name}'"
        ))
        .await
        .unwrap();
    assert_eq!(
        stored.as_deref(),
        Some(at(100).to_storage().as_str()),
        "the refused batch's checkpoint was not kept"
    );
}
