//! sluice-db's Redis cache against a real Redis, including one that dies.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_db::{Cache, CacheError, Database, params};
use sluice_metrics::{Backend, Registry};
use sluice_pool::{ConnectionConfig, RedisPool, SqlPool};
use sluice_tests::provision::TempRedis;
use sluice_tests::services;

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
struct Profile {
    id: i64,
    bio: String,
}

async fn cache_on(url: &str, name: &str, registry: &Registry) -> Cache {
    let mut config = ConnectionConfig::from_url(name, url).unwrap();
    config.pool_size = 2;
    config.retry_delay = Duration::from_millis(100);
    Cache::with_registry(
        RedisPool::open(&config).await.unwrap(),
        services::redis_prefix(name),
        registry,
    )
}

#[tokio::test]
async fn get_set_delete_and_get_many_under_a_prefix() {
    let registry = Registry::new();
    let cache = cache_on(&services::redis_url(), "cache_roundtrip", &registry).await;
    let ada = Profile {
        id: 1,
        bio: "math".into(),
    };
    assert_eq!(cache.get::<Profile>("user:1").await.unwrap(), None);
    cache
        .set("user:1", &ada, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        cache.get::<Profile>("user:1").await.unwrap(),
        Some(ada.clone())
    );
    let many: Vec<Option<Profile>> = cache.get_many(&["user:1", "user:2"]).await.unwrap();
    assert_eq!(many, vec![Some(ada), None]);
    assert!(cache.delete("user:1").await.unwrap());
    assert!(!cache.delete("user:1").await.unwrap());
    // A value of another shape reads as a miss, not an error.
    cache
        .set("user:3", "not a profile", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get::<Profile>("user:3").await.unwrap(), None);
    // The stored text, checked against the type: as stored when it
    // decodes, a miss when it does not.
    let is_profile = |raw: &[u8]| serde_json::from_slice::<Profile>(raw).is_ok();
    assert_eq!(
        cache.get_text_checked("user:3", is_profile).await.unwrap(),
        None
    );
    let grace = Profile {
        id: 2,
        bio: "ships".into(),
    };
    cache
        .set("user:2", &grace, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        cache
            .get_text_checked("user:2", is_profile)
            .await
            .unwrap()
            .as_deref(),
        Some(serde_json::to_vec(&grace).unwrap().as_slice())
    );

    let snapshot = registry.snapshot();
    let c = snapshot
        .connection(Backend::Redis, "cache_roundtrip")
        .unwrap();
    assert_eq!((c.hits, c.misses), (3, 4));
}

#[tokio::test]
async fn values_expire_after_their_ttl() {
    let cache = cache_on(&services::redis_url(), "cache_ttl", &Registry::new()).await;
    cache.set("k", &1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(cache.get::<i32>("k").await.unwrap(), Some(1));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(cache.get::<i32>("k").await.unwrap(), None);
}

/// The read-through pattern the server uses: the cache first, the
/// database when the cache misses or fails.
async fn read_bio(db: &Database, cache: &Cache, id: i64) -> String {
    if let Ok(Some(bio)) = cache.get::<String>(&format!("bio:{id}")).await {
        return bio;
    }
    let (bio,): (String,) = db
        .query_one("SELECT bio FROM profiles WHERE user_id = $1", params![id])
        .await
        .unwrap();
    let _ = cache
        .set(&format!("bio:{id}"), &bio, Duration::from_secs(60))
        .await;
    bio
}

#[tokio::test]
async fn a_dead_redis_is_reported_fast_and_reads_fall_back_to_the_database() {
    let mut redis = tokio::task::spawn_blocking(TempRedis::start)
        .await
        .unwrap()
        .unwrap();
    let cache = cache_on(&redis.url(), "cache_dies", &Registry::new()).await;
    let db = Database::new(
        SqlPool::open(&ConnectionConfig::from_url("cache_db", "sqlite::memory:").unwrap())
            .await
            .unwrap(),
    );
    db.migrate().await.unwrap();
    db.execute(
        "INSERT INTO users (id, name, email) VALUES (1, 'Ada', 'a@x.org')",
        (),
    )
    .await
    .unwrap();
    db.execute("INSERT INTO profiles (user_id, bio) VALUES (1, 'math')", ())
        .await
        .unwrap();
    assert_eq!(read_bio(&db, &cache, 1).await, "math");

    redis.stop();
    for _ in 0..5 {
        let started = Instant::now();
        let err = cache.get::<String>("bio:1").await.unwrap_err();
        assert!(
            matches!(err, CacheError::Unavailable(_) | CacheError::CircuitOpen),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(read_bio(&db, &cache, 1).await, "math");
    }

    // A burst of failures opens the cache's breaker: Redis is no longer
    // tried, so requests stop paying the timeout.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let cache = cache.clone();
        burst.spawn(async move { cache.get::<String>("bio:1").await.is_err() });
    }
    while let Some(failed) = burst.join_next().await {
        assert!(failed.unwrap());
    }
    let err = cache.get::<String>("bio:1").await.unwrap_err();
    assert!(matches!(err, CacheError::CircuitOpen), "{err:?}");
    assert_eq!(read_bio(&db, &cache, 1).await, "math");

    // Redis returns (empty: persistence is off); the cache is used again.
    redis.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache
        .set("bio:1", "from cache", Duration::from_secs(60))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the cache did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read_bio(&db, &cache, 1).await, "from cache");
}

