//! `add`: uploads files and directories to `POST /add` as the multipart
//! body ipfs-cluster-ctl sends (boxo's `MultiFileReader` in form mode,
//! spec §1.5), streamed from disk, and prints the `AddedOutput` stream.
//!
//! Each entry is a part named `file` whose filename is its URL-escaped
//! path relative to the argument's parent (`dir`, `dir%2Fa.txt`, ...);
//! directories are empty `application/x-directory` parts that precede
//! their children, symlinks `application/symlink` parts holding the target.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use tokio::io::AsyncReadExt;

use super::format::{AddedOutput, emit, format_added, format_json};
use super::http::{Api, CallError, RequestBody};
use super::{Encoding, PinFlags, parse_duration, wait_for};
use crate::status::TrackerStatus;
use crate::types::{Pin, PinOptions};

/// ctl's default shard size, sent although sharding is off.
const SHARD_SIZE: u64 = 104_857_600;

/// Bytes read from a file per body chunk.
const CHUNK: usize = 256 * 1024;

/// `add` flags: ctl's, with its defaults.
#[derive(clap::Args, Debug, Clone)]
pub struct AddArgs {
    /// Files or directories to add
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Add directories recursively
    #[arg(long, short = 'r')]
    recursive: bool,
    /// Print only CIDs, one per line
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print only the final CID
    #[arg(long, short = 'Q')]
    quieter: bool,
    /// Print the results once all are in (a JSON array with --enc json)
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Add to the contacted peer's IPFS only, then pin normally
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    pin: PinFlags,
    /// Put the blocks but do not pin
    #[arg(long = "no-pin")]
    no_pin: bool,
    /// Wait until the content is pinned on replication-min peers
    #[arg(long)]
    wait: bool,
    /// How long to --wait, as a Go duration; 0 = forever
    #[arg(long = "wait-timeout", visible_alias = "wt", value_parser = parse_duration, default_value = "0s")]
    wait_timeout: Duration,
    /// Wrap the inputs in a directory (always with several paths)
    #[arg(long = "wrap-with-directory", short = 'w')]
    wrap: bool,
    /// unixfs (build a UnixFS DAG) or car (import a CAR file)
    #[arg(long, default_value = "unixfs", value_parser = ["unixfs", "car"])]
    format: String,
    /// DAG layout: balanced or trickle
    #[arg(long, default_value = "", value_parser = ["", "balanced", "trickle"])]
    layout: String,
    /// Include files whose name starts with a dot
    #[arg(long, short = 'H')]
    hidden: bool,
    /// Chunking algorithm, e.g. size-262144 or rabin-min-avg-max
    #[arg(long, short = 's', default_value = "size-262144")]
    chunker: String,
    /// Raw leaves (implied by --cid-version 1 and --nocopy)
    #[arg(long = "raw-leaves")]
    raw_leaves: bool,
    /// CID version (a non-default --hash implies 1)
    #[arg(long = "cid-version", default_value_t = 0)]
    cid_version: u32,
    /// Hash function
    #[arg(long, default_value = "sha2-256")]
    hash: String,
    /// Filestore: reference the files instead of copying them
    #[arg(long)]
    nocopy: bool,
}

impl AddArgs {
    /// The query ctl sends (`AddParams.ToQueryString`), sorted by key.
    fn query(&self) -> Result<Vec<(String, String)>, CallError> {
        let wrap = self.wrap || self.paths.len() > 1;
        let cid_version = if self.hash != "sha2-256" {
            1
        } else {
            self.cid_version
        };
        let raw_leaves = self.raw_leaves || cid_version > 0 || self.nocopy;
        let options = PinOptions {
            shard_size: SHARD_SIZE,
            ..self.pin.options()?
        };
        let mut q = options.to_query();
        let flag = |b: bool| b.to_string();
        for (k, v) in [
            ("shard", flag(false)),
            ("local", flag(self.local)),
            ("recursive", flag(self.recursive)),
            ("layout", self.layout.clone()),
            ("chunker", self.chunker.clone()),
            ("raw-leaves", flag(raw_leaves)),
            ("hidden", flag(self.hidden)),
            ("wrap-with-directory", flag(wrap)),
            ("progress", flag(false)),
            ("cid-version", cid_version.to_string()),
            ("hash", self.hash.clone()),
            ("stream-channels", flag(true)),
            ("nocopy", flag(self.nocopy)),
            ("format", self.format.clone()),
            ("no-pin", flag(self.no_pin)),
        ] {
            q.push((k.to_owned(), v));
        }
        q.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(q)
    }
}

