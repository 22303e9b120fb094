//! The batch-memory drill: what one batch of large upstream answers costs
//! the server's memory. 1,000 × one id whose answer is 1 MiB (the answer
//! is sent 1,000 times, about 1 GB), then 1,000 distinct 1 MiB ids (past
//! the default 32 MiB per-batch limit). The server's peak RSS (`VmHWM`)
//! is read from /proc before and after.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Check, Harness, Result};

/// The upstream pads answers to about this size for ids `big-<n>`.
const MIB: usize = 1 << 20;

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Posts a batch; returns the status, the body's length, and the body
/// itself when `keep` (else it is read and thrown away).
async fn post_batch(addr: SocketAddr, ids: &[String], keep: bool) -> Result<(u16, u64, Vec<u8>)> {
    let body = serde_json::to_vec(ids)?;
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "POST /batch-external-data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    let mut buf = vec![0u8; 64 << 10];
    let mut got: Vec<u8> = Vec::new();
    let mut header_end = None;
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if header_end.is_none() || keep {
            got.extend_from_slice(&buf[..n]);
        }
        if header_end.is_none()
            && let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n")
        {
            header_end = Some(at + 4);
            if !keep {
                got.truncate(at + 4);
            }
        }
    }
    let end = header_end.ok_or("no response head")?;
    let status = std::str::from_utf8(&got[9..12])?.parse()?;
    let body = if keep {
        got[end..].to_vec()
    } else {
        Vec::new()
    };
    Ok((status, total - end as u64, body))
}

pub(crate) async fn batch_memory(h: &mut Harness) -> Result<Vec<Check>> {
    const D: &str = "batch-memory";
    let server = h.server(&[]).await?;
    let pid = server.child.id();
    let at_rest = peak_rss_mib(pid);

    let repeated: Vec<String> = vec![format!("big-{MIB}"); 1000];
    let (status, bytes, _) = post_batch(server.addr, &repeated, false).await?;
    let after_repeated = peak_rss_mib(pid);

    let distinct: Vec<String> = (0..1000).map(|i| format!("big-{}", MIB + i)).collect();
    let (status2, _, body) = post_batch(server.addr, &distinct, true).await?;
    let after_distinct = peak_rss_mib(pid);
    let items: serde_json::Value = serde_json::from_slice(&body)?;
    let items = items["data"].as_array().cloned().unwrap_or_default();
    let answered = items.iter().filter(|i| i["status_code"] == 200).count();
    let refused = items
        .iter()
        .filter(|i| {
            i["error"]
                .as_str()
                .is_some_and(|e| e.contains("size limit"))
        })
        .count();
    println!(
        "  peak RSS at rest {at_rest:.1} MiB; after 1,000 × one 1 MiB id ({status}, {:.0} MiB sent) {after_repeated:.1} MiB; after 1,000 distinct 1 MiB ids ({status2}, {answered} answered, {refused} refused at the limit) {after_distinct:.1} MiB",
        bytes as f64 / MIB as f64
    );
    Ok(vec![
        Check::new(
            D,
            "1,000 × one 1 MiB answer: every item sent, peak RSS growth < 100 MiB",
            format!(
                "{status}, {:.0} MiB sent; peak RSS {at_rest:.1} → {after_repeated:.1} MiB",
                bytes as f64 / MIB as f64
            ),
            status == 200 && bytes > 1000 * MIB as u64 && after_repeated - at_rest < 100.0,
        ),
        Check::new(
            D,
            "1,000 distinct 1 MiB answers: the per-batch limit holds, peak RSS growth < 100 MiB",
            format!(
                "{status2}, {answered} answered, {refused} refused; peak RSS {at_rest:.1} → {after_distinct:.1} MiB"
            ),
            status2 == 200
                && answered + refused == 1000
                && refused > 0
                && answered <= 32
                && after_distinct - at_rest < 100.0,
        ),
    ])
}