#[tokio::test]
async fn a_hung_redis_is_skipped_after_three_reads_even_one_at_a_time() {
    let mut redis = tokio::task::spawn_blocking(TempRedis::start)
        .await
        .unwrap()
        .unwrap();
    let cache = cache_on(&redis.url(), "cache_hangs", &Registry::new()).await;
    cache.set("k", "v", Duration::from_secs(60)).await.unwrap();
    redis.freeze();
    // One read at a time, far below the rate rule's 10 calls in 2 s: each
    // of the first three waits out the command timeout, then the breaker
    // opens on the streak and the fourth is not sent to Redis at all.
    for _ in 0..3 {
        let err = cache.get::<String>("k").await.unwrap_err();
        assert!(matches!(err, CacheError::Unavailable(_)), "{err:?}");
    }
    let err = cache.get::<String>("k").await.unwrap_err();
    assert!(matches!(err, CacheError::CircuitOpen), "{err:?}");
    // Past the open interval, at one read every 200 ms: the breaker's
    // probes run in the background, so no read waits the 250 ms command
    // timeout to find Redis still hung.
    let mut slowest = Duration::ZERO;
    for _ in 0..15 {
        let started = Instant::now();
        let err = cache.get::<String>("k").await.unwrap_err();
        slowest = slowest.max(started.elapsed());
        assert!(matches!(err, CacheError::CircuitOpen), "{err:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        slowest < Duration::from_millis(100),
        "a read waited {slowest:?}"
    );
    redis.thaw();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.get::<String>("k").await.ok().flatten().as_deref() != Some("v") {
        assert!(Instant::now() < deadline, "the cache did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_over_tls_is_verified_against_the_configured_ca() {
    use sluice_pool::{TlsConfig, TlsMode};
    use sluice_tests::certs::throwaway;

    let certs = throwaway(&services::scratch_dir("redis_tls")).unwrap();
    let other = throwaway(&services::scratch_dir("redis_tls_other")).unwrap();
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    let redis = tokio::task::spawn_blocking(move || TempRedis::start_tls(&cert, &key))
        .await
        .unwrap()
        .unwrap();
    assert!(redis.url().starts_with("rediss://"));
    let config = |ca: &std::path::Path| {
        let mut c = ConnectionConfig::from_url("secure_cache", &redis.url()).unwrap();
        c.tls = TlsConfig {
            mode: TlsMode::VerifyFull,
            ca_file: Some(ca.to_path_buf()),
            ..TlsConfig::default()
        };
        c.retry_attempts = 1;
        c
    };
    let pool = RedisPool::open(&config(&certs.ca)).await.unwrap();
    pool.ping().await.unwrap();
    let cache = Cache::with_registry(pool, services::redis_prefix("tls"), &Registry::new());
    cache
        .set("k", "over tls", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("over tls")
    );
    // Another CA: the connection is refused, and the error names it.
    let err = RedisPool::open(&config(&other.ca)).await.unwrap_err();
    assert!(err.to_string().contains("secure_cache"), "{err}");
}

/// `INFO stats`'s counter of socket reads the server has served.
async fn reads_processed(pool: &RedisPool) -> u64 {
    use fred::interfaces::ClientLike;
    let info: String = pool
        .client()
        .next()
        .info(Some(fred::types::InfoKind::Stats))
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_default_client_pipelines_concurrent_callers_and_answers_each_its_own() {
    // A server of its own: the read counter below counts only this test.
    let redis = tokio::task::spawn_blocking(TempRedis::start)
        .await
        .unwrap()
        .unwrap();
    let config = ConnectionConfig::from_url("cache_pipelined", &redis.url()).unwrap();
    assert_eq!(config.pool_size, 1, "one Redis client by default");
    let pool = RedisPool::open(&config).await.unwrap();
    assert_eq!(pool.stats().size, 1);
    let cache = Cache::with_registry(pool.clone(), "p:", &Registry::new());
    const CALLERS: i64 = 2000;
    let before = reads_processed(&pool).await;
    let mut writes = tokio::task::JoinSet::new();
    for id in 0..CALLERS {
        let cache = cache.clone();
        writes.spawn(async move {
            let value = Profile {
                id,
                bio: format!("bio {id}"),
            };
            cache
                .set(&format!("user:{id}"), &value, Duration::from_secs(60))
                .await
        });
    }
    while let Some(done) = writes.join_next().await {
        done.unwrap().unwrap();
    }
    let mut reads = tokio::task::JoinSet::new();
    for id in 0..CALLERS {
        let cache = cache.clone();
        reads.spawn(async move { (id, cache.get::<Profile>(&format!("user:{id}")).await) });
    }
    while let Some(done) = reads.join_next().await {
        let (id, got) = done.unwrap();
        // Answers come back in order on the one connection; each must
        // reach the caller that asked.
        assert_eq!(
            got.unwrap(),
            Some(Profile {
                id,
                bio: format!("bio {id}")
            })
        );
    }
    // 4,000 commands sent together left in batches, not one write each:
    // the server read them in under a tenth as many reads. (One client
    // takes about 50 here; ten clients, the old default, about 900.)
    let served = reads_processed(&pool).await - before;
    assert!(
        served < 2 * CALLERS as u64 / 10,
        "{served} socket reads for {} commands",
        2 * CALLERS
    );
}
