//! Who may come in: the caps on clients in all and per address, and on how fast one address may
//! open connections. Pure.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use crate::config::Config;
use crate::notice;
use crate::rate::Budgets;

/// Addresses whose connection budget is remembered at once (see [`Budgets`]).
const CONNECTING_ADDRESSES: usize = 4096;

/// Why a connection was refused, for the line it is sent and for `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Full,
    PerAddress,
    ConnectRate,
}

impl Refusal {
    pub fn line(self) -> &'static str {
        match self {
            Refusal::Full => notice::SERVER_FULL,
            Refusal::PerAddress => notice::TOO_MANY_FROM_ADDRESS,
            Refusal::ConnectRate => notice::TOO_MANY_NEW_CONNECTIONS,
        }
    }
}

pub struct Admission {
    max_clients: usize,
    max_sockets: usize,
    max_per_ip: usize,
    limit_loopback: bool,
    per_ip: HashMap<IpAddr, usize>,
    connects: Budgets<IpAddr>,
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        Admission {
            max_clients: config.max_clients,
            max_sockets: config.max_sockets,
            max_per_ip: config.max_per_ip,
            limit_loopback: config.limit_loopback,
            per_ip: HashMap::new(),
            connects: Budgets::new(config.connect_rate, CONNECTING_ADDRESSES),
        }
    }

    /// Counts a new client in, or says why it may not come in. `clients` are those in the
    /// room: one that has left but whose socket still drains no longer takes a place (the
    /// descriptor headroom, `sockets`, still bounds those).
    pub fn admit(
        &mut self,
        ip: IpAddr,
        clients: usize,
        sockets: usize,
        now: Instant,
    ) -> Result<(), Refusal> {
        if clients >= self.max_clients || sockets >= self.max_sockets {
            return Err(Refusal::Full);
        }
        if !self.limit_loopback && is_exempt(ip) {
            return Ok(());
        }
        let held = self.per_ip.get(&ip).copied().unwrap_or(0);
        if self.max_per_ip > 0 && held >= self.max_per_ip {
            return Err(Refusal::PerAddress);
        }
        // Every attempt that gets this far spends from the address's budget, refused or not:
        // a script reconnecting in a loop stays refused.
        if !self.connects.allows(ip, now) {
            return Err(Refusal::ConnectRate);
        }
        if self.max_per_ip > 0 {
            self.per_ip.insert(ip, held + 1);
        }
        Ok(())
    }

    /// Counts a client out.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// 127.0.0.1 and ::1 are where local tools and load tests come from. Other loopback addresses
/// (127.0.0.2 and up) count like any other, which is how the caps themselves are tested.
fn is_exempt(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => {
            v6 == Ipv6Addr::LOCALHOST || v6.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Parsed};

    fn admission(flags: &[&str]) -> Admission {
        let Ok(Parsed::Run(mut config)) = config::parse("test", flags) else {
            panic!("bad flags {flags:?}");
        };
        config.max_sockets = 6;
        Admission::new(&config)
    }

    #[test]
    fn caps_in_all_and_per_address() {
        let t = Instant::now();
        let mut a = admission(&["--max-clients", "3", "--max-per-ip", "1"]);
        let remote: IpAddr = "10.0.0.1".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(a.admit(remote, 0, 0, t), Ok(()));
        assert_eq!(a.admit(remote, 1, 1, t), Err(Refusal::PerAddress));
        assert_eq!(a.admit(local, 1, 1, t), Ok(()));
        assert_eq!(a.admit(local, 2, 2, t), Ok(()), "127.0.0.1 is exempt");
        assert_eq!(a.admit(local, 3, 3, t), Err(Refusal::Full));
        assert_eq!(
            a.admit(local, 2, 5, t),
            Ok(()),
            "leaving sockets take no place"
        );
        assert_eq!(
            a.admit(local, 2, 6, t),
            Err(Refusal::Full),
            "up to the headroom"
        );
        a.release(remote);
        assert_eq!(a.admit(remote, 2, 2, t), Ok(()));
        assert!(is_exempt("::1".parse().unwrap()));
        assert!(!is_exempt("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn connections_per_second_per_address() {
        let t = Instant::now();
        let mut a = admission(&["--connect-rate", "2", "--max-per-ip", "0"]);
        let remote: IpAddr = "10.0.0.1".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let admitted = (0..10).filter(|_| a.admit(remote, 0, 0, t).is_ok()).count();
        assert_eq!(admitted, 4, "a burst of twice the rate");
        assert_eq!(a.admit(remote, 0, 0, t), Err(Refusal::ConnectRate));
        assert!((0..10).all(|_| a.admit(local, 0, 0, t).is_ok()), "loopback");
        let later = t + std::time::Duration::from_millis(500);
        assert_eq!(
            a.admit(remote, 0, 0, later),
            Ok(()),
            "one more every half second"
        );

        let mut a = admission(&["--connect-rate", "2", "--limit-loopback"]);
        let admitted = (0..10).filter(|_| a.admit(local, 0, 0, t).is_ok()).count();
        assert_eq!(admitted, 4, "--limit-loopback");
    }
}
