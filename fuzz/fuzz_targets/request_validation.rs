//! Request messages decoded from any bytes and handed to the validation
//! layer, as the gRPC services do: a record, a field error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patchwork_server::base::validate::{self, InvolvementSource, Rules};
use patchwork_proto::v1;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let rules = Rules::new("nhs");
    match selector % 5 {
        0 => {
            if let Ok(request) = v1::CreatePersonRequest::decode(bytes)
                && let Some(person) = &request.person
            {
                let _ = validate::person(person, "person", &rules);
            }
        }
        1 => {
            if let Ok(request) = v1::RecordInvolvementRequest::decode(bytes)
                && let Some(involvement) = &request.involvement
            {
                let _ = validate::involvement(
                    involvement,
                    "involvement",
                    InvolvementSource::Api,
                    &rules,
                );
                let _ = validate::involvement(
                    involvement,
                    "involvement",
                    InvolvementSource::Import,
                    &rules,
                );
            }
        }
        2 => {
            if let Ok(request) = v1::LookupRequest::decode(bytes) {
                if let Some(subject) = &request.subject {
                    let _ = validate::demographics(subject, "subject", &rules);
                }
                let _ = validate::purpose(request.purpose.as_ref(), "purpose");
            }
        }
        3 => {
            if let Ok(request) = v1::CreatePractitionerRequest::decode(bytes)
                && let Some(practitioner) = &request.practitioner
            {
                let _ = validate::practitioner(practitioner, "practitioner");
            }
            if let Ok(request) = v1::CreateOrganisationRequest::decode(bytes)
                && let Some(organisation) = &request.organisation
            {
                let _ = validate::organisation(organisation, "organisation");
            }
        }
        _ => {
            // The federation request: decoded under the same 64 KiB bound
            // the service sets, its text fields validated as the service does.
            if bytes.len() <= patchwork_federation::hostile::MAX_REQUEST_BYTES
                && let Ok(request) = v1::FindInvolvementsRequest::decode(bytes)
            {
                let _ = validate::purpose(request.purpose.as_ref(), "purpose");
                if let Some(requester) = &request.requester {
                    let _ = validate::required_text(
                        &requester.name,
                        "requester.name",
                        validate::MAX_NAME,
                    );
                }
                let _ = patchwork_federation::validate_scheme(&request.national_id_scheme);
            }
        }
    }
});
