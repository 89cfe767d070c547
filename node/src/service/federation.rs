//! `patchwork.v1.Federation`: what peer nodes ask. No peers can be configured
//! yet, so every call is refused as unimplemented; nothing is disclosed.

use patchwork_proto::v1::{self, federation_server::Federation};
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Default)]
pub struct FederationService;

#[tonic::async_trait]
impl Federation for FederationService {
    async fn find_involvements(
        &self,
        _request: Request<v1::FindInvolvementsRequest>,
    ) -> Result<Response<v1::FindInvolvementsResponse>, Status> {
        Err(Status::unimplemented("federation is not implemented yet"))
    }

    async fn node_info(
        &self,
        _request: Request<v1::NodeInfoRequest>,
    ) -> Result<Response<v1::NodeInfoResponse>, Status> {
        Err(Status::unimplemented("federation is not implemented yet"))
    }
}
