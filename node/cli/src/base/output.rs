//! What the CLI prints of a lookup's answer (text for people, JSON for
//! scripts; the demo prints the same), and the small formatters its
//! reports share.

use patchwork_proto::v1;

pub(crate) fn enum_name<E: std::fmt::Debug>(value: Result<E, prost::UnknownEnumValue>) -> String {
    match value {
        Ok(value) => snake_case(&format!("{value:?}")),
        Err(prost::UnknownEnumValue(n)) => format!("unknown({n})"),
    }
}

fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

pub(crate) fn date_text(date: Option<&v1::Date>) -> Option<String> {
    date.map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
}

pub(crate) fn lookup_json(response: &v1::LookupResponse) -> serde_json::Value {
    use v1::disclosed_involvement::Contact;
    let involvement = |i: &v1::DisclosedInvolvement| {
        let mut value = serde_json::json!({
            "service": i.service,
            "sensitivity": enum_name(v1::Sensitivity::try_from(i.sensitivity)),
            "start_date": date_text(i.start_date.as_ref()),
        });
        if !i.family_member.is_empty() {
            value["family_member"] = serde_json::json!(i.family_member);
        }
        match &i.contact {
            Some(Contact::Practitioner(p)) => {
                value["practitioner"] = serde_json::json!({
                    "name": p.name, "role": p.role, "team": p.team,
                    "organisation": p.organisation_name,
                    "sector": enum_name(v1::Sector::try_from(p.sector)),
                    "phone": p.phone, "email": p.email,
                });
            }
            Some(Contact::Gatekeeper(g)) => {
                value["gatekeeper"] =
                    serde_json::json!({ "name": g.name, "phone": g.phone, "email": g.email });
            }
            None => {}
        }
        value
    };
    serde_json::json!({
        "lookup_id": response.lookup_id,
        "answers": response.answers.iter().map(|a| serde_json::json!({
            "node_id": a.node_id,
            "node_name": a.node_name,
            "outcome": enum_name(v1::NodeOutcome::try_from(a.outcome)),
            "detail": a.detail,
            "latency_ms": a.latency_ms,
            "more_identifiers_wanted": a.more_identifiers_wanted.iter()
                .map(|k| enum_name(v1::IdentifierKind::try_from(*k))).collect::<Vec<_>>(),
            "involvements": a.involvements.iter().map(involvement).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn lookup_text(response: &v1::LookupResponse) -> String {
    use std::fmt::Write;
    use v1::disclosed_involvement::Contact;
    let mut out = String::new();
    let _ = writeln!(out, "lookup {}", response.lookup_id);
    for answer in &response.answers {
        let outcome = enum_name(v1::NodeOutcome::try_from(answer.outcome)).replace('_', " ");
        let _ = write!(
            out,
            "\n{} ({}): {outcome}",
            answer.node_name, answer.node_id
        );
        if !answer.detail.is_empty() {
            let _ = write!(out, " — {}", answer.detail);
        }
        let _ = writeln!(out, " [{} ms]", answer.latency_ms);
        if answer.outcome == v1::NodeOutcome::Matched as i32 && answer.involvements.is_empty() {
            let _ = writeln!(out, "  no current involvements");
        }
        if !answer.more_identifiers_wanted.is_empty() {
            let wanted: Vec<_> = answer
                .more_identifiers_wanted
                .iter()
                .map(|k| enum_name(v1::IdentifierKind::try_from(*k)).replace('_', " "))
                .collect();
            let _ = writeln!(
                out,
                "  nothing disclosed; adding {} would help",
                wanted.join(" or ")
            );
        }
        for involvement in &answer.involvements {
            let sensitivity =
                enum_name(v1::Sensitivity::try_from(involvement.sensitivity)).replace('_', " ");
            if !involvement.family_member.is_empty() {
                let _ = writeln!(out, "  family member ({}):", involvement.family_member);
            }
            match &involvement.contact {
                Some(Contact::Practitioner(p)) => {
                    let since = date_text(involvement.start_date.as_ref()).unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  • {} ({sensitivity}), since {since}",
                        involvement.service
                    );
                    let team = if p.team.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", p.team)
                    };
                    let _ = writeln!(
                        out,
                        "    {}, {}{team} — {}",
                        p.name, p.role, p.organisation_name
                    );
                    let _ = writeln!(out, "    {}", contact_line(&p.phone, &p.email));
                }
                Some(Contact::Gatekeeper(g)) => {
                    let _ = writeln!(out, "  • a restricted service is involved");
                    let _ = writeln!(
                        out,
                        "    contact its gatekeeper: {} — {}",
                        g.name,
                        contact_line(&g.phone, &g.email)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  • {} ({sensitivity}): no contact on record",
                        involvement.service
                    );
                }
            }
        }
    }
    out
}

fn contact_line(phone: &str, email: &str) -> String {
    match (phone.is_empty(), email.is_empty()) {
        (false, false) => format!("phone {phone} · email {email}"),
        (false, true) => format!("phone {phone}"),
        (true, false) => format!("email {email}"),
        (true, true) => "no contact details".to_owned(),
    }
}
