//! State written by an earlier version of ferry on the target (before chunks stored their
//! snapshot position) is still read by `check` and `status`, and `run` upgrades it in place.

use crate::common::{stop, Pair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_of_an_earlier_version_is_read_and_upgraded() {
    let pair = Pair::new("upgrade").await;
    pair.source
        .batch_execute("CREATE TABLE public.t (id int PRIMARY KEY); INSERT INTO public.t SELECT generate_series(1, 10);")
        .await
        .unwrap();
    // State as an earlier version left it: a copy, then the column it did not have.
    let copy = pair.ferry("copy", &["--name", "upgrade"]).output().unwrap();
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    pair.target
        .batch_execute("ALTER TABLE _ferry.chunk DROP COLUMN snapshot_position")
        .await
        .unwrap();
    let check = pair
        .ferry("check", &["--name", "upgrade"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(!text.contains("check_failed"), "{text}");
    let status = pair
        .ferry("status", &["--name", "upgrade"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut run = pair.spawn_run(&["--name", "upgrade", "--restart"], None);
    pair.wait_streaming(1).await;
    pair.wait_equal(&[("public.t", "id")]).await;
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
}