/// Runs `add`.
pub(super) async fn run(
    api: &Api,
    enc: Encoding,
    args: &AddArgs,
    out: &mut (dyn Write + Send),
    log: &mut (dyn Write + Send),
) -> Result<(), CallError> {
    if args.format == "car" && (args.wrap || args.paths.len() > 1) {
        return Err(CallError::local(
            "adding",
            "only a single CAR file can be added and wrap-with-directory is not supported",
        ));
    }
    let query = args.query()?;
    let mut entries = Vec::new();
    for path in &args.paths {
        collect(path, args, &mut entries)?;
    }
    let body = multipart(entries, show_progress(enc, args));
    let response = api
        .send(Method::POST, "/add", &query, Some(body), log)
        .await?;

    let quiet = args.quiet || args.quieter;
    let mut buffered = Vec::new();
    let mut last: Option<AddedOutput> = None;
    let mut on_item = |item: AddedOutput| {
        if item.cid.is_none() {
            return; // a progress event
        }
        if args.no_stream {
            buffered.push(item.clone());
        } else if !args.quieter {
            emit(out, &print_added(enc, &item, quiet));
        }
        last = Some(item);
    };
    api.read_stream(response, log, &mut on_item).await?;
    let Some(last) = last else {
        return Ok(());
    };
    if args.no_stream {
        let shown = if args.quieter {
            vec![last.clone()]
        } else {
            buffered
        };
        match enc {
            Encoding::Json => emit(out, &format_json(&shown)),
            Encoding::Text => {
                for item in &shown {
                    emit(out, &print_added(enc, item, quiet));
                }
            }
        }
    } else if args.quieter {
        emit(out, &print_added(enc, &last, quiet));
    }
    if args.wait {
        let cid = last.cid.as_deref().unwrap_or_default();
        let cid = crate::types::decode_cid(cid)
            .map_err(|e| CallError::local("waiting for pin status", e))?;
        // The pin's own replication-min, else what was asked for.
        let path = format!("/allocations/{cid}");
        let min = match api.call::<Pin>(Method::GET, &path, &[], log).await {
            Ok(Some(pin)) => pin.options.replication_factor_min,
            _ => args.pin.replication_min,
        };
        let limit = usize::try_from(min).unwrap_or(0);
        wait_for(
            api,
            &cid,
            TrackerStatus::Pinned,
            args.wait_timeout,
            limit,
            log,
        )
        .await?;
    }
    Ok(())
}

fn print_added(enc: Encoding, item: &AddedOutput, quiet: bool) -> String {
    match enc {
        Encoding::Text => format_added(item, quiet),
        // JSON has no quiet form: ctl prints the objects as they are.
        Encoding::Json => format_json(item),
    }
}

/// A progress line on stderr only where a person watches it.
fn show_progress(enc: Encoding, args: &AddArgs) -> bool {
    enc == Encoding::Text && !args.quieter && std::io::stderr().is_terminal()
}

/// One part of the multipart body.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir {
        name: String,
    },
    File {
        name: String,
        path: PathBuf,
        len: u64,
    },
    Symlink {
        name: String,
        target: String,
    },
}

/// The entries for `path` (and, with `-r`, everything under it) in the
/// order boxo's serial files walk them: a directory, then its children
/// sorted by name, dot-files skipped unless `--hidden`.
fn collect(path: &Path, args: &AddArgs, entries: &mut Vec<Entry>) -> Result<(), CallError> {
    let s = path.to_string_lossy();
    if s.starts_with("http://") || s.starts_with("https://") {
        return Err(CallError::local(
            "adding",
            format!("{s}: adding URLs is not supported; download the content and add the file"),
        ));
    }
    let base = path
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| CallError::local("adding", format!("{}: no such file or directory", s)))?;
    walk(path, base, args, entries, true)
}

