//! `krio-monitor`: the per-container monitor. See
//! `krio_runtime::monitor` for what it does and its protocols.

fn main() -> std::process::ExitCode {
    krio_runtime::monitor::monitor_main()
}
