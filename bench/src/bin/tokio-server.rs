//! What a Rust user would write with tokio: a task per client reading lines, a shared map of
//! per-client channels, and a writer task per client that batches whatever is queued.

use loopchat_bench::baseline::{self, Lines};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedSender};

type Peers = Arc<Mutex<HashMap<u64, UnboundedSender<Arc<[u8]>>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let opts = baseline::parse_args("tokio-server", Some(baseline::WELCOME));
    let listener = TcpListener::bind(opts.addr).await?;
    baseline::announce(listener.local_addr()?);
    let peers: Peers = Arc::default();
    let welcome: Option<Arc<[u8]>> = opts.welcome.map(|w| format!("{w}\n").into_bytes().into());
    for id in 0u64.. {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Typically out of descriptors: back off instead of spinning.
                eprintln!("tokio-server: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(client(id, stream, Arc::clone(&peers), welcome.clone()));
    }
    Ok(())
}

async fn client(id: u64, stream: TcpStream, peers: Peers, welcome: Option<Arc<[u8]>>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Arc<[u8]>>();
    if let Some(w) = welcome {
        let _ = tx.send(w);
    }
    peers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, tx);
    // Ends when this client's sender leaves the map, which closes the socket's write half.
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(chunk) = rx.recv().await {
            batch.extend_from_slice(&chunk);
            while let Ok(more) = rx.try_recv() {
                batch.extend_from_slice(&more);
            }
            if wr.write_all(&batch).await.is_err() {
                break;
            }
            batch.clear();
        }
    });
    let mut buf = [0u8; 4096];
    let mut lines = Lines::default();
    while let Ok(n @ 1..) = rd.read(&mut buf).await {
        lines.feed(&buf[..n], |chunk| {
            let chunk: Arc<[u8]> = chunk.into();
            for (other, tx) in peers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                if *other != id {
                    let _ = tx.send(Arc::clone(&chunk));
                }
            }
        });
    }
    peers.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
}
