//! The layer's overhead: a point select through sluice-db against the same
//! query straight through sqlx, on the same pool. Needs `DATABASE_URL`
//! (`cargo xtask bench db` provisions one); SQLite runs in memory.

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_db::{Database, params};
use sluice_pool::{ConnectionConfig, SqlPool};

const ROWS: i64 = 1000;

async fn setup(url: &str, name: &str) -> Database {
    let mut config = ConnectionConfig::from_url(name, url).expect("valid url");
    config.pool_size = 2;
    config.min_idle = 2;
    let db = Database::new(SqlPool::open(&config).await.expect("database reachable"));
    db.execute("DROP TABLE IF EXISTS bench_users", ())
        .await
        .expect("drop");
    db.execute(
        "CREATE TABLE bench_users (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
        (),
    )
    .await
    .expect("create");
    for id in 1..=ROWS {
        db.execute(
            "INSERT INTO bench_users VALUES ($1, $2)",
            params![id, format!("user {id}")],
        )
        .await
        .expect("insert");
    }
    db
}

fn point_select(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL: run `cargo xtask bench db`");
    let pg = rt.block_on(setup(&url, "bench_pg"));
    let lite = rt.block_on(setup("sqlite::memory:", "bench_sqlite"));
    let pg_pool = pg.pool().as_postgres().expect("postgres").clone();
    let lite_pool = lite.pool().as_sqlite().expect("sqlite").clone();
    const SQL: &str = "SELECT id, name FROM bench_users WHERE id = $1";
    const SQL_LITE: &str = "SELECT id, name FROM bench_users WHERE id = ?1";

    let mut group = c.benchmark_group("point_select");
    let mut id = 0i64;
    let mut next = move || {
        id = id % ROWS + 1;
        id
    };
    group.bench_function("postgres/sqlx", |b| {
        b.iter(|| {
            rt.block_on(async {
                let row: (i64, String) = sqlx::query_as(SQL)
                    .bind(next())
                    .fetch_one(&pg_pool)
                    .await
                    .expect("row");
                black_box(row)
            })
        })
    });
    group.bench_function("postgres/sluice_db", |b| {
        b.iter(|| {
            rt.block_on(async {
                let row: (i64, String) = pg.query_one(SQL, params![next()]).await.expect("row");
                black_box(row)
            })
        })
    });
    group.bench_function("sqlite/sqlx", |b| {
        b.iter(|| {
            rt.block_on(async {
                let row: (i64, String) = sqlx::query_as(SQL_LITE)
                    .bind(next())
                    .fetch_one(&lite_pool)
                    .await
                    .expect("row");
                black_box(row)
            })
        })
    });
    group.bench_function("sqlite/sluice_db", |b| {
        b.iter(|| {
            rt.block_on(async {
                let row: (i64, String) = lite.query_one(SQL, params![next()]).await.expect("row");
                black_box(row)
            })
        })
    });
    group.finish();
}

criterion_group!(benches, point_select);
criterion_main!(benches);
