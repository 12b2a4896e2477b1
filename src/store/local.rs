//! A local file as an [`ObjectStore`]: as a source (ranged positioned reads) or as a
//! destination (parts written in place by offset).
//!
//! Destination layout: parts are written with positioned writes into `<path>.ossrelay-partial`
//! (pre-sized at create), and each finished part is appended as one line to the sidecar
//! `<path>.ossrelay-partial.parts` (`number offset len crc etag`). ListParts reads the sidecar,
//! so resume works exactly as for a remote store. Complete checks the parts tile the file,
//! fsyncs and renames the partial file over `<path>` — the target path never holds a half
//! written file. Abort removes both files. The key argument is ignored: the store is one path.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::checksum::{crc64, crc64::Crc64, Algorithm, Checksum, Checksums};

use super::{
    ByteStream, ChecksumCaps, ErrorClass, Limits, ListedPart, ObjectMeta, ObjectStore, PartSpec,
    PutOptions, StoreError, Uploaded,
};

/// The limits of OSS, which a local destination stands in for in tests and dry runs: the same
/// plan (part size, part count) as the object store, so a resume state moves between them.
pub const LIMITS: Limits = Limits {
    min_part_size: 100 * 1024,
    max_part_size: 5 * 1024 * 1024 * 1024,
    max_parts: 10_000,
    max_single_put: 5 * 1024 * 1024 * 1024,
};

/// A local destination computes the CRC-64/XZ of what it writes (kept in the sidecar for
/// ListParts) and refuses a part whose bytes do not have the CRC-64 the sender expected.
/// As a source it reports none: a file has no stored checksum.
pub const CHECKSUMS: ChecksumCaps = ChecksumCaps {
    reports: &[Algorithm::Crc64Xz],
    verifies: &[Algorithm::Crc64Xz],
};

fn crc_sums(crc: u64) -> Checksums {
    Checksum::Crc64Xz(crc).into()
}

const READ_CHUNK: usize = 1024 * 1024;
/// Chunks are gathered up to this size before one blocking write.
const WRITE_BATCH: usize = 1024 * 1024;
const SIDECAR_MAGIC: &str = "ossrelay-parts-v1";

/// A local file path.
#[derive(Debug, Clone)]
pub struct LocalFile {
    path: PathBuf,
    read_chunk: usize,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    // A full disk, a file-size limit, a read-only mount or a path through a regular file do not
    // heal by retrying: failing at once (with a hint) beats minutes of backoff.
    let hint = match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Some(
            "the file system is full (or over quota): free space or choose another destination",
        ),
        Some(libc::EFBIG) => {
            Some("the file exceeds the file size limit (ulimit -f or the file system's maximum)")
        }
        Some(libc::EROFS) => Some("the file system is mounted read-only"),
        Some(libc::ENOTDIR) => Some("a component of the path is a regular file, not a directory"),
        Some(libc::EISDIR) => Some("the path is a directory; name a file"),
        _ => None,
    };
    let class = match e.kind() {
        _ if hint.is_some() => ErrorClass::Client,
        ErrorKind::NotFound => ErrorClass::NotFound,
        ErrorKind::PermissionDenied => ErrorClass::Auth,
        ErrorKind::InvalidInput | ErrorKind::InvalidData => ErrorClass::Client,
        _ => ErrorClass::Transient,
    };
    match hint {
        Some(h) => StoreError::new(class, format!("{what} {}: {e}; {h}", path.display())),
        None => StoreError::new(class, format!("{what} {}: {e}", path.display())),
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::transient(format!("file I/O task failed: {e}")))?
}

/// One line of the sidecar.
#[derive(Debug, Clone)]
struct SidecarPart {
    offset: u64,
    len: u64,
    crc64: u64,
    etag: String,
}

struct Sidecar {
    upload_id: String,
    total: u64,
    parts: BTreeMap<u32, SidecarPart>,
}

