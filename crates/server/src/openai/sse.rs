//! Server-sent events: a channel of frames as a streaming response body, and the merge of
//! several choices' engine events into one tagged stream (shared with the Llama Stack routes).

use super::*;

/// SSE frames as a response body; the pump task ends (and the engine cancels the sequence)
/// when the client goes away.
pub fn sse_response(rx: mpsc::Receiver<String>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|s| (Ok::<Bytes, Infallible>(Bytes::from(s)), rx))
    });
    let mut r = Body::from_stream(stream).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub fn frame(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// Merges the receivers of `n` choices into one, tagged with the choice index.
pub fn merge(rxs: Vec<job::Events>) -> mpsc::Receiver<(usize, Event)> {
    let (tx, rx) = mpsc::channel(64);
    for (i, mut r) in rxs.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = r.recv().await {
                let last = matches!(e, Event::Done(_) | Event::Error(_));
                if tx.send((i, e)).await.is_err() || last {
                    break;
                }
            }
        });
    }
    rx
}
