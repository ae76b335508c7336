//! `loopchat-server`: parse the flags, run the event loop, turn the outcome into an exit status
//! (0 after a clean shutdown, 1 on a runtime error, 2 on a usage error).

use std::process::ExitCode;

use loopchat::config::{self, Parsed};
use loopchat::{notice, server};

fn main() -> ExitCode {
    // Diagnostics go to stderr with timestamps; stdout is the transcript.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let program = "loopchat-server";
    match config::parse(program, &args[1..]) {
        Ok(Parsed::Help(usage)) => {
            print!("{usage}");
            ExitCode::SUCCESS
        }
        Ok(Parsed::Version) => {
            println!("{program} {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: {e}\n\n{}", config::usage(program));
            ExitCode::from(2)
        }
        Ok(Parsed::Run(config)) => match server::run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}", notice::fatal(e));
                ExitCode::FAILURE
            }
        },
    }
}