impl LocalFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            read_chunk: READ_CHUNK,
        }
    }

    /// Size of the chunks a GET yields (default 1 MiB).
    pub fn with_read_chunk(mut self, n: usize) -> Self {
        self.read_chunk = n.max(1);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn partial(&self) -> PathBuf {
        with_suffix(&self.path, ".ossrelay-partial")
    }

    fn sidecar(&self) -> PathBuf {
        with_suffix(&self.path, ".ossrelay-partial.parts")
    }

    fn etag_of(meta: &std::fs::Metadata) -> String {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{:x}-{:x}", meta.len(), mtime)
    }

    fn read_sidecar(path: &Path, upload_id: &str) -> Result<Sidecar, StoreError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(no_such_upload()),
            Err(e) => return Err(io_err("cannot read", path, e)),
        };
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
        if header.len() != 3 || header[0] != SIDECAR_MAGIC || header[1] != upload_id {
            return Err(no_such_upload());
        }
        let total = header[2].parse().map_err(|_| no_such_upload())?;
        let mut parts = BTreeMap::new();
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            // A torn last line (crash mid-append) is ignored: that part is simply redone.
            if f.len() != 5 {
                continue;
            }
            let (Ok(n), Ok(offset), Ok(len), Ok(crc64)) =
                (f[0].parse(), f[1].parse(), f[2].parse(), f[3].parse())
            else {
                continue;
            };
            parts.insert(
                n,
                SidecarPart {
                    offset,
                    len,
                    crc64,
                    etag: f[4].to_string(),
                },
            );
        }
        Ok(Sidecar {
            upload_id: upload_id.to_string(),
            total,
            parts,
        })
    }
}

fn no_such_upload() -> StoreError {
    StoreError {
        class: ErrorClass::NotFound,
        code: Some("NoSuchUpload".into()),
        status: None,
        request_id: None,
        message: "no such local upload (the partial file was removed or belongs to another run)"
            .into(),
    }
}

/// Streams `body` (exactly `len` bytes) into `file` at `offset`; returns the CRC-64 written.
/// `fdatasync`: the file's data (and the size needed to read it back) are on the disk.
fn durable(f: &File, path: &Path) -> Result<(), StoreError> {
    f.sync_data().map_err(|e| io_err("cannot sync", path, e))?;
    #[cfg(test)]
    sync_log::note(path);
    Ok(())
}

/// Which files were synced, in order: lets a test check that a part's bytes were synced
/// before its sidecar line was (nothing else can observe an fsync).
#[cfg(test)]
mod sync_log {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static LOG: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub fn note(path: &Path) {
        LOG.lock().unwrap().push(path.to_path_buf());
    }

    /// The synced paths under `dir`, in order.
    pub fn under(dir: &Path) -> Vec<PathBuf> {
        let log = LOG.lock().unwrap();
        log.iter().filter(|p| p.starts_with(dir)).cloned().collect()
    }
}

