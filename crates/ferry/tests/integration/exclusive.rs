//! One process at a time per migration: a second command with the same name must neither
//! rewrite the running migration's publication nor forget its tables, and no command may shrink
//! a migration's table set without being told to.

use std::process::Stdio;
use std::time::Duration;

use ferry_testkit::wait_until;

use crate::common::{stop, Pair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_command_cannot_cut_tables_out_of_a_running_migration() {
    let pair = Pair::new("exclusive").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.orders (id bigint PRIMARY KEY, note text);
             INSERT INTO public.orders SELECT g, 'o' || g FROM generate_series(1, 500) g;
             CREATE TABLE public.extra (id bigint PRIMARY KEY, note text);
             INSERT INTO public.extra SELECT g, 'e' || g FROM generate_series(1, 50) g;",
        )
        .await
        .unwrap();
    // The default name, as a user who does not give one.
    let mut run = pair.spawn_run(&["--tables", "public.orders"], None);
    pair.wait_streaming(1).await;

    let second = pair
        .ferry("copy", &["--tables", "public.extra"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr).into_owned();
    assert_eq!(second.status.code(), Some(3), "{said}");
    assert!(said.contains("another ferry process"), "{said}");

    // The running migration still streams its table.
    pair.source
        .batch_execute("UPDATE public.orders SET note = 'after' WHERE id <= 10; DELETE FROM public.orders WHERE id = 11;")
        .await
        .unwrap();
    pair.wait_equal(&[("public.orders", "id")]).await;
    let published: i64 = pair
        .source
        .query_one(
            "SELECT count(*) FROM pg_publication_tables WHERE tablename = 'orders'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, 1);
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());

    // Stopped, a narrower selection under the same name is refused too, and says what to do.
    let narrower = pair
        .ferry("copy", &["--tables", "public.extra"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&narrower.stderr).into_owned();
    assert_eq!(narrower.status.code(), Some(3), "{said}");
    assert!(
        said.contains("public.orders") && said.contains("--name"),
        "{said}"
    );

    // A wider one adds the table and keeps streaming the first.
    let mut run = pair.spawn_run(&["--tables", "public.orders,public.extra"], None);
    pair.wait_streaming(2).await;
    pair.source
        .batch_execute("UPDATE public.orders SET note = 'later' WHERE id = 1; UPDATE public.extra SET note = 'later' WHERE id = 1;")
        .await
        .unwrap();
    pair.wait_equal(&[("public.orders", "id"), ("public.extra", "id")])
        .await;
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
}

/// Once the session holding a migration's lock ends (a killed backend) and a second process
/// starts, exactly one of the two goes on: the other finds the lock held by someone else at its
/// next batch, or at its start, and stops with `migration.busy`. Every change arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_migration_lock_is_lost_only_one_process_goes_on() {
    let pair = Pair::new("lost_lock").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.items (id bigint PRIMARY KEY, note text);
             INSERT INTO public.items SELECT g, 'i' || g FROM generate_series(1, 200) g;",
        )
        .await
        .unwrap();
    let arguments = ["--tables", "public.items", "--name", "lost_lock"];
    let mut first = pair.spawn_run(&arguments, None);
    pair.wait_streaming(1).await;
    let ended = crate::common::end_advisory_lock_holders(&pair.target).await;
    assert_eq!(ended, 1, "one session held the migration lock");
    let mut second = pair.spawn_run(&arguments, None);
    pair.source
        .batch_execute("UPDATE public.items SET note = 'after' WHERE id <= 50; DELETE FROM public.items WHERE id > 190;")
        .await
        .unwrap();
    pair.wait_equal(&[("public.items", "id")]).await;
    let stopped = wait_until("one process to stop", Duration::from_secs(120), || {
        let found = match (
            first.try_wait().ok().flatten(),
            second.try_wait().ok().flatten(),
        ) {
            (Some(status), None) => Some((status, 0)),
            (None, Some(status)) => Some((status, 1)),
            _ => None,
        };
        async move { found }
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    // Refused by the lock: the source's slot, which one process at a time may read, only
    // delays the other one (retried).
    assert_eq!(stopped.0.code(), Some(3), "{}", pair.log());
    assert!(pair.log().contains("migration.busy"), "{}", pair.log());
    pair.source
        .batch_execute("UPDATE public.items SET note = 'later' WHERE id = 1")
        .await
        .unwrap();
    pair.wait_equal(&[("public.items", "id")]).await;
    let survivor = if stopped.1 == 0 {
        &mut second
    } else {
        &mut first
    };
    assert_eq!(stop(survivor), Some(0), "{}", pair.log());
}
