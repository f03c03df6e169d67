//! The peers a running server knows (the TOML's and the API's) and the sender task of each.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::peer::{Peer, PeerError, PeerSpec};
use super::sender::{PeerSender, SenderSettings};
use crate::access::Principal;
use crate::ingest::Archive;
use crate::store::IndexError;

struct Running {
    peer: Peer,
    stop: watch::Sender<bool>,
}

/// The known peers, each with its sender.
#[derive(Clone)]
pub struct PeerRegistry {
    archive: Archive,
    settings: SenderSettings,
    peers: Arc<Mutex<BTreeMap<String, Running>>>,
}

/// Why a peer could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryChangeError {
    /// The description is not valid, or the name is taken.
    #[error(transparent)]
    Invalid(#[from] PeerError),
    /// A peer from the configuration file: change it there.
    #[error("peer {0} is configured in the TOML file: remove it there and restart")]
    Configured(String),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl PeerRegistry {
    /// Every configured peer and every peer added through the API, not yet sending.
    pub async fn load(
        archive: Archive,
        configured: &[PeerSpec],
        settings: SenderSettings,
    ) -> anyhow::Result<PeerRegistry> {
        let registry = PeerRegistry {
            archive: archive.clone(),
            settings,
            peers: Arc::default(),
        };
        let mut peers = Vec::new();
        for spec in configured {
            peers.push(
                spec.to_peer(true)
                    .map_err(|e| anyhow::anyhow!("[[peers]]: {e}"))?,
            );
        }
        for spec in archive.index().api_peers(&Principal::system()).await? {
            if peers.iter().any(|p| p.name == spec.name) {
                tracing::warn!(peer = %spec.name, "a peer added through the API has the name of a configured one; the configured one is used");
                continue;
            }
            match spec.to_peer(false) {
                Ok(p) => peers.push(p),
                Err(e) => {
                    tracing::error!(peer = %spec.name, error = %e, "stored peer not usable; delete it and add it again")
                }
            }
        }
        let (stop, _) = watch::channel(true);
        let mut map = registry
            .peers
            .lock()
            .map_err(|_| anyhow::anyhow!("peer registry poisoned"))?;
        for peer in peers {
            map.insert(
                peer.name.clone(),
                Running {
                    peer,
                    stop: stop.clone(),
                },
            );
        }
        drop(map);
        Ok(registry)
    }

    /// The names of all peers.
    pub fn names(&self) -> Vec<String> {
        self.peers
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every peer.
    pub fn list(&self) -> Vec<Peer> {
        self.peers
            .lock()
            .map(|m| m.values().map(|r| r.peer.clone()).collect())
            .unwrap_or_default()
    }

    /// The peer named `name`.
    pub fn get(&self, name: &str) -> Option<Peer> {
        self.peers.lock().ok()?.get(name).map(|r| r.peer.clone())
    }

    /// Starts the sender of every peer.
    pub fn start_all(&self) {
        for peer in self.list() {
            self.start(peer);
        }
    }

    fn start(&self, peer: Peer) {
        let (stop, stopped) = watch::channel(false);
        let task = PeerSender::new(self.archive.clone(), peer.clone(), self.settings.clone());
        tokio::spawn(task.run(stopped));
        if let Ok(mut m) = self.peers.lock() {
            m.insert(peer.name.clone(), Running { peer, stop });
        }
    }

    /// Stops every sender (each finishes the request it is in).
    pub fn stop_all(&self) {
        if let Ok(m) = self.peers.lock() {
            for r in m.values() {
                let _ = r.stop.send(true);
            }
        }
    }

    /// Adds a peer through the API and starts its sender.
    pub async fn add(&self, who: &Principal, spec: PeerSpec) -> Result<Peer, RegistryChangeError> {
        let peer = spec.to_peer(false)?;
        if self.get(&peer.name).is_some() {
            return Err(PeerError::Invalid(format!(
                "a peer named {} exists: delete it first or choose another name",
                peer.name
            ))
            .into());
        }
        self.archive.index().add_peer(who, spec).await??;
        self.start(peer.clone());
        Ok(peer)
    }

    /// Removes a peer added through the API and stops its sender; whether there was one.
    pub async fn remove(&self, who: &Principal, name: &str) -> Result<bool, RegistryChangeError> {
        match self.get(name) {
            None => Ok(false),
            Some(p) if p.configured => Err(RegistryChangeError::Configured(name.to_string())),
            Some(_) => {
                let removed = self.archive.index().remove_peer(who, name).await?;
                if let Ok(mut m) = self.peers.lock() {
                    if let Some(r) = m.remove(name) {
                        let _ = r.stop.send(true);
                    }
                }
                Ok(removed)
            }
        }
    }
}
