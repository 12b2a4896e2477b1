//! Where object and part bytes live: in memory (the chunks as received), in files under a
//! directory, generated (synthetic) or nowhere (discard buckets). Bytes stream in and out; a
//! multipart object is the list of its parts' segments, so Complete copies nothing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::synthetic::Synthetic;

/// A file holding one PutObject body or one part; deleted when the last reference goes away
/// (an in-flight GET keeps it alive after the object is replaced or deleted).
pub struct FileBlob {
    path: PathBuf,
}

impl Drop for FileBlob {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A contiguous run of stored bytes.
#[derive(Clone)]
pub enum Segment {
    Mem(Arc<Vec<Bytes>>, u64),
    File(Arc<FileBlob>, u64),
}

impl Segment {
    pub fn len(&self) -> u64 {
        match self {
            Segment::Mem(_, l) | Segment::File(_, l) => *l,
        }
    }
}

/// An object's bytes.
#[derive(Clone)]
pub enum Content {
    Stored(Vec<Segment>),
    Synthetic(Arc<Synthetic>),
    /// Discard bucket: only size and CRC were kept.
    Discarded,
}

const FILE_CHUNK: usize = 1 << 20;
/// Block size of bodies stored in memory.
const MEM_BLOCK: usize = 1 << 20;

fn mem_slices(chunks: &[Bytes], start: u64, end: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut off = 0u64;
    for c in chunks {
        let (cs, ce) = (off, off + c.len() as u64);
        off = ce;
        if ce <= start {
            continue;
        }
        if cs >= end {
            break;
        }
        let a = start.saturating_sub(cs) as usize;
        let b = (end.min(ce) - cs) as usize;
        out.push(c.slice(a..b));
    }
    out
}

fn file_stream(blob: Arc<FileBlob>, start: u64, end: u64) -> BoxStream<'static, io::Result<Bytes>> {
    struct St {
        blob: Arc<FileBlob>,
        file: Option<tokio::fs::File>,
        pos: u64,
        end: u64,
    }
    stream::try_unfold(
        St {
            blob,
            file: None,
            pos: start,
            end,
        },
        |mut st| async move {
            if st.pos >= st.end {
                return Ok(None);
            }
            if st.file.is_none() {
                let mut f = tokio::fs::File::open(&st.blob.path).await?;
                f.seek(io::SeekFrom::Start(st.pos)).await?;
                st.file = Some(f);
            }
            let want = ((st.end - st.pos) as usize).min(FILE_CHUNK);
            let mut buf = BytesMut::with_capacity(want);
            let f = st.file.as_mut().expect("opened above");
            while buf.len() < want {
                let n = f.read_buf(&mut buf).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "simulator store file is shorter than recorded",
                    ));
                }
            }
            buf.truncate(want);
            st.pos += want as u64;
            Ok(Some((buf.freeze(), st)))
        },
    )
    .boxed()
}

fn synthetic_stream(
    syn: Arc<Synthetic>,
    start: u64,
    end: u64,
) -> BoxStream<'static, io::Result<Bytes>> {
    let end = end.min(syn.size());
    stream::unfold((syn, start), move |(syn, pos)| async move {
        if pos >= end {
            return None;
        }
        let c = syn.chunk_at(pos, end - pos);
        let next = pos + c.len() as u64;
        Some((Ok(c), (syn, next)))
    })
    .boxed()
}

/// Streams bytes `[start, end)` of `content`.
pub fn content_stream(
    content: Content,
    start: u64,
    end: u64,
) -> BoxStream<'static, io::Result<Bytes>> {
    match content {
        Content::Synthetic(s) => synthetic_stream(s, start, end),
        Content::Discarded => {
            stream::once(async { Err(io::Error::other("discard bucket keeps no content")) }).boxed()
        }
        Content::Stored(segs) => {
            let mut pieces: Vec<BoxStream<'static, io::Result<Bytes>>> = Vec::new();
            let mut off = 0u64;
            for seg in segs {
                let (ss, se) = (off, off + seg.len());
                off = se;
                if se <= start || ss >= end {
                    continue;
                }
                let (a, b) = (start.max(ss) - ss, end.min(se) - ss);
                match seg {
                    Segment::Mem(chunks, _) => {
                        let slices = mem_slices(&chunks, a, b);
                        pieces.push(stream::iter(slices.into_iter().map(Ok)).boxed());
                    }
                    Segment::File(blob, _) => pieces.push(file_stream(blob, a, b)),
                }
            }
            stream::iter(pieces).flatten().boxed()
        }
    }
}

/// Copies `[start, end)` of `content` into memory (tests and small objects only).
pub fn content_bytes_sync(content: &Content, start: u64, end: u64) -> Option<Bytes> {
    let mut out = BytesMut::new();
    match content {
        Content::Synthetic(s) => {
            for c in s.chunks(start, end) {
                out.extend_from_slice(&c);
            }
        }
        Content::Discarded => return None,
        Content::Stored(segs) => {
            let mut off = 0u64;
            for seg in segs {
                let (ss, se) = (off, off + seg.len());
                off = se;
                if se <= start || ss >= end {
                    continue;
                }
                let (a, b) = (start.max(ss) - ss, end.min(se) - ss);
                match seg {
                    Segment::Mem(chunks, _) => {
                        for s in mem_slices(chunks, a, b) {
                            out.extend_from_slice(&s);
                        }
                    }
                    Segment::File(..) => return None,
                }
            }
        }
    }
    Some(out.freeze())
}

