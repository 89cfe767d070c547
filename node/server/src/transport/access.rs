//! Who is calling and what they may do. The caller's identity comes only from
//! the TLS client certificate the connection verified (carried in the
//! request's extensions by the acceptor), never from a request field; it is
//! re-checked against the trust material in force, so a certificate revoked
//! or expired after the handshake stops working on the live connection; and
//! a caller is allowed only what its configured roles grant (deny by default).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use patchwork_certs::SpiffeId;
use tonic::{Request, Status};

use crate::base::config::{ApiSection, Role};
use crate::transport::tls::{PeerConnection, TlsState};

/// The verified identity of the caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub identity: SpiffeId,
}

#[derive(Debug)]
pub(crate) struct AccessPolicy {
    node_identity: SpiffeId,
    clients: HashMap<SpiffeId, BTreeSet<Role>>,
    tls: Arc<TlsState>,
}

impl AccessPolicy {
    /// `api` has been validated, so every identity parses.
    pub(crate) fn new(node_identity: SpiffeId, api: &ApiSection, tls: Arc<TlsState>) -> Self {
        let clients = api
            .clients
            .iter()
            .filter_map(|c| {
                let identity = c.identity.parse().ok()?;
                Some((identity, c.roles.iter().copied().collect()))
            })
            .collect();
        AccessPolicy {
            node_identity,
            clients,
            tls,
        }
    }

    /// The caller's identity, from the connection's verified certificate,
    /// still trusted now.
    pub(crate) fn identify<T>(&self, request: &Request<T>) -> Result<SpiffeId, Status> {
        let peer = request
            .extensions()
            .get::<PeerConnection>()
            .ok_or_else(|| Status::unauthenticated("no verified TLS connection"))?;
        let identity = peer
            .identity
            .clone()
            .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
        peer.still_trusted(&self.tls).map_err(|e| {
            tracing::warn!(peer = %identity, addr = %peer.remote_addr, reason = %e, "request refused");
            Status::unauthenticated(e)
        })?;
        Ok(identity)
    }

    /// Whether the caller may watch `practitioner_id`'s team events
    /// (`Directory.Watch`): the one place that rule lives. Today a client
    /// with the `watch` role (an integration relaying every practitioner's
    /// events) may watch anyone, and nobody else anyone. The web console's
    /// signed-in practitioner, watching only themself, is a rule to add
    /// here when the console can vouch for who signed in. `practitioner_id`
    /// is validated first (the refusal names it).
    pub(crate) fn authorise_watch<T>(
        &self,
        request: &Request<T>,
        practitioner_id: &str,
    ) -> Result<Caller, Status> {
        self.authorise(request, Role::Watch)
            .map_err(|refused| match refused.code() {
                tonic::Code::PermissionDenied => Status::permission_denied(format!(
                    "{}, so it may not watch practitioner {practitioner_id}",
                    refused.message()
                )),
                _ => refused,
            })
    }

    /// Identifies the caller and checks it holds `role`.
    pub(crate) fn authorise<T>(&self, request: &Request<T>, role: Role) -> Result<Caller, Status> {
        let identity = self.identify(request)?;
        if identity == self.node_identity {
            return Ok(Caller { identity });
        }
        match self.clients.get(&identity) {
            Some(roles) if roles.contains(&role) => Ok(Caller { identity }),
            Some(_) => Err(Status::permission_denied(format!(
                "{identity} does not have the {} role",
                role.as_str()
            ))),
            None => Err(Status::permission_denied(format!(
                "{identity} is not a configured client of this node"
            ))),
        }
    }
}
