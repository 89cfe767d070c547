//! `patchwork.v1.Admin`: what operators do to a running node.

use patchwork_proto::v1::{self, admin_server::Admin};
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use super::{NodeState, blocking};
use crate::config::Role;
use crate::convert::store_status;

#[derive(Debug, Clone)]
pub struct AdminService {
    state: NodeState,
}

impl AdminService {
    pub fn new(state: NodeState) -> Self {
        AdminService { state }
    }

    fn trust_status(&self) -> v1::TrustStatus {
        let material = self.state.tls.current();
        let now = time::OffsetDateTime::now_utc();
        v1::TrustStatus {
            identity: material.own.identity().to_string(),
            expiries: material
                .expiries
                .iter()
                .map(|e| v1::Expiry {
                    what: e.what.clone(),
                    not_after_unix_seconds: e.not_after.unix_timestamp(),
                    days_left: e.days_left(now),
                })
                .collect(),
            generation: self.state.tls.generation(),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    #[instrument(skip_all)]
    async fn get_stats(
        &self,
        request: Request<v1::GetStatsRequest>,
    ) -> Result<Response<v1::Stats>, Status> {
        self.state.access.authorise(&request, Role::Admin)?;
        let store = self.state.store.clone();
        let (counts, bytes) = blocking(move || {
            let counts = store.counts().map_err(|e| store_status(e, ""))?;
            let bytes = store.size_on_disk().map_err(|e| store_status(e, ""))?;
            Ok((counts, bytes))
        })
        .await?;
        Ok(Response::new(v1::Stats {
            persons: counts.persons,
            practitioners: counts.practitioners,
            organisations: counts.organisations,
            involvements: counts.involvements,
            active_involvements: counts.active_involvements,
            store_bytes: bytes,
            audit_entries: 0,
        }))
    }

    #[instrument(skip_all)]
    async fn import(
        &self,
        request: Request<Streaming<v1::ImportRequest>>,
    ) -> Result<Response<v1::ImportReport>, Status> {
        self.state.access.authorise(&request, Role::Admin)?;
        let report = crate::import::run_import(
            self.state.store.clone(),
            self.state.rules(),
            self.state.spool_dir.clone(),
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(report))
    }

    async fn verify_audit(
        &self,
        request: Request<v1::VerifyAuditRequest>,
    ) -> Result<Response<v1::VerifyAuditResponse>, Status> {
        self.state.access.authorise(&request, Role::Admin)?;
        Err(Status::unimplemented(
            "the audit log is not implemented yet",
        ))
    }

    #[instrument(skip_all)]
    async fn reload(
        &self,
        request: Request<v1::ReloadRequest>,
    ) -> Result<Response<v1::ReloadResponse>, Status> {
        self.state.access.authorise(&request, Role::Admin)?;
        let tls = self.state.tls.clone();
        blocking(move || {
            super::reload_tls(&tls, "admin reload").map_err(|e| {
                Status::failed_precondition(format!("reload refused, nothing changed: {e}"))
            })
        })
        .await?;
        Ok(Response::new(v1::ReloadResponse {
            status: Some(self.trust_status()),
        }))
    }

    async fn get_trust_status(
        &self,
        request: Request<v1::GetTrustStatusRequest>,
    ) -> Result<Response<v1::TrustStatus>, Status> {
        self.state.access.authorise(&request, Role::Admin)?;
        Ok(Response::new(self.trust_status()))
    }
}
