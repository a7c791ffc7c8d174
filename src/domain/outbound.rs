//! Where the server may send requests to URLs operators give it (postback endpoints): over
//! `https`, to public addresses only, unless the settings allow plain `http` or private
//! networks (a receiver on the same host or network, for testing).
//!
//! A URL is checked when it is saved (its scheme, and its host when that is an IP address: a
//! name is not resolved then) and again at each delivery, on every address its name resolves
//! to, so that a name that later points inside the network (DNS rebinding) reaches nothing
//! there.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::postback::Postbacks;

/// What outbound requests may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundRules {
    /// Plain `http` URLs are taken (`POSTBACK_ALLOW_HTTP`).
    pub allow_http: bool,
    /// Loopback, private, link-local and other non-public addresses are reached
    /// (`POSTBACK_ALLOW_PRIVATE_NETWORKS`).
    pub allow_private_networks: bool,
}

/// Why a URL or an address is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not `https` (`http` while it is not allowed, or another scheme).
    Scheme(String),
    /// An address that is not on the public internet.
    Address(IpAddr),
    /// `localhost`, which is loopback by definition (RFC 6761).
    Localhost,
    /// A name none of whose addresses may be reached.
    Resolved { host: String, addresses: Vec<IpAddr> },
    /// Not a URL with a host.
    NotAUrl,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scheme(scheme) if scheme == "http" => {
                f.write_str("must be an https URL (plain http is allowed only with POSTBACK_ALLOW_HTTP=true)")
            }
            Self::Scheme(scheme) => write!(f, "must be an https URL, not {scheme}"),
            Self::Address(ip) => write!(
                f,
                "{ip} is not a public address ({}); postbacks go to public addresses only \
                 (POSTBACK_ALLOW_PRIVATE_NETWORKS=true allows others)",
                kind_of(*ip).unwrap_or("reserved")
            ),
            Self::Localhost => f.write_str(
                "localhost is not a public address; postbacks go to public addresses only \
                 (POSTBACK_ALLOW_PRIVATE_NETWORKS=true allows others)",
            ),
            Self::Resolved { host, addresses } => {
                let shown: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
                write!(
                    f,
                    "{host} resolves to no public address ({}); postbacks go to public addresses \
                     only (POSTBACK_ALLOW_PRIVATE_NETWORKS=true allows others)",
                    if shown.is_empty() {
                        "none at all".to_owned()
                    } else {
                        shown.join(", ")
                    }
                )
            }
            Self::NotAUrl => f.write_str("is not an http(s) URL with a host"),
        }
    }
}

impl OutboundRules {
    /// The URL alone: its scheme, and its host if that is an address (or `localhost`). A name
    /// is accepted here; its addresses are checked when it is resolved.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(Refused::Scheme(other.to_owned())),
        }
        match url.host().ok_or(Refused::NotAUrl)? {
            url::Host::Ipv4(ip) => self.check_address(ip.into()),
            url::Host::Ipv6(ip) => self.check_address(ip.into()),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let local = name == "localhost" || name.ends_with(".localhost");
                if local && !self.allow_private_networks {
                    return Err(Refused::Localhost);
                }
                Ok(())
            }
        }
    }

    /// Every endpoint's URL; the first refused is named by its field (`postbacks[1].url`).
    pub fn check_postbacks(&self, postbacks: &Postbacks) -> Result<(), (String, Refused)> {
        for (i, endpoint) in postbacks.as_slice().iter().enumerate() {
            let checked = (url::Url::parse(endpoint.url.as_str()).map_err(|_| Refused::NotAUrl))
                .and_then(|url| self.check_url(&url));
            checked.map_err(|refused| (format!("postbacks[{i}].url"), refused))?;
        }
        Ok(())
    }

    /// One address, as resolved or as written in a URL.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.allow_private_networks || kind_of(ip).is_none() {
            Ok(())
        } else {
            Err(Refused::Address(ip))
        }
    }

    /// The addresses of `host` that may be reached, in their order; refused when none may.
    pub fn reachable(&self, host: &str, resolved: &[IpAddr]) -> Result<Vec<IpAddr>, Refused> {
        let allowed: Vec<IpAddr> = (resolved.iter().copied())
            .filter(|ip| self.check_address(*ip).is_ok())
            .collect();
        if allowed.is_empty() {
            return Err(Refused::Resolved {
                host: host.to_owned(),
                addresses: resolved.to_vec(),
            });
        }
        Ok(allowed)
    }
}

