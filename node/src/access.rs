//! Who is calling and what they may do. The caller's identity comes only from
//! the TLS client certificate the connection verified, never from a request
//! field; a caller is allowed only what its configured roles grant (deny by
//! default).

use std::collections::{BTreeSet, HashMap};

use patchwork_certs::{SpiffeId, identity_from_cert_der};
use tonic::{Request, Status};

use crate::config::{ApiSection, Role};

/// The verified identity of the caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: SpiffeId,
}

#[derive(Debug, Clone)]
pub struct AccessPolicy {
    node_identity: SpiffeId,
    clients: HashMap<SpiffeId, BTreeSet<Role>>,
}

impl AccessPolicy {
    /// `api` has been validated, so every identity parses.
    pub fn new(node_identity: SpiffeId, api: &ApiSection) -> Self {
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
        }
    }

    /// Identifies the caller from its verified certificate and checks `role`.
    pub fn authorise<T>(&self, request: &Request<T>, role: Role) -> Result<Caller, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let identity = identity_from_cert_der(leaf.as_ref())
            .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
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
