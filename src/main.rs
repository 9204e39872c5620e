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
