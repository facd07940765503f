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
