//! `krio`: the daemon binary and its operator commands.

mod cli;
mod clock;
mod config;
mod container;
mod cri;
mod daemon;
mod deadline;
mod error;
mod events;
mod exec_wait;
mod logging;
mod metrics;
mod reload;
mod sandbox;
mod state;
mod status;
mod streaming;

use anyhow::Context;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    // Before anything else: this process must stay single-threaded.
    if let Some(cli::Command::PodInfra(args)) = &cli.command {
        return sandbox::infra::run_infra(args);
    }
    if let Some(cli::Command::PodUserns(args)) = &cli.command {
        std::process::exit(i32::from(
            sandbox::userns::run_helper(args) != std::process::ExitCode::SUCCESS,
        ));
    }
    if let Some(cli::Command::ExecWait(args)) = &cli.command {
        let code = exec_wait::run(args)?;
        std::process::exit(code);
    }
    let (config, files) =
        config::load(&cli.sources(), &cli.overrides()).context("loading configuration")?;
    match cli.command {
        Some(cli::Command::Config) => {
            let mut out = String::from("# Effective krio configuration.\n");
            if files.is_empty() {
                out.push_str("# Read from: no file (defaults, environment and flags only).\n");
            }
            for f in &files {
                out.push_str(&format!("# Read from: {}\n", f.display()));
            }
            out.push_str(&toml::to_string_pretty(&config).context("serialising configuration")?);
            print!("{out}");
            Ok(())
        }
        Some(cli::Command::PodInfra(ref args)) => sandbox::infra::run_infra(args),
        Some(cli::Command::PodUserns(ref args)) => std::process::exit(i32::from(
            sandbox::userns::run_helper(args) != std::process::ExitCode::SUCCESS,
        )),
        Some(cli::Command::ExecWait(ref args)) => std::process::exit(exec_wait::run(args)?),
        Some(cli::Command::Status(ref args)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(status::run(config, files, args)),
        Some(cli::Command::Version) => {
            println!("krio {}", env!("CARGO_PKG_VERSION"));
            println!(
                "CRI API: {} ({})",
                cri::CRI_API_VERSION,
                krio_proto::UPSTREAM
            );
            Ok(())
        }
        None => {
            let log = logging::init(config.log_level).context("setting up logging")?;
            let reloader = reload::Reloader {
                sources: cli.sources(),
                overrides: cli.overrides(),
                log,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("krio")
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(daemon::run(config, files, reloader))
        }
    }
}
