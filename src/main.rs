//! The pincluster peer. The command line (`init`, `daemon`, the client
//! commands) arrives with the cluster issue; until then the binary reports
//! its version and what it links.

// The merge and commit paths allocate many small buffers; mimalloc handles
// that at about 1.3x the speed of glibc's allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let name = env!("CARGO_PKG_NAME");
    let version = env!("CARGO_PKG_VERSION");
    let format = pincluster_crdt::FORMAT_VERSION;
    eprintln!("{name} {version} (delta block format v{format})");
}
