//! `loopchat-client`: the command line of the bundled client; the client itself is
//! `loopchat::client`.

use std::process::ExitCode;

use getopts::Options;
use loopchat::client::{self, Config, Verify};

const PROGRAM: &str = "loopchat-client";

fn options() -> Options {
    let mut opts = Options::new();
    opts.optopt(
        "H",
        "host",
        "server host name or address (default localhost)",
        "HOST",
    );
    opts.optopt("p", "port", "server port (default 1234)", "PORT");
    opts.optopt("n", "nick", "take this name on connect (TCP only)", "NICK");
    opts.optflag("", "udp", "send each line as one UDP datagram instead");
    opts.optflag(
        "",
        "tls",
        "speak TLS, verifying the server against the system's root certificates",
    );
    opts.optopt(
        "",
        "ca",
        "with --tls: trust the certificates in this PEM file instead",
        "FILE",
    );
    opts.optflag(
        "",
        "insecure",
        "with --tls: accept any certificate (encrypted, but the server is not verified)",
    );
    opts.optflag("h", "help", "print this help and exit");
    opts.optflag("V", "version", "print the version and exit");
    opts
}

fn usage(opts: &Options) -> String {
    let brief = format!(
        "Usage: {PROGRAM} [-H HOST] [-p PORT] [-n NICK] [--udp | --tls [--ca FILE | --insecure]]\n\n\
         Connects to a loopchat server, prints what it sends and sends each line of stdin.\n\
         At end of stdin it waits for the server to close. On a terminal without --nick it\n\
         asks for a name first. With --tls the server's certificate must name HOST, and for\n\
         a self-signed one (`make cert`) use --ca cert.pem."
    );
    opts.usage(&brief)
}

/// Turns the arguments into a config, `Err` with the message for a usage error.
fn parse(opts: &Options, args: &[String]) -> Result<Option<Config>, String> {
    let m = opts.parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        print!("{}", usage(opts));
        return Ok(None);
    }
    if m.opt_present("version") {
        println!("{PROGRAM} {}", env!("CARGO_PKG_VERSION"));
        return Ok(None);
    }
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument: {extra}"));
    }
    let port = match m.opt_str("port") {
        None => 1234,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("invalid port: {p} (use 1 to 65535)")),
        },
    };
    let nick = m.opt_str("nick");
    if let Some(nick) = &nick {
        // The server checks the name; here we only keep it from becoming two lines.
        if nick.is_empty() || nick.chars().any(char::is_control) {
            return Err(format!("invalid nick: {nick:?}"));
        }
        if m.opt_present("udp") {
            return Err(
                "--nick does not apply to --udp (the server names UDP senders by \
                        their address)"
                    .into(),
            );
        }
    }
    let tls = match (
        m.opt_present("tls"),
        m.opt_str("ca"),
        m.opt_present("insecure"),
    ) {
        (true, _, _) if m.opt_present("udp") => {
            return Err("--tls does not apply to --udp (TLS is over TCP)".into());
        }
        (true, Some(_), true) => return Err("--ca and --insecure: choose one".into()),
        (true, Some(ca), false) => Some(Verify::Ca(ca.into())),
        (true, None, true) => Some(Verify::Insecure),
        (true, None, false) => Some(Verify::System),
        (false, Some(_), _) => return Err("--ca needs --tls".into()),
        (false, None, true) => return Err("--insecure needs --tls".into()),
        (false, None, false) => None,
    };
    Ok(Some(Config {
        host: m.opt_str("host").unwrap_or_else(|| "localhost".into()),
        port,
        nick,
        udp: m.opt_present("udp"),
        tls,
    }))
}

fn main() -> ExitCode {
    env_logger::init();
    let opts = options();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse(&opts, &args) {
        Ok(Some(config)) => config,
        Ok(None) => return ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("{PROGRAM}: {msg}\n\n{}", usage(&opts));
            return ExitCode::from(2);
        }
    };
    match client::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::FAILURE
        }
    }
}
