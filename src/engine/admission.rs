//! Who may come in: the cap on clients in all and per address. Pure.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::notice;

/// The caps on who may be connected: in all, and per address.
pub struct Admission {
    max_clients: usize,
    max_per_ip: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    pub fn new(max_clients: usize, max_per_ip: usize) -> Admission {
        Admission {
            max_clients,
            max_per_ip,
            per_ip: HashMap::new(),
        }
    }

    /// Counts a new client in, or says why it may not come in.
    pub fn admit(&mut self, ip: IpAddr, clients: usize) -> Result<(), &'static str> {
        if clients >= self.max_clients {
            return Err(notice::SERVER_FULL);
        }
        if self.max_per_ip == 0 || is_exempt(ip) {
            return Ok(());
        }
        let count = self.per_ip.entry(ip).or_default();
        if *count >= self.max_per_ip {
            return Err(notice::TOO_MANY_FROM_ADDRESS);
        }
        *count += 1;
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
/// (127.0.0.2 and up) count like any other, which is how the cap itself is tested.
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

    #[test]
    fn caps_in_all_and_per_address() {
        let mut a = Admission::new(3, 1);
        let remote: IpAddr = "10.0.0.1".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(a.admit(remote, 0), Ok(()));
        assert_eq!(a.admit(remote, 1), Err(notice::TOO_MANY_FROM_ADDRESS));
        assert_eq!(a.admit(local, 1), Ok(()));
        assert_eq!(a.admit(local, 2), Ok(()), "127.0.0.1 is exempt");
        assert_eq!(a.admit(local, 3), Err(notice::SERVER_FULL));
        a.release(remote);
        assert_eq!(a.admit(remote, 2), Ok(()));
        assert!(is_exempt("::1".parse().unwrap()));
        assert!(!is_exempt("127.0.0.2".parse().unwrap()));
    }
}
