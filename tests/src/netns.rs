//! Test hosts on this one machine: network namespaces, each joined to the
//! root namespace by a veth pair, so a test can run a daemon "on another
//! host" and cut, heal or slow its link to the servers (a partition).
//!
//! Invariants:
//! - every namespace and link a [`Host`] makes is removed when it is
//!   dropped (also when the test fails), and carries this process's id in
//!   its name, so tests in parallel processes never share one;
//! - each link is a private /30 (`10.{100 + pid % 100}.{index}.0`), whose
//!   addresses exist only on this machine: traffic never leaves it;
//! - a cut takes the link down: packets are dropped, no connection is
//!   reset, as in a real partition (this kernel has no `netem`, and this
//!   machine no `iptables`); a slow link goes through a `tbf` queue.

use std::path::Path;
use std::process::Command;

/// One test host: a namespace and its link to the root namespace.
pub struct Host {
    ns: String,
    /// The root side of the link.
    link: String,
    gateway: String,
    address: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("`ip` does not run ({e}): install iproute2 (Debian: `apt-get install iproute2`)")
    });
    assert!(
        out.status.success(),
        "`ip {}` failed: {}; network namespaces need root (or CAP_NET_ADMIN) and iproute2",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Host {
    /// Make host `index` (1 to 60).
    pub fn make(index: u8) -> Host {
        let pid = std::process::id();
        let ns = format!("garden-{pid}-{index}");
        let link = format!("g{}h{index}", pid % 1_000_000);
        let peer = format!("{link}p");
        let net = format!("10.{}.{index}", 100 + pid % 100);
        let (gateway, address) = (format!("{net}.1"), format!("{net}.2"));
        let host = Host {
            ns: ns.clone(),
            link: link.clone(),
            gateway: gateway.clone(),
            address: address.clone(),
        };
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", &format!("{gateway}/30"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{address}/30"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        host
    }

    /// The root side's address: where servers in the root namespace are
    /// reached from this host.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// This host's own address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `program` run inside this host's namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns]).arg(program);
        command
    }

    /// Cut the link: nothing passes either way until [`Host::heal`].
    pub fn cut(&self) {
        ip(&["link", "set", &self.link, "down"]);
    }

    /// Bring the link back.
    pub fn heal(&self) {
        ip(&["link", "set", &self.link, "up"]);
    }

    /// Slow the link (root to host) to `kbit` kbit/s behind a queue that
    /// holds up to `latency_ms` of traffic; `None` takes the queue away.
    pub fn slow(&self, kbit_and_latency: Option<(u32, u32)>) {
        let status = match kbit_and_latency {
            Some((kbit, ms)) => Command::new("tc")
                .args(["qdisc", "replace", "dev", &self.link, "root", "tbf"])
                .args(["rate", &format!("{kbit}kbit"), "burst", "16kbit"])
                .args(["latency", &format!("{ms}ms")])
                .status(),
            None => Command::new("tc")
                .args(["qdisc", "del", "dev", &self.link, "root"])
                .status(),
        };
        assert!(
            status.is_ok_and(|s| s.success()),
            "tc on {} failed: install iproute2 (`tc`)",
            self.link
        );
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and so the
        // pair; the root side is removed too in case it was left.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
