//! The throwaway PostgreSQL clusters of `rvm_fleet_tests::postgres` (needs Debian's
//! PostgreSQL 15: `apt-get install postgresql`; `.ci/run` installs it).

use std::time::Duration;

use rvm_fleet_tests::postgres::PgCluster;
use tokio_postgres::NoTls;

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

#[tokio::test]
async fn postgres_cluster_accepts_the_fleet_role_survives_a_restart_and_a_crash() {
    let mut pg = PgCluster::start().unwrap();
    let client = connect(&pg.url()).await.unwrap();
    client
        .batch_execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (1), (2)")
        .await
        .unwrap();
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "fleet");

    pg.restart().unwrap();
    assert!(
        client.query_one("SELECT 1", &[]).await.is_err(),
        "a connection made before the restart is gone"
    );
    let client = connect(&pg.url()).await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the data survives a clean restart");

    client.batch_execute("INSERT INTO kept VALUES (3)").await.unwrap();
    pg.crash().unwrap();
    assert!(!pg.is_running());
    assert!(
        connect(&pg.url()).await.is_err(),
        "nothing listens while it is down"
    );
    pg.start_again().unwrap();
    let client = connect(&pg.url()).await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3, "a committed row survives a crash (WAL recovery)");
}

#[tokio::test]
async fn postgres_tcp_logins_need_the_password() {
    let pg = PgCluster::start().unwrap();
    let wrong = pg.url().replace(pg.password(), "not-the-password");
    let e = connect(&wrong).await.unwrap_err();
    let msg = format!("{:?}", e);
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(connect(&pg.url_without_password()).await.is_err());
    assert!(connect(&pg.url()).await.is_ok());
}

#[test]
fn postgres_clusters_side_by_side_do_not_collide_and_vanish_when_dropped() {
    let handles: Vec<_> = (0..3).map(|_| std::thread::spawn(PgCluster::start)).collect();
    let clusters: Vec<PgCluster> = handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
    let mut ports: Vec<u16> = clusters.iter().map(|c| c.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "each cluster has its own port");
    for c in &clusters {
        assert_eq!(c.psql("SELECT current_database()").unwrap(), "fleet");
    }
    let url = clusters[0].url_for("extra");
    assert_eq!(clusters[0].create_database("extra").unwrap(), url);
    let log = clusters[0].log_path();
    let port = clusters[0].port();
    drop(clusters);
    assert!(!log.exists(), "the cluster's directory is deleted");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server stopped"
    );
}

#[test]
fn postgres_cluster_is_dropped_when_its_test_panics() {
    let dir = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = dir.clone();
    let r = std::thread::spawn(move || {
        let pg = PgCluster::start().unwrap();
        *seen.lock().unwrap() = Some((pg.log_path(), pg.port()));
        panic!("a failing test");
    })
    .join();
    assert!(r.is_err());
    let (log, port) = dir.lock().unwrap().clone().unwrap();
    assert!(!log.exists(), "deleted while unwinding");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn postgres_clusters_left_by_a_killed_test_process_are_swept() {
    let pg = PgCluster::start().unwrap();
    let port = pg.port();
    let dir = pg.log_path().parent().unwrap().to_path_buf();
    // as if its test process had been killed: a process id that cannot be running
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let orphan = dir.with_file_name(format!("{pid_max}-0-orphan"));
    std::fs::rename(&dir, &orphan).unwrap();
    std::mem::forget(pg);
    let _next = PgCluster::start().unwrap();
    assert!(!orphan.exists(), "the orphan's directory is deleted");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the orphan's server was stopped"
    );
}
