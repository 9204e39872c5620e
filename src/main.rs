//! The `pincluster` binary: parse, run, exit with the command's code.

use clap::Parser;

// The merge and commit paths allocate many small buffers; mimalloc handles
// that at about 1.3x the speed of glibc's allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Our own news at info; the storage and network libraries only when
/// something is wrong. `PINCLUSTER_LOG` takes any `tracing` filter.
const DEFAULT_LOG: &str = "info,fjall=warn,lsm_tree=warn,libp2p=warn,libp2p_kad=error";

#[tokio::main]
async fn main() {
    // Usage errors exit 1 like ipfs-cluster-ctl (clap's 2 would read as
    // "the API returned an error"); --help and --version exit 0.
    let cli = match pincluster::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    if matches!(
        cli.command,
        pincluster::cli::Command::Daemon(_) | pincluster::cli::Command::Follow(_)
    ) {
        tune_allocator();
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PINCLUSTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .init();
    std::process::exit(pincluster::cli::run(cli).await);
}

/// mimalloc's options a long-running peer sets, unless the operator set
/// them: mimalloc reads them from the environment once, before `main`.
///
/// `MIMALLOC_PURGE_DELAY=0` hands freed memory back to the system at once.
/// mimalloc returns it a second after it is freed, but only when some
/// thread calls into the allocator again later: once a peer goes quiet
/// after a burst (a million pins queued at start, a listing), its threads
/// do not, and the pages stayed resident for as long as it stayed quiet
/// (about 50 MiB of an idle peer holding 1,000,000 pins).
///
/// `MIMALLOC_ALLOW_THP=0` keeps mimalloc from asking for transparent huge
/// pages. Where the kernel grants them on request (`madvise`, Debian's
/// default), a 2 MiB page stays resident whole while any object in it
/// lives: at its peak, 74 of the 140 MiB of heap of a peer holding
/// 1,000,000 pins were such pages, and its first minute peaked at 159 MiB
/// instead of 109 (BENCHMARKS.md, issue 13).
const ALLOCATOR_OPTIONS: [(&str, &str); 2] =
    [("MIMALLOC_PURGE_DELAY", "0"), ("MIMALLOC_ALLOW_THP", "0")];

/// Sets [`ALLOCATOR_OPTIONS`] for the daemon and `follow`. Setting one from
/// Rust needs `unsafe`, which this crate forbids, so the process runs
/// itself again (same PID, arguments and descriptors) with the options the
/// environment lacks; one the operator set is left as it is. Should that
/// fail, the peer runs on with mimalloc's defaults.
fn tune_allocator() {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let missing: Vec<_> = ALLOCATOR_OPTIONS
            .iter()
            .filter(|(name, _)| std::env::var_os(name).is_none())
            .collect();
        if missing.is_empty() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut again = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            again.arg0(arg0);
        }
        again.args(args);
        for (name, value) in missing {
            again.env(name, value);
        }
        // Returns only if the process could not be replaced.
        let error = again.exec();
        eprintln!("pincluster: the allocator keeps its defaults ({error})");
    }
}
