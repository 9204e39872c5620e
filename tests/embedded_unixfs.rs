//! The embedded node's UnixFS importer against real Kubo 0.43.1: for the
//! same bytes and options, `ipfs add --only-hash` (an offline repo) and
//! our importer give the same root CID, for files of many sizes and
//! folders, across CID versions, raw leaves, chunk sizes, balanced and
//! trickle layouts, and wrapping.

mod common;

use std::path::Path;
use std::process::Command;

use common::kubo::real_bin;
use pincluster::ipfs::unixfs::AddOptions;
use pincluster::ipfs::unixfs::importer::{Discard, Tree, import_file};

/// Deterministic bytes that do not compress into repeats.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Repo(tempfile::TempDir);

impl Repo {
    fn new() -> Repo {
        let dir = common::temp();
        let out = Command::new(real_bin("ipfs"))
            .args(["init", "--profile", "test", "--empty-repo"])
            .env("IPFS_PATH", dir.path().join("repo"))
            .output()
            .expect("run ipfs init");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Repo(dir)
    }

    /// `ipfs add --only-hash -Q <args> <path>`: the root CID Kubo makes.
    fn add(&self, args: &[&str], path: &Path) -> String {
        let out = Command::new(real_bin("ipfs"))
            .args(["add", "--only-hash", "-Q"])
            .args(args)
            .arg(path)
            .env("IPFS_PATH", self.0.path().join("repo"))
            .output()
            .expect("run ipfs add");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The options as our importer takes them, from Kubo's flags.
fn options(args: &[&str]) -> (AddOptions, bool) {
    let get = |key: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{key}=")).map(str::to_string))
            .or_else(|| {
                args.contains(&format!("--{key}").as_str())
                    .then(String::new)
            })
    };
    let flag = |key: &str, default: bool| match get(key) {
        None => Ok(default),
        Some(v) => Ok(v.is_empty() || v == "true"),
    };
    let opts = AddOptions::from_query(get, flag).expect("valid options");
    (opts, args.contains(&"-w"))
}

/// Our root CID for `path` (a file, or a folder walked as `ipfs add -r`
/// sends it), with `args`.
fn ours(args: &[&str], path: &Path) -> String {
    let (opts, wrap) = options(args);
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let mut tree = Tree::default();
    if path.is_dir() {
        tree.add_dir(&name).unwrap();
        add_dir(&mut tree, path, &name, &opts);
    } else {
        let made = import_file(std::fs::File::open(path).unwrap(), &opts, &mut Discard).unwrap();
        if !wrap {
            return made.cid.to_string();
        }
        tree.add_file(&name, made).unwrap();
    }
    let (roots, _) = tree.finish(wrap, &opts, &mut Discard).unwrap();
    roots[0].made.cid.to_string()
}

fn add_dir(tree: &mut Tree, dir: &Path, prefix: &str, opts: &AddOptions) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}/{}", entry.file_name().to_str().unwrap());
        if entry.path().is_dir() {
            tree.add_dir(&name).unwrap();
            add_dir(tree, &entry.path(), &name, opts);
        } else {
            let f = std::fs::File::open(entry.path()).unwrap();
            tree.add_file(&name, import_file(f, opts, &mut Discard).unwrap())
                .unwrap();
        }
    }
}

#[test]
fn importer_cids_equal_kubos() {
    let repo = Repo::new();
    let work = common::temp();
    let file = |name: &str, len: usize, seed: u64| {
        let path = work.path().join(name);
        std::fs::write(&path, bytes(seed, len)).unwrap();
        path
    };
    let empty = file("empty", 0, 1);
    let small = file("small.txt", 1000, 2);
    let one_chunk = file("one_chunk", 256 * 1024, 3);
    let two_chunks = file("two_chunks", 256 * 1024 + 1, 4);
    let medium = file("medium", 3 * 1024 * 1024 + 17, 5);
    // 175 chunks of 1 KiB: one more than a node holds, so the tree grows
    // a level; 900 chunks make trickle nest several layers deep.
    let wide = file("wide", 175 * 1024, 6);
    let deep = file("deep", 900 * 1024 + 5, 7);

    let folder = work.path().join("folder");
    std::fs::create_dir_all(folder.join("sub/inner")).unwrap();
    std::fs::create_dir_all(folder.join("empty_dir")).unwrap();
    std::fs::write(folder.join("a.txt"), bytes(8, 10)).unwrap();
    std::fs::write(folder.join("B.bin"), bytes(9, 300 * 1024)).unwrap();
    std::fs::write(folder.join("sub/c"), bytes(10, 5000)).unwrap();
    std::fs::write(folder.join("sub/inner/d"), bytes(11, 0)).unwrap();

    let cases: Vec<(&[&str], &Path)> = vec![
        (&[], &empty),
        (&[], &small),
        (&[], &one_chunk),
        (&[], &two_chunks),
        (&[], &medium),
        (&["--cid-version=1"], &small),
        (&["--cid-version=1"], &medium),
        (&["--raw-leaves"], &medium),
        (&["--cid-version=1", "--raw-leaves=false"], &medium),
        (&["--chunker=size-1024"], &wide),
        (&["--chunker=size-1024", "--raw-leaves"], &wide),
        (&["--chunker=size-1024", "--trickle"], &deep),
        (
            &["--chunker=size-1024", "--trickle", "--cid-version=1"],
            &deep,
        ),
        (&["--trickle"], &small),
        (&["--trickle"], &empty),
        (&["-w"], &small),
        (&["-w", "--cid-version=1"], &medium),
        (&["-r"], &folder),
        (&["-r", "--cid-version=1"], &folder),
        (
            &["-r", "-w", "--chunker=size-4096", "--raw-leaves"],
            &folder,
        ),
    ];
    let mut wrong = Vec::new();
    for (args, path) in &cases {
        let kubo = repo.add(args, path);
        let mine = ours(args, path);
        if kubo != mine {
            wrong.push(format!(
                "{args:?} {}: Kubo {kubo}, ours {mine}",
                path.display()
            ));
        }
    }
    assert!(wrong.is_empty(), "CIDs differ:\n{}", wrong.join("\n"));
    assert_eq!(cases.len(), 20);
}
