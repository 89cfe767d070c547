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

    async fn reload(
        &self,
        request: Request<v1::ReloadRequest>,
    ) -> Result<Response<v1::ReloadResponse>, Status> {
        self.state.access.authorise(&request, Role::Admin)?;
        Err(Status::unimplemented(
            "reload is not implemented yet: restart the node",
        ))
    }
}