/// Where an incoming body goes.
pub enum Sink {
    /// Bodies are copied into compact blocks: keeping the received `Bytes` themselves would pin
    /// the connection's whole read buffer (up to ~400 KiB) for every small read, which under
    /// a paced link multiplied the memory of a stored object by 25 and more.
    Mem {
        blocks: Vec<Bytes>,
        cur: BytesMut,
        len: u64,
    },
    File {
        writer: tokio::io::BufWriter<tokio::fs::File>,
        blob: Arc<FileBlob>,
        len: u64,
    },
    Discard,
}

fn blob_name() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Sink {
    /// A sink for the configured store (`dir` = None → memory), or a discarding one.
    pub async fn open(dir: Option<&Path>, discard: bool) -> io::Result<Sink> {
        if discard {
            return Ok(Sink::Discard);
        }
        match dir {
            None => Ok(Sink::Mem {
                blocks: Vec::new(),
                cur: BytesMut::new(),
                len: 0,
            }),
            Some(d) => {
                let path = d.join(blob_name());
                let file = tokio::fs::File::create(&path).await?;
                Ok(Sink::File {
                    writer: tokio::io::BufWriter::with_capacity(FILE_CHUNK, file),
                    blob: Arc::new(FileBlob { path }),
                    len: 0,
                })
            }
        }
    }

    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        match self {
            Sink::Mem { blocks, cur, len } => {
                *len += chunk.len() as u64;
                let mut data = &chunk[..];
                while !data.is_empty() {
                    if cur.len() == cur.capacity() {
                        if !cur.is_empty() {
                            blocks.push(cur.split().freeze());
                        }
                        cur.reserve(MEM_BLOCK);
                    }
                    let n = (cur.capacity() - cur.len()).min(data.len());
                    cur.extend_from_slice(&data[..n]);
                    data = &data[n..];
                }
            }
            Sink::File { writer, len, .. } => {
                *len += chunk.len() as u64;
                writer.write_all(&chunk).await?;
            }
            Sink::Discard => {}
        }
        Ok(())
    }

    /// Flushes and returns the stored segment (`None` when discarding).
    pub async fn finish(self) -> io::Result<Option<Segment>> {
        match self {
            Sink::Mem {
                mut blocks,
                cur,
                len,
            } => {
                if !cur.is_empty() {
                    // A short tail gets its own exact allocation rather than a block's.
                    blocks.push(if cur.len() < cur.capacity() / 2 {
                        Bytes::copy_from_slice(&cur)
                    } else {
                        cur.freeze()
                    });
                }
                Ok(Some(Segment::Mem(Arc::new(blocks), len)))
            }
            Sink::File {
                mut writer,
                blob,
                len,
            } => {
                writer.flush().await?;
                writer.into_inner().sync_data().await.ok();
                Ok(Some(Segment::File(blob, len)))
            }
            Sink::Discard => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(s: BoxStream<'static, io::Result<Bytes>>) -> Vec<u8> {
        s.map(|r| r.unwrap().to_vec()).concat().await
    }

    #[tokio::test]
    async fn stored_bodies_do_not_pin_the_buffers_they_were_read_from() {
        // Small reads sliced off one big connection buffer, as hyper hands them out.
        let read_buf = Bytes::from(vec![7u8; 400 * 1024]);
        let mut m = Sink::open(None, false).await.unwrap();
        for i in 0..(3 * MEM_BLOCK / 1000 + 1) {
            let at = (i * 1000) % (read_buf.len() - 1000);
            m.write(read_buf.slice(at..at + 1000)).await.unwrap();
        }
        let seg = m.finish().await.unwrap().unwrap();
        assert!(
            read_buf.is_unique(),
            "the stored object still references the read buffer"
        );
        let Segment::Mem(blocks, len) = &seg else {
            panic!("memory segment expected")
        };
        assert_eq!(*len, (3 * MEM_BLOCK / 1000 + 1) as u64 * 1000);
        assert_eq!(blocks.len(), 4, "three full blocks and a tail");
        assert_eq!(blocks.iter().map(|b| b.len() as u64).sum::<u64>(), *len);
    }

    #[tokio::test]
    async fn memory_and_file_segments_stream_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Sink::open(None, false).await.unwrap();
        let mut f = Sink::open(Some(dir.path()), false).await.unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(7000) {
            m.write(Bytes::copy_from_slice(c)).await.unwrap();
            f.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        let ms = m.finish().await.unwrap().unwrap();
        let fs = f.finish().await.unwrap().unwrap();
        let content = Content::Stored(vec![ms, fs.clone()]);
        let mut both = data.clone();
        both.extend_from_slice(&data);
        for (a, b) in [
            (0u64, 600_000u64),
            (1, 2),
            (299_999, 300_001),
            (123_456, 555_555),
        ] {
            let got = collect(content_stream(content.clone(), a, b)).await;
            assert_eq!(got, &both[a as usize..b as usize], "{a}-{b}");
        }
        // The file disappears when the last reference does.
        let path = match &fs {
            Segment::File(b, _) => b.path.clone(),
            _ => unreachable!(),
        };
        drop(content);
        assert!(path.exists());
        drop(fs);
        assert!(!path.exists());
    }
}
