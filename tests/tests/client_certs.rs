//! Client certificates (`SSL_CERT` / `SSL_KEY`) against a real PostgreSQL
//! that authenticates by certificate and a real Redis that requires one.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use sluice_pool::{ConnectionConfig, Kind, RedisPool, SqlPool, TlsConfig, TlsMode};
use sluice_tests::certs::throwaway;
use sluice_tests::provision::{TempPostgres, TempRedis};
use sluice_tests::services;

fn tls(ca: &std::path::Path, client: Option<(PathBuf, PathBuf)>) -> TlsConfig {
    TlsConfig {
        mode: TlsMode::VerifyFull,
        ca_file: Some(ca.to_path_buf()),
        client_cert: client.as_ref().map(|c| c.0.clone()),
        client_key: client.map(|c| c.1),
    }
}

#[tokio::test]
async fn postgres_authenticates_the_pool_by_its_client_certificate() {
    let certs = throwaway(&services::scratch_dir("pg_mtls")).unwrap();
    let other = throwaway(&services::scratch_dir("pg_mtls_other")).unwrap();
    let c = certs.clone();
    let pg = tokio::task::spawn_blocking(move || {
        let mut pg = TempPostgres::start().unwrap();
        pg.require_client_certs(&c.cert, &c.key, &c.ca).unwrap();
        pg
    })
    .await
    .unwrap();
    let config = |client: Option<(PathBuf, PathBuf)>| {
        let mut c = ConnectionConfig::new("mtls", Kind::Postgres);
        c.port = Some(pg.port());
        c.username = Some("postgres".into());
        c.database = Some("postgres".into());
        c.tls = tls(&certs.ca, client);
        c.retry_attempts = 1;
        c
    };
    // With the certificate: in, over TLS, as the certificate's user.
    let pool = SqlPool::open(&config(Some((
        certs.client_cert.clone(),
        certs.client_key.clone(),
    ))))
    .await
    .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let sluice_pool::LentConnection::Postgres(c) = conn.lent_mut() else {
        unreachable!("a PostgreSQL pool")
    };
    let (ssl, user): (bool, String) = sqlx::query_as(
        "SELECT ssl, current_user::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .fetch_one(&mut **c)
    .await
    .unwrap();
    assert!(ssl);
    assert_eq!(user, "postgres");
    drop(conn);
    pool.close().await;
    // Without one, or with one from another CA: refused.
    assert!(SqlPool::open(&config(None)).await.is_err());
    assert!(
        SqlPool::open(&config(Some((other.client_cert, other.client_key))))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn redis_accepts_the_pool_only_with_its_client_certificate() {
    let certs = throwaway(&services::scratch_dir("redis_mtls")).unwrap();
    let other = throwaway(&services::scratch_dir("redis_mtls_other")).unwrap();
    let c = certs.clone();
    let redis =
        tokio::task::spawn_blocking(move || TempRedis::start_mutual_tls(&c.cert, &c.key, &c.ca))
            .await
            .unwrap()
            .unwrap();
    let config = |client: Option<(PathBuf, PathBuf)>| {
        let mut c = ConnectionConfig::from_url("mtls_cache", &redis.url()).unwrap();
        c.tls = tls(&certs.ca, client);
        c.retry_attempts = 1;
        c
    };
    let pool = RedisPool::open(&config(Some((
        certs.client_cert.clone(),
        certs.client_key.clone(),
    ))))
    .await
    .unwrap();
    pool.ping().await.unwrap();
    pool.close().await;
    assert!(RedisPool::open(&config(None)).await.is_err());
    assert!(
        RedisPool::open(&config(Some((
            other.client_cert.clone(),
            other.client_key.clone()
        ))))
        .await
        .is_err()
    );
    // A key that does not belong to the certificate is a configuration
    // error, found before connecting.
    let err = RedisPool::open(&config(Some((certs.client_cert.clone(), other.client_key))))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ssl_key"), "{err}");
}
