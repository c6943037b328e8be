//! Stable map indexes for services and backends. A service keeps its id
//! (and its counters and ring slots) across reloads as long as its name
//! stays; a backend as long as its service and address stay. Flows in the
//! kernel name backends by id, so ids must also survive a restart: they are
//! recovered from the pinned maps (`adopt`).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use lb_common::{ServiceKey, words_addr};

use crate::{config::Config, dataplane::Adopted};

/// A backend of a service: (service name, backend address:port).
pub type BackendKey = (String, SocketAddr);

/// Small integers below a limit. Never-used ids go first, then freed ones,
/// oldest first: a freshly freed id (whose flows may linger in the kernel)
/// is the last to come back.
#[derive(Debug, Clone, Default)]
struct Pool {
    next: u32,
    free: VecDeque<u32>,
}

impl Pool {
    fn take(&mut self, limit: u32) -> Option<u32> {
        if self.next < limit {
            self.next += 1;
            return Some(self.next - 1);
        }
        self.free.pop_front()
    }

    fn give_back(&mut self, id: u32) {
        self.free.push_back(id);
    }

    /// Marks `id` as taken (adopted from an earlier run).
    fn reserve(&mut self, id: u32) {
        self.free.retain(|f| *f != id);
        while self.next <= id {
            if self.next != id {
                self.free.push_back(self.next);
            }
            self.next += 1;
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Ids {
    services: HashMap<String, u32>,
    backends: HashMap<BackendKey, u32>,
    service_pool: Pool,
    backend_pool: Pool,
}

impl Ids {
    /// Ids as an earlier run left them in pinned maps: a service of `cfg`
    /// whose (VIP, port, protocol) is there keeps its id, and so do its
    /// backends found there. Then assigns the rest.
    pub fn adopt(cfg: &Config, adopted: &Adopted) -> Result<Ids, String> {
        let mut ids = Ids::default();
        for svc in &cfg.services {
            let key = ServiceKey::new(svc.vip, svc.port, svc.protocol.number());
            let Some((_, meta)) = adopted.services.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            ids.service_pool.reserve(meta.id);
            ids.services.insert(svc.name.clone(), meta.id);
            for (id, b) in adopted
                .backends
                .iter()
                .filter(|(_, b)| b.service == meta.id)
            {
                let addr = SocketAddr::new(words_addr(b.addr, b.family), u16::from_be(b.port));
                if svc
                    .backends
                    .iter()
                    .any(|c| c.address == addr.ip() && c.port == addr.port())
                {
                    ids.backend_pool.reserve(*id);
                    ids.backends.insert((svc.name.clone(), addr), *id);
                }
            }
        }
        ids.assign(cfg)?;
        Ok(ids)
    }

    /// Gives every service and backend of `cfg` an id: known ones keep
    /// theirs, ids of those gone are freed. On error nothing changed.
    pub fn assign(&mut self, cfg: &Config) -> Result<(), String> {
        let mut next = self.clone();
        let keep_services: Vec<&str> = cfg.services.iter().map(|s| s.name.as_str()).collect();
        let keep_backends: Vec<BackendKey> = backend_keys(cfg).collect();
        next.services.retain(|name, id| {
            let keep = keep_services.contains(&name.as_str());
            if !keep {
                next.service_pool.give_back(*id);
            }
            keep
        });
        next.backends.retain(|key, id| {
            let keep = keep_backends.contains(key);
            if !keep {
                next.backend_pool.give_back(*id);
            }
            keep
        });
        for svc in &cfg.services {
            if !next.services.contains_key(&svc.name) {
                let id = next
                    .service_pool
                    .take(cfg.limits.max_services)
                    .ok_or("more services than limits.max_services")?;
                next.services.insert(svc.name.clone(), id);
            }
        }
        for key in keep_backends {
            if !next.backends.contains_key(&key) {
                let id = next
                    .backend_pool
                    .take(cfg.limits.max_backends)
                    .ok_or("more backends than limits.max_backends")?;
                next.backends.insert(key, id);
            }
        }
        *self = next;
        Ok(())
    }

    pub fn service(&self, name: &str) -> u32 {
        self.services[name]
    }

    pub fn backend(&self, key: &BackendKey) -> u32 {
        self.backends[key]
    }
}

/// Every backend of `cfg` as a key.
pub fn backend_keys(cfg: &Config) -> impl Iterator<Item = BackendKey> + '_ {
    cfg.services.iter().flat_map(|s| {
        s.backends
            .iter()
            .map(|b| (s.name.clone(), SocketAddr::new(b.address, b.port)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(services: &[(&str, &[u16])]) -> Config {
        let mut text = String::from(
            "interfaces: [eth0]\nsnat: { ipv4: 198.18.1.1 }\nlimits: { max_services: 4, max_backends: 16 }\nservices:\n",
        );
        for (i, (name, ports)) in services.iter().enumerate() {
            text += &format!(
                "  - name: {name}\n    vip: 198.18.100.{}\n    port: 80\n    backends:\n",
                i + 1
            );
            for p in *ports {
                text += &format!("      - {{ address: 198.18.1.11, port: {p} }}\n");
            }
        }
        Config::from_yaml(&text).unwrap()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 1, 11], port))
    }

    #[test]
    fn ids_are_stable_and_freed_ones_reused_oldest_first() {
        let mut ids = Ids::default();
        ids.assign(&cfg(&[("a", &[1, 2]), ("b", &[3])])).unwrap();
        let (a, b) = (ids.service("a"), ids.service("b"));
        let b3 = ids.backend(&("b".into(), addr(3)));
        // Remove a backend of a, add one to b: the others keep their ids.
        ids.assign(&cfg(&[("a", &[1]), ("b", &[3, 4])])).unwrap();
        assert_eq!((ids.service("a"), ids.service("b")), (a, b));
        assert_eq!(ids.backend(&("b".into(), addr(3))), b3);
        // Backend ids 0..=2 were taken, 1 (a/2) freed: b/4 takes id 3 first
        // (never used), the freed one waits.
        assert_eq!(ids.backend(&("b".into(), addr(4))), 3);
        // Renaming a service gives it a new id.
        ids.assign(&cfg(&[("c", &[1]), ("b", &[3, 4])])).unwrap();
        assert_ne!(ids.service("c"), a);
    }

    #[test]
    fn a_failed_assignment_changes_nothing() {
        let mut ids = Ids::default();
        ids.assign(&cfg(&[("a", &[1])])).unwrap();
        let before = ids.backend(&("a".into(), addr(1)));
        let mut too_many = cfg(&[("a", &[1, 2, 3, 4, 5, 6, 7, 8, 9])]);
        too_many.limits.max_backends = 8;
        assert!(ids.assign(&too_many).is_err());
        assert_eq!(ids.backend(&("a".into(), addr(1))), before);
        assert!(!ids.backends.contains_key(&("a".into(), addr(2))));
    }
}