async fn write_body(
    file: Arc<File>,
    path: &Path,
    mut body: ByteStream,
    offset: u64,
    len: u64,
) -> Result<u64, StoreError> {
    let mut crc = Crc64::new();
    let mut pos = offset;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0usize;
    loop {
        let next = body.next().await;
        let end = next.is_none();
        if let Some(chunk) = next {
            let chunk = chunk.map_err(|e| {
                StoreError::transient(format!("request body broke off: {}", e.message))
            })?;
            crc.update(&chunk);
            if crc.len() > len {
                return Err(StoreError::new(
                    ErrorClass::Client,
                    format!("body longer than the {len} bytes announced"),
                ));
            }
            batched += chunk.len();
            batch.push(chunk);
        }
        if (end && !batch.is_empty()) || batched >= WRITE_BATCH {
            let f = file.clone();
            let p = path.to_path_buf();
            let chunks = std::mem::take(&mut batch);
            let at = pos;
            pos += batched as u64;
            batched = 0;
            blocking(move || {
                let mut at = at;
                for c in &chunks {
                    f.write_all_at(c, at)
                        .map_err(|e| io_err("cannot write", &p, e))?;
                    at += c.len() as u64;
                }
                Ok(())
            })
            .await?;
        }
        if end {
            break;
        }
    }
    if crc.len() != len {
        return Err(StoreError::transient(format!(
            "body ended after {} of {len} bytes",
            crc.len()
        )));
    }
    Ok(crc.sum())
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[async_trait]
impl ObjectStore for LocalFile {
    fn describe(&self, _key: &str) -> String {
        self.path.display().to_string()
    }

    fn limits(&self) -> Limits {
        LIMITS
    }

    fn checksums(&self) -> ChecksumCaps {
        CHECKSUMS
    }

    async fn head(&self, _key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path.clone();
        blocking(move || {
            let m = std::fs::metadata(&path).map_err(|e| io_err("cannot read", &path, e))?;
            if !m.is_file() {
                return Err(StoreError::new(
                    ErrorClass::Client,
                    format!("{} is not a regular file", path.display()),
                ));
            }
            Ok(ObjectMeta {
                size: m.len(),
                etag: Self::etag_of(&m),
                last_modified: m.modified().ok().map(httpdate::fmt_http_date),
                checksums: Checksums::new(),
                content_type: None,
                user_meta: Vec::new(),
            })
        })
        .await
    }

    async fn get_range(
        &self,
        _key: &str,
        start: u64,
        end: u64,
        if_match: Option<&str>,
    ) -> Result<ByteStream, StoreError> {
        let path = self.path.clone();
        let want = if_match.map(str::to_string);
        let file = blocking(move || {
            let f = File::open(&path).map_err(|e| io_err("cannot open", &path, e))?;
            let m = f.metadata().map_err(|e| io_err("cannot read", &path, e))?;
            if let Some(w) = want {
                let now = Self::etag_of(&m);
                if now != w {
                    return Err(StoreError::new(
                        ErrorClass::Precondition,
                        format!("{} changed (size or modification time)", path.display()),
                    ));
                }
            }
            if start > end || end > m.len() {
                return Err(StoreError::new(
                    ErrorClass::Client,
                    format!(
                        "range {start}-{end} is outside {} ({} bytes)",
                        path.display(),
                        m.len()
                    ),
                ));
            }
            Ok(Arc::new(f))
        })
        .await?;
        let chunk = self.read_chunk as u64;
        let path = self.path.clone();
        let stream = futures::stream::unfold(start, move |pos| {
            let file = file.clone();
            let path = path.clone();
            async move {
                if pos >= end {
                    return None;
                }
                let n = chunk.min(end - pos) as usize;
                let r = blocking(move || {
                    let mut buf = vec![0u8; n];
                    file.read_exact_at(&mut buf, pos)
                        .map_err(|e| io_err("cannot read", &path, e))?;
                    Ok(Bytes::from(buf))
                })
                .await;
                match r {
                    Ok(b) => Some((Ok(b), pos + n as u64)),
                    // Stop after the error.
                    Err(e) => Some((Err(e), end)),
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn put(
        &self,
        _key: &str,
        body: ByteStream,
        len: u64,
        _opts: &PutOptions,
    ) -> Result<Uploaded, StoreError> {
        let tmp = with_suffix(&self.path, ".ossrelay-put");
        let t = tmp.clone();
        let file = blocking(move || {
            let f = File::create(&t).map_err(|e| io_err("cannot create", &t, e))?;
            Ok(Arc::new(f))
        })
        .await?;
        let crc = match write_body(file.clone(), &tmp, body, 0, len).await {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let path = self.path.clone();
        blocking(move || {
            file.sync_all()
                .map_err(|e| io_err("cannot sync", &tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io_err("cannot rename to", &path, e))?;
            sync_dir(&path);
            Ok(())
        })
        .await?;
        Ok(Uploaded {
            etag: format!("{crc:016X}"),
            checksums: crc_sums(crc),
        })
    }

    async fn create_multipart(
        &self,
        _key: &str,
        total_size: u64,
        _opts: &PutOptions,
    ) -> Result<String, StoreError> {
        let id = format!("{:032x}", rand::random::<u128>());
        let partial = self.partial();
        let sidecar = self.sidecar();
        let header = format!("{SIDECAR_MAGIC} {id} {total_size}\n");
        blocking(move || {
            let f = File::create(&partial).map_err(|e| io_err("cannot create", &partial, e))?;
            f.set_len(total_size)
                .map_err(|e| io_err("cannot size", &partial, e))?;
            std::fs::write(&sidecar, header).map_err(|e| io_err("cannot write", &sidecar, e))?;
            Ok(())
        })
        .await?;
        Ok(id)
    }

    async fn upload_part(
        &self,
        _key: &str,
        upload_id: &str,
        part: PartSpec,
        body: ByteStream,
        expected: &Checksums,
    ) -> Result<Uploaded, StoreError> {
        let partial = self.partial();
        let sidecar = self.sidecar();
        let id = upload_id.to_string();
        let (sc, p) = (sidecar.clone(), partial.clone());
        let file = blocking(move || {
            let s = Self::read_sidecar(&sc, &id)?;
            if part.offset + part.len > s.total {
                return Err(StoreError::new(
                    ErrorClass::Client,
                    format!("part {} ends beyond the announced size", part.number),
                ));
            }
            let f = OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|e| io_err("cannot open", &p, e))?;
            Ok(Arc::new(f))
        })
        .await?;
        let crc = write_body(file.clone(), &partial, body, part.offset, part.len).await?;
        if let Some(want) = expected.crc64_xz().filter(|&w| w != crc) {
            // Not recorded in the sidecar: the part stays missing and is sent again.
            return Err(StoreError::transient(format!(
                "part {}: the bytes received have CRC-64 {crc}, the sender computed {want}",
                part.number
            )));
        }
        let etag = format!("{crc:016X}");
        let line = format!(
            "{} {} {} {crc} {etag}\n",
            part.number, part.offset, part.len
        );
        blocking(move || {
            // The part's bytes reach the disk before anything says they did: the sidecar line
            // here and the resume state after the acknowledgement. Otherwise a power loss could
            // make a resume trust bytes that only ever sat in the page cache.
            durable(&file, &partial)?;
            // One small O_APPEND write per part: concurrent parts never interleave lines.
            let mut f = OpenOptions::new()
                .append(true)
                .open(&sidecar)
                .map_err(|e| io_err("cannot open", &sidecar, e))?;
            f.write_all(line.as_bytes())
                .map_err(|e| io_err("cannot write", &sidecar, e))?;
            durable(&f, &sidecar)
        })
        .await?;
        Ok(Uploaded {
            etag,
            checksums: crc_sums(crc),
        })
    }

    async fn list_parts(&self, _key: &str, upload_id: &str) -> Result<Vec<ListedPart>, StoreError> {
        let sidecar = self.sidecar();
        let id = upload_id.to_string();
        let s = blocking(move || Self::read_sidecar(&sidecar, &id)).await?;
        Ok(s.parts
            .into_iter()
            .map(|(number, p)| ListedPart {
                number,
                size: p.len,
                etag: p.etag,
                checksums: crc_sums(p.crc64),
            })
            .collect())
    }

    async fn complete(
        &self,
        _key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        size: u64,
        expected: &Checksums,
    ) -> Result<Uploaded, StoreError> {
        let want = expected.crc64_xz();
        let sidecar = self.sidecar();
        let partial = self.partial();
        let path = self.path.clone();
        let id = upload_id.to_string();
        let parts = parts.to_vec();
        blocking(move || {
            let s = Self::read_sidecar(&sidecar, &id)?;
            let mut next_offset = 0u64;
            let mut crc = 0u64;
            let mut prev = 0u32;
            for (n, etag) in &parts {
                let p = s.parts.get(n).filter(|p| &p.etag == etag).ok_or_else(|| {
                    StoreError::new(
                        ErrorClass::Client,
                        format!(
                            "part {n} of upload {} is missing or has another ETag",
                            s.upload_id
                        ),
                    )
                })?;
                if *n <= prev || p.offset != next_offset {
                    return Err(StoreError::new(
                        ErrorClass::Client,
                        format!("part {n} does not follow the previous part"),
                    ));
                }
                prev = *n;
                next_offset += p.len;
                crc = crc64::combine(crc, p.crc64, p.len);
            }
            // The size announced at create is an upper bound (a disk container's length is
            // known only at the end): the parts must tile `[0, size)` of it, and the file
            // is cut to that.
            if next_offset != size.min(s.total) {
                return Err(StoreError::new(
                    ErrorClass::Client,
                    format!(
                        "the parts cover {next_offset} of {} bytes",
                        size.min(s.total)
                    ),
                ));
            }
            if let Some(want) = want.filter(|&w| w != crc) {
                return Err(StoreError::new(
                    ErrorClass::Client,
                    format!("the parts' CRC-64 is {crc}, the sender expected {want}"),
                ));
            }
            let f = OpenOptions::new()
                .write(true)
                .open(&partial)
                .map_err(|e| io_err("cannot open", &partial, e))?;
            if size < s.total {
                f.set_len(size)
                    .map_err(|e| io_err("cannot size", &partial, e))?;
            }
            f.sync_all()
                .map_err(|e| io_err("cannot sync", &partial, e))?;
            std::fs::rename(&partial, &path).map_err(|e| io_err("cannot rename to", &path, e))?;
            let _ = std::fs::remove_file(&sidecar);
            sync_dir(&path);
            Ok(Uploaded {
                etag: format!("{crc:016X}-{}", parts.len()),
                checksums: crc_sums(crc),
            })
        })
        .await
    }

    async fn abort(&self, _key: &str, upload_id: &str) -> Result<(), StoreError> {
        let sidecar = self.sidecar();
        let partial = self.partial();
        let id = upload_id.to_string();
        blocking(move || {
            Self::read_sidecar(&sidecar, &id)?;
            let _ = std::fs::remove_file(&partial);
            let _ = std::fs::remove_file(&sidecar);
            Ok(())
        })
        .await
    }

    async fn delete(&self, _key: &str) -> Result<(), StoreError> {
        let path = self.path.clone();
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &path, e)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(data: Vec<u8>) -> ByteStream {
        Box::pin(futures::stream::iter(
            data.chunks(1000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        ))
    }

    #[tokio::test]
    async fn source_reads_ranges_and_detects_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("src.bin");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let f = LocalFile::new(&p).with_read_chunk(777);
        let m = f.head("").await.unwrap();
        assert_eq!(m.size, 10_000);
        assert_eq!(m.checksums.crc64_xz(), None);
        let mut s = f.get_range("", 100, 5000, Some(&m.etag)).await.unwrap();
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            let c = c.unwrap();
            assert!(c.len() <= 777);
            got.extend_from_slice(&c);
        }
        assert_eq!(got, &data[100..5000]);
        std::fs::write(&p, b"changed").unwrap();
        let e = f.get_range("", 0, 1, Some(&m.etag)).await.err().unwrap();
        assert_eq!(e.class, ErrorClass::Precondition);
        let missing = LocalFile::new(dir.path().join("nope"));
        assert_eq!(
            missing.head("").await.unwrap_err().class,
            ErrorClass::NotFound
        );
    }

    #[tokio::test]
    async fn a_part_is_on_disk_before_it_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        let f = LocalFile::new(&p);
        let id = f
            .create_multipart("", 5000, &PutOptions::default())
            .await
            .unwrap();
        for (number, offset) in [(1u32, 0u64), (2, 2500)] {
            let spec = PartSpec {
                number,
                offset,
                len: 2500,
            };
            f.upload_part(
                "",
                &id,
                spec,
                body(vec![number as u8; 2500]),
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap();
        }
        // Each part: its bytes synced, then the sidecar line that lists it synced, all before
        // upload_part returned (the caller records the part only after that).
        let (data, parts) = (f.partial(), f.sidecar());
        assert_eq!(
            sync_log::under(dir.path()),
            vec![data.clone(), parts.clone(), data, parts]
        );
    }

    #[tokio::test]
    async fn destination_parts_list_complete_abort() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        let f = LocalFile::new(&p);
        let id = f
            .create_multipart("", 5000, &PutOptions::default())
            .await
            .unwrap();
        let a: Vec<u8> = vec![1; 3000];
        let b: Vec<u8> = vec![2; 2000];
        // Parts out of order, one replaced.
        let spec2 = PartSpec {
            number: 2,
            offset: 3000,
            len: 2000,
        };
        let spec1 = PartSpec {
            number: 1,
            offset: 0,
            len: 3000,
        };
        let u2 = f
            .upload_part(
                "",
                &id,
                spec2,
                body(b.clone()),
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap();
        f.upload_part(
            "",
            &id,
            spec1,
            body(vec![9; 3000]),
            &crate::checksum::Checksums::new(),
        )
        .await
        .unwrap();
        let u1 = f
            .upload_part(
                "",
                &id,
                spec1,
                body(a.clone()),
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap();
        assert_eq!(u1.checksums.crc64_xz(), Some(crc64::checksum(&a)));
        let listed = f.list_parts("", &id).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].etag, u1.etag);
        assert!(!p.exists(), "nothing at the target path before complete");
        assert_eq!(
            f.list_parts("", "other").await.unwrap_err().class,
            ErrorClass::NotFound
        );
        // A short body is refused.
        let e = f
            .upload_part(
                "",
                &id,
                spec1,
                body(vec![1; 10]),
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Transient);
        let f1 = f
            .upload_part(
                "",
                &id,
                spec1,
                body(a.clone()),
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap();
        let done = f
            .complete(
                "",
                &id,
                &[(1, f1.etag), (2, u2.etag)],
                5000,
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap();
        let mut all = a.clone();
        all.extend_from_slice(&b);
        assert_eq!(done.checksums.crc64_xz(), Some(crc64::checksum(&all)));
        assert_eq!(std::fs::read(&p).unwrap(), all);
        assert!(!f.sidecar().exists() && !f.partial().exists());

        let id = f
            .create_multipart("", 10, &PutOptions::default())
            .await
            .unwrap();
        f.abort("", &id).await.unwrap();
        assert!(!f.partial().exists());
        assert_eq!(
            f.abort("", &id).await.unwrap_err().class,
            ErrorClass::NotFound
        );
    }

    #[tokio::test]
    async fn put_writes_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o");
        let f = LocalFile::new(&p);
        let u = f
            .put("", body(vec![5; 2500]), 2500, &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(u.checksums.crc64_xz(), Some(crc64::checksum(&[5; 2500])));
        assert_eq!(std::fs::read(&p).unwrap().len(), 2500);
        let e = f
            .put("", body(vec![5; 10]), 11, &PutOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Transient);
        f.delete("").await.unwrap();
        assert!(!p.exists());
    }
}
