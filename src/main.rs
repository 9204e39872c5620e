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
        purge_freed_memory_at_once();
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

/// mimalloc's option for when freed memory goes back to the system.
const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

/// Makes a long-running peer hand freed memory back to the system at once.
/// mimalloc returns it a second after it is freed (`purge_delay`), but only
/// when some thread calls into the allocator again later: once a peer goes
/// quiet after a burst (a million pins queued at start, a listing), its
/// threads do not, and the pages stayed resident for as long as it stayed
/// quiet (about 50 MiB of an idle peer holding 1,000,000 pins,
/// BENCHMARKS.md, issue 13). mimalloc reads its options from the
/// environment once, before `main`, and setting one from Rust needs
/// `unsafe`, which this crate forbids: so the process runs itself again
/// (same PID, arguments and descriptors) with `MIMALLOC_PURGE_DELAY=0`,
/// unless that variable was already set (then it is the operator's choice).
/// Should that fail, the peer runs on with the default.
fn purge_freed_memory_at_once() {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        if std::env::var_os(PURGE_DELAY).is_some() {
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
        // Returns only if the process could not be replaced.
        let error = again.args(args).env(PURGE_DELAY, "0").exec();
        eprintln!("pincluster: freed memory is returned lazily ({error})");
    }
}
