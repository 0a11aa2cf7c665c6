//! A tiny authoritative DNS server on loopback UDP: A records and SRV records for test names,
//! NXDOMAIN for everything else. Lets discovery (well-known hosts, SRV) run for real. Records
//! carry a settable TTL, and every question asked is logged.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use hickory_resolver::proto::{
    op::{Message, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata},
};

struct Zone {
    a: HashMap<String, Vec<Ipv4Addr>>,
    srv: HashMap<String, (String, u16)>,
    ttl: u32,
    /// Every question asked: lower-case name with its trailing dot.
    queries: Vec<String>,
}

impl Default for Zone {
    fn default() -> Self {
        Self {
            a: HashMap::new(),
            srv: HashMap::new(),
            ttl: 5,
            queries: Vec::new(),
        }
    }
}

#[derive(Clone)]
pub struct FakeDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
}

impl FakeDns {
    pub async fn start() -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let served = zone.clone();
        // A thread of its own: mxmedia's workers resolve while the test's runtime is blocked.
        let std_socket = socket.into_std().unwrap();
        std_socket.set_nonblocking(false).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, peer)) = std_socket.recv_from(&mut buf) {
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let reply = answer(&query, &mut served.lock().unwrap());
                if let Ok(bytes) = reply.to_vec() {
                    let _ = std_socket.send_to(&bytes, peer);
                }
            }
        });
        Self { addr, zone }
    }

    pub fn a(&self, name: &str, ip: Ipv4Addr) {
        self.a_records(name, &[ip]);
    }

    /// Several A records for one name, answered together in this order.
    pub fn a_records(&self, name: &str, ips: &[Ipv4Addr]) {
        self.zone.lock().unwrap().a.insert(fqdn(name), ips.to_vec());
    }

    /// The TTL of every record answered from now on, in seconds (default 5).
    pub fn set_ttl(&self, secs: u32) {
        self.zone.lock().unwrap().ttl = secs;
    }

    /// The questions asked about names ending in `suffix`.
    pub fn queries_ending(&self, suffix: &str) -> Vec<String> {
        let suffix = fqdn(suffix);
        let zone = self.zone.lock().unwrap();
        zone.queries
            .iter()
            .filter(|q| q.ends_with(&suffix))
            .cloned()
            .collect()
    }

    /// Sets (or replaces) the SRV record of `name`.
    pub fn srv(&self, name: &str, target: &str, port: u16) {
        self.zone
            .lock()
            .unwrap()
            .srv
            .insert(fqdn(name), (fqdn(target), port));
    }
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.')).to_ascii_lowercase()
}

fn answer(query: &Message, zone: &mut Zone) -> Message {
    let ttl = zone.ttl;
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    let mut found = false;
    for q in &query.queries {
        reply.add_query(q.clone());
        let name = q.name().to_ascii().to_ascii_lowercase();
        zone.queries.push(name.clone());
        let owner = Name::from_ascii(&name).unwrap();
        match q.query_type() {
            RecordType::A => {
                for ip in zone.a.get(&name).into_iter().flatten() {
                    let a = RData::A(rdata::A(*ip));
                    reply.add_answer(Record::from_rdata(owner.clone(), ttl, a));
                }
            }
            RecordType::SRV => {
                if let Some((target, port)) = zone.srv.get(&name) {
                    let srv = rdata::SRV::new(10, 5, *port, Name::from_ascii(target).unwrap());
                    reply.add_answer(Record::from_rdata(owner, ttl, RData::SRV(srv)));
                }
            }
            _ => {}
        }
        found |= zone.a.contains_key(&name) || zone.srv.contains_key(&name);
    }
    if !found {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply
}