fn walk(
    path: &Path,
    name: String,
    args: &AddArgs,
    entries: &mut Vec<Entry>,
    top: bool,
) -> Result<(), CallError> {
    let io = |e: std::io::Error| CallError::local("adding", format!("{}: {e}", path.display()));
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    if meta.file_type().is_symlink() && !top {
        let target = std::fs::read_link(path).map_err(io)?;
        entries.push(Entry::Symlink {
            name,
            target: target.to_string_lossy().into_owned(),
        });
        return Ok(());
    }
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        if !args.recursive {
            return Err(CallError::local(
                "adding",
                format!("{} is a directory, use -r to add it", path.display()),
            ));
        }
        entries.push(Entry::Dir { name: name.clone() });
        let mut children: Vec<_> = std::fs::read_dir(path)
            .map_err(io)?
            .collect::<Result<_, _>>()
            .map_err(io)?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let child_name = child.file_name().to_string_lossy().into_owned();
            if child_name.starts_with('.') && !args.hidden {
                continue;
            }
            walk(
                &child.path(),
                format!("{name}/{child_name}"),
                args,
                entries,
                false,
            )?;
        }
    } else {
        entries.push(Entry::File {
            name,
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    Ok(())
}

/// Go's `url.QueryEscape`: what boxo does to every part's filename.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The header of one part, with the boundary line before it.
fn part_header(boundary: &str, first: bool, name: &str, content_type: &str) -> Vec<u8> {
    let sep = if first { "" } else { "\r\n" };
    format!(
        "{sep}--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
         Content-Type: {content_type}\r\n\r\n",
        query_escape(name)
    )
    .into_bytes()
}

/// A piece of the body: bytes we hold, or a file read when its turn comes.
enum Segment {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// The multipart body of `entries`, streamed: files are read chunk by
/// chunk as the request goes out, never held whole.
fn multipart(entries: Vec<Entry>, progress: bool) -> RequestBody {
    let boundary = format!("{:032x}", rand::random::<u128>());
    let (segments, total, names) = frame(entries, &boundary);
    let describe = format!("multipart body, one part per entry: {}", names.join(", "));
    let progress = progress.then(|| Progress::new(total));
    RequestBody {
        content_type: format!("multipart/form-data; boundary={boundary}"),
        body: reqwest::Body::wrap_stream(body_stream(segments, progress)),
        describe,
    }
}

/// The body's pieces, the bytes of file content, and a line per entry for
/// `--debug`.
fn frame(entries: Vec<Entry>, boundary: &str) -> (Vec<Segment>, u64, Vec<String>) {
    let mut segments = Vec::new();
    let mut total = 0u64;
    let mut names = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let first = i == 0;
        match entry {
            Entry::Dir { name } => {
                segments.push(Segment::Bytes(part_header(
                    boundary,
                    first,
                    &name,
                    "application/x-directory",
                )));
                names.push(format!("{name}/"));
            }
            Entry::File { name, path, len } => {
                segments.push(Segment::Bytes(part_header(
                    boundary,
                    first,
                    &name,
                    "application/octet-stream",
                )));
                segments.push(Segment::File(path));
                total += len;
                names.push(format!("{name} ({len} bytes)"));
            }
            Entry::Symlink { name, target } => {
                let mut bytes = part_header(boundary, first, &name, "application/symlink");
                bytes.extend_from_slice(target.as_bytes());
                segments.push(Segment::Bytes(bytes));
                names.push(format!("{name} -> {target}"));
            }
        }
    }
    segments.push(Segment::Bytes(
        format!("\r\n--{boundary}--\r\n").into_bytes(),
    ));
    (segments, total, names)
}

fn body_stream(
    segments: Vec<Segment>,
    progress: Option<Progress>,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    struct State {
        segments: std::vec::IntoIter<Segment>,
        file: Option<tokio::fs::File>,
        progress: Option<Progress>,
    }
    let state = State {
        segments: segments.into_iter(),
        file: None,
        progress,
    };
    futures::stream::try_unfold(state, |mut st| async move {
        loop {
            if let Some(file) = st.file.as_mut() {
                let mut buf = vec![0; CHUNK];
                let n = file.read(&mut buf).await?;
                if n > 0 {
                    buf.truncate(n);
                    if let Some(p) = st.progress.as_mut() {
                        p.advance(n as u64);
                    }
                    return Ok(Some((buf, st)));
                }
                st.file = None;
            }
            match st.segments.next() {
                Some(Segment::Bytes(b)) => return Ok(Some((b, st))),
                Some(Segment::File(path)) => st.file = Some(tokio::fs::File::open(path).await?),
                None => {
                    if let Some(p) = st.progress.take() {
                        p.finish();
                    }
                    return Ok(None);
                }
            }
        }
    })
    .boxed()
}

/// A one-line progress bar on stderr, redrawn at most ten times a second.
struct Progress {
    total: u64,
    sent: u64,
    drawn: Option<Instant>,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            total,
            sent: 0,
            drawn: None,
        }
    }

    fn advance(&mut self, n: u64) {
        self.sent += n;
        if self
            .drawn
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.drawn = Some(Instant::now());
        let width = 30u64;
        let done = (self.sent * width).checked_div(self.total).unwrap_or(width);
        let bar: String = (0..width)
            .map(|i| if i < done { '#' } else { ' ' })
            .collect();
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r[{bar}] {} / {}",
            super::format::humanize_bytes(self.sent),
            super::format::humanize_bytes(self.total)
        );
        let _ = err.flush();
    }

    fn finish(self) {
        // Erase the bar so the results print on a clean line.
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use futures::TryStreamExt;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: AddArgs,
    }

    fn args(a: &[&str]) -> AddArgs {
        T::try_parse_from(std::iter::once("add").chain(a.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(query_escape("dir/a b+c.txt"), "dir%2Fa+b%2Bc.txt");
        assert_eq!(query_escape("é~_-"), "%C3%A9~_-");
    }

    #[test]
    fn query_as_ctl_sends_it() {
        let q = args(&["x", "y", "--hash", "blake2b-256", "--rmin", "2", "-n", "n"])
            .query()
            .unwrap();
        let get = |k: &str| q.iter().find(|(key, _)| key == k).unwrap().1.as_str();
        assert_eq!(get("wrap-with-directory"), "true");
        assert_eq!(get("cid-version"), "1");
        assert_eq!(get("raw-leaves"), "true");
        assert_eq!(get("stream-channels"), "true");
        assert_eq!(get("shard-size"), "104857600");
        assert_eq!(get("replication-min"), "2");
        assert_eq!(get("mode"), "recursive");
        assert_eq!(get("chunker"), "size-262144");
        let keys: Vec<&str> = q.iter().map(|(k, _)| k.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[tokio::test]
    async fn walks_and_frames_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("top");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("b.txt"), "bee").unwrap();
        std::fs::write(root.join("sub/a b.txt"), "ay").unwrap();
        std::fs::write(root.join(".hidden"), "h").unwrap();

        let mut entries = Vec::new();
        let err = collect(&root, &args(&["x"]), &mut entries).unwrap_err();
        assert!(err.to_string().contains("use -r"), "{err}");

        collect(&root, &args(&["-r", "x"]), &mut entries).unwrap();
        let names: Vec<String> = entries
            .iter()
            .map(|e| match e {
                Entry::Dir { name } | Entry::File { name, .. } | Entry::Symlink { name, .. } => {
                    name.clone()
                }
            })
            .collect();
        assert_eq!(names, ["top", "top/b.txt", "top/sub", "top/sub/a b.txt"]);

        let boundary = "b0undary";
        let (segments, total, _) = frame(entries, boundary);
        assert_eq!(total, 5);
        let chunks: Vec<Vec<u8>> = body_stream(segments, None).try_collect().await.unwrap();
        let text = String::from_utf8(chunks.concat()).unwrap();
        let want = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"top\"\r\n\
             Content-Type: application/x-directory\r\n\r\n\
             \r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"top%2Fb.txt\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nbee\
             \r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"top%2Fsub\"\r\n\
             Content-Type: application/x-directory\r\n\r\n\
             \r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"top%2Fsub%2Fa+b.txt\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nay\
             \r\n--{boundary}--\r\n"
        );
        assert_eq!(text, want);
    }
}
