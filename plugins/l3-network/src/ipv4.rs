//! IPv4 arithmetic for ranges and allocation, on `u32` addresses.

use flatstack_kernel::Fault;
use std::net::Ipv4Addr;

/// Parses a dotted IPv4 address; `field` names it in the fault.
pub fn parse(field: &str, text: &str) -> Result<u32, Fault> {
    text.parse::<Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| Fault::invalid(field, format!("{field} `{text}` is not an IPv4 address")))
}

pub fn dotted(ip: u32) -> String {
    Ipv4Addr::from(ip).to_string()
}

/// A validated range of addresses an L3 network hands out, in one subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u32,
    pub end: u32,
    pub mask: u32,
    pub gateway: u32,
}

impl Range {
    /// Validates a range as given by a client; every fault names the field at fault.
    pub fn parse(start: &str, end: &str, netmask: &str, gateway: &str) -> Result<Range, Fault> {
        let start = parse("start_ip", start)?;
        let end = parse("end_ip", end)?;
        let mask = parse("netmask", netmask)?;
        let gateway = parse("gateway", gateway)?;
        // A mask is some ones then only zeros; /0 is no subnet to speak of.
        if mask.leading_ones() + mask.trailing_zeros() != 32 || mask == 0 {
            return Err(Fault::invalid(
                "netmask",
                format!("netmask `{netmask}` is not a contiguous mask of 1 to 32 bits"),
            ));
        }
        let range = Range {
            start,
            end,
            mask,
            gateway,
        };
        if start > end {
            return Err(Fault::invalid(
                "end_ip",
                format!("end_ip {} is below start_ip {}", dotted(end), dotted(start)),
            ));
        }
        let cidr = range.cidr();
        for (field, ip) in [("end_ip", end), ("gateway", gateway)] {
            if ip & mask != range.network() {
                return Err(Fault::invalid(
                    field,
                    format!(
                        "{field} {} is outside {cidr}, the subnet of start_ip",
                        dotted(ip)
                    ),
                ));
            }
        }
        if (start..=end).contains(&gateway) {
            return Err(Fault::invalid(
                "gateway",
                format!(
                    "gateway {} is inside the range {}-{}",
                    dotted(gateway),
                    dotted(start),
                    dotted(end)
                ),
            ));
        }
        // /31 and /32 have no network or broadcast address (RFC 3021); others do.
        if range.prefix() <= 30 {
            let reserved = [range.network(), range.broadcast()];
            for (field, ip) in [("start_ip", start), ("end_ip", end), ("gateway", gateway)] {
                if reserved.contains(&ip) {
                    return Err(Fault::invalid(
                        field,
                        format!(
                            "{field} {} is the network or broadcast address of {cidr}",
                            dotted(ip)
                        ),
                    ));
                }
            }
        }
        Ok(range)
    }

    pub fn prefix(&self) -> u32 {
        self.mask.leading_ones()
    }

    pub fn network(&self) -> u32 {
        self.start & self.mask
    }

    fn broadcast(&self) -> u32 {
        self.network() | !self.mask
    }

    /// The subnet, e.g. `192.168.0.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", dotted(self.network()), self.prefix())
    }

    pub fn contains(&self, ip: u32) -> bool {
        (self.start..=self.end).contains(&ip)
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flatstack_kernel::FaultCode;

    fn field(result: Result<Range, Fault>) -> String {
        let fault = result.expect_err("invalid");
        assert_eq!(fault.code, FaultCode::InvalidArgument);
        fault.detail_str("field").unwrap_or_default().to_owned()
    }

    #[test]
    fn a_good_range() {
        let r = Range::parse(
            "192.168.0.10",
            "192.168.0.250",
            "255.255.255.0",
            "192.168.0.1",
        )
        .expect("valid");
        assert_eq!(r.cidr(), "192.168.0.0/24");
        assert!(r.contains(parse("x", "192.168.0.10").unwrap()));
        assert!(!r.contains(parse("x", "192.168.0.251").unwrap()));
        let r = Range::parse("10.0.0.1", "10.0.0.1", "255.255.255.254", "10.0.0.0").unwrap();
        assert_eq!(r.cidr(), "10.0.0.0/31");
    }

    #[test]
    fn bad_ranges_name_the_field() {
        let ok = [
            "192.168.0.10",
            "192.168.0.20",
            "255.255.255.0",
            "192.168.0.1",
        ];
        let with = |i: usize, v: &str| {
            let mut a = ok;
            a[i] = v;
            field(Range::parse(a[0], a[1], a[2], a[3]))
        };
        assert_eq!(with(0, "192.168.0"), "start_ip");
        assert_eq!(with(1, "x"), "end_ip");
        assert_eq!(with(2, "255.0.255.0"), "netmask");
        assert_eq!(with(2, "0.0.0.0"), "netmask");
        assert_eq!(with(3, "::1"), "gateway");
        assert_eq!(with(1, "192.168.0.5"), "end_ip", "end below start");
        assert_eq!(with(1, "192.168.1.20"), "end_ip", "other subnet");
        assert_eq!(with(3, "10.0.0.1"), "gateway", "other subnet");
        assert_eq!(with(3, "192.168.0.15"), "gateway", "inside the range");
        assert_eq!(
            field(Range::parse(
                "192.168.0.0",
                "192.168.0.20",
                "255.255.255.0",
                "192.168.0.254"
            )),
            "start_ip",
            "network address"
        );
        assert_eq!(with(1, "192.168.0.255"), "end_ip", "broadcast address");
        assert_eq!(with(3, "192.168.0.255"), "gateway", "broadcast address");
    }

    #[test]
    fn overlap() {
        let a = Range::parse("10.0.0.10", "10.0.0.20", "255.255.255.0", "10.0.0.1").unwrap();
        let b = Range::parse("10.0.0.20", "10.0.0.30", "255.255.255.0", "10.0.0.1").unwrap();
        let c = Range::parse("10.0.0.21", "10.0.0.30", "255.255.255.0", "10.0.0.1").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }
}