/// What kind of non-public address `ip` is; `None` for a public one.
pub fn kind_of(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => kind_of_v4(ip),
        IpAddr::V6(ip) => kind_of_v6(ip),
    }
}

fn kind_of_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        // Listed first: it is also link-local, and worth naming.
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "cloud metadata",
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        // 100.64.0.0/10, carrier-grade NAT.
        _ if a == 100 && (64..128).contains(&b) => "shared (carrier-grade NAT)",
        _ if ip.is_broadcast() || ip.is_multicast() || a >= 240 => "broadcast, multicast or reserved",
        _ => return None,
    })
}

fn kind_of_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // An IPv4 address carried in IPv6 (::ffff:a.b.c.d, or NAT64's 64:ff9b::a.b.c.d) reaches
    // that IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return kind_of_v4(v4);
    }
    let segments = ip.segments();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        return kind_of_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    Some(match segments[0] {
        _ if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => "cloud metadata",
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        first if first & 0xfe00 == 0xfc00 => "unique-local",
        first if first & 0xffc0 == 0xfe80 => "link-local",
        first if first & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: OutboundRules = OutboundRules {
        allow_http: false,
        allow_private_networks: false,
    };

    fn url(text: &str) -> url::Url {
        url::Url::parse(text).unwrap()
    }

    #[test]
    fn every_non_public_range_is_refused_and_public_ones_pass() {
        let refused = [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "100.127.255.255",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ];
        for ip in refused {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(STRICT.check_address(ip).is_err(), "{ip} must be refused");
        }
        let public = [
            "203.0.113.7",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2001:db8::1",
        ];
        for ip in public {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(STRICT.check_address(ip), Ok(()), "{ip} is public");
        }
        let open = OutboundRules {
            allow_private_networks: true,
            ..STRICT
        };
        assert_eq!(open.check_address("127.0.0.1".parse().unwrap()), Ok(()));
    }

    #[test]
    fn a_url_must_be_https_and_not_name_a_private_address() {
        assert_eq!(STRICT.check_url(&url("https://hooks.example.com/x")), Ok(()));
        assert_eq!(
            STRICT.check_url(&url("http://hooks.example.com/x")),
            Err(Refused::Scheme("http".into()))
        );
        // Written any way the URL parser takes it, an address is the address.
        for text in [
            "https://127.0.0.1/x",
            "https://2130706433/x",
            "https://0x7f.1/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://localhost/x",
            "https://api.LOCALHOST./x",
        ] {
            assert!(STRICT.check_url(&url(text)).is_err(), "{text} must be refused");
        }
        let testing = OutboundRules {
            allow_http: true,
            allow_private_networks: true,
        };
        assert_eq!(testing.check_url(&url("http://127.0.0.1:9/x")), Ok(()));
        let message = STRICT
            .check_url(&url("https://169.254.169.254/"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("cloud metadata"), "{message}");
    }

    #[test]
    fn resolved_addresses_are_filtered_and_none_left_is_refused() {
        let resolved: Vec<IpAddr> = ["10.0.0.1", "203.0.113.7"].map(|ip| ip.parse().unwrap()).to_vec();
        assert_eq!(
            STRICT.reachable("mixed.example", &resolved),
            Ok(vec!["203.0.113.7".parse().unwrap()])
        );
        let message = STRICT
            .reachable("rebind.example", &resolved[..1])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("rebind.example") && message.contains("10.0.0.1"),
            "{message}"
        );
    }
}
