//! `state export|import|cleanup`: the pinset of a stopped peer, in
//! ipfs-cluster's export format (see [`crate::consensus::offline`]).

use std::fs::File;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use libp2p::PeerId;

use crate::config::{self, Config};
use crate::consensus::offline::{ImportOverrides, OfflineFolder};
use crate::identity::Identity;

/// `pincluster state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Configuration folder [default: $PINCLUSTER_PATH, else ~/.pincluster].
    #[arg(long, short = 'c', value_name = "DIR", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: StateCmd,
}

/// What to do with the pinset.
#[derive(Debug, Subcommand)]
pub enum StateCmd {
    /// Write every pin as a JSON object per line (the daemon must be stopped)
    Export {
        /// Write to this file instead of stdout.
        #[arg(long, short = 'f', value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Replace the pinset with the pins of an export (the daemon must be
    /// stopped); the input is checked whole before anything changes
    Import {
        /// The export to read; stdin when absent.
        file: Option<PathBuf>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'f')]
        force: bool,
        /// Set this minimum replication factor on every pin.
        #[arg(
            long = "replication-min",
            visible_alias = "rmin",
            allow_negative_numbers = true
        )]
        replication_min: Option<i32>,
        /// Set this maximum replication factor on every pin.
        #[arg(
            long = "replication-max",
            visible_alias = "rmax",
            allow_negative_numbers = true
        )]
        replication_max: Option<i32>,
        /// Allocate every pin to these peers (comma-separated ids).
        #[arg(long, visible_alias = "allocs", value_delimiter = ',')]
        allocations: Option<Vec<PeerId>>,
    },
    /// Remove the whole pinset and its history (the daemon must be stopped)
    Cleanup {
        /// Do not ask for confirmation.
        #[arg(long, short = 'f')]
        force: bool,
    },
}

/// Runs a `state` command; returns the exit code (1 on any failure, as
/// ipfs-cluster-service does).
pub(super) fn run(args: StateArgs) -> i32 {
    let dir = args.config.unwrap_or_else(config::default_config_dir);
    match execute(&dir, args.cmd) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn execute(dir: &Path, cmd: StateCmd) -> anyhow::Result<()> {
    let loaded = Config::load(dir)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let identity = Identity::load(dir)?;
    let folder = OfflineFolder::lock(dir, loaded.config)?;
    match cmd {
        StateCmd::Export { file } => {
            let n = match file {
                Some(path) => {
                    let mut f = std::io::BufWriter::new(
                        File::create(&path)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                    );
                    folder.export(&identity, &mut f)?
                }
                // Stdout alone is line-buffered: a write call per pin.
                None => folder.export(
                    &identity,
                    &mut std::io::BufWriter::new(std::io::stdout().lock()),
                )?,
            };
            eprintln!("exported {n} pins");
        }
        StateCmd::Import {
            file,
            force,
            replication_min,
            replication_max,
            allocations,
        } => {
            confirm(
                force,
                "The pinset of this peer will be replaced by the imported one.",
            )?;
            let overrides = ImportOverrides {
                replication_min,
                replication_max,
                allocations,
            };
            let n = match file {
                Some(path) => {
                    let f = File::open(&path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    folder.import(&identity, f, &overrides)?
                }
                None => folder.import(&identity, std::io::stdin(), &overrides)?,
            };
            eprintln!("imported {n} pins");
        }
        StateCmd::Cleanup { force } => {
            confirm(
                force,
                "The pinset of this peer and its whole history will be removed.",
            )?;
            folder.cleanup()?;
            eprintln!("state removed");
        }
    }
    Ok(())
}

/// Asks `[y/n]` on a terminal; without one, only `--force` proceeds.
fn confirm(force: bool, what: &str) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!("{what} Run again with --force to confirm.");
    }
    eprint!("{what} Continue? [y/n]: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => anyhow::bail!("aborted"),
    }
}
