//! What every operation of the OpenAPI document says alike, added in one place after the
//! routes (`routes!`) contributed their operations: the `bearer` security, the problems a
//! request can meet before its handler runs (authentication, path, query and body
//! rejections), the path parameters' patterns, `application/problem+json` as the
//! content type of every error response, and the NUL rule on every text field.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AdditionalProperties, ArrayItems, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr};

/// Operations anyone may call, without a token.
pub const PUBLIC_PATHS: [&str; 3] = ["/healthz", "/readyz", "/v1/openapi.json"];

/// A name the API creates: partner names, tenant ids, app names (`is_slug`).
pub const SLUG_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,63}$";

/// An app's owner: a partner's name, or `~` and a tenant's id for its private apps
/// (`kiosk_domain::ids::is_owner`).
pub const OWNER_PATTERN: &str = "^~?[a-z0-9][a-z0-9-]{0,63}$";

/// Text every backend can store: no U+0000 (PostgreSQL refuses it in `TEXT`, SQLite
/// keeps it; Kiosk refuses it everywhere alike, `invalid-text`). Stated on every string
/// of the document that has no pattern of its own, so that clients and fuzzers know it.
pub const TEXT_PATTERN: &str = "^[^\\u0000]*$";

/// The content type of every error.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The responses every operation may share, by status: name in `components.responses`
/// and description.
const SHARED: [(&str, &str, &str); 9] = [
    ("400", "BadRequest", "`invalid-path`, `invalid-query` or `malformed-json`: the request names the field at fault"),
    ("401", "Unauthorized", "`unauthorized`: no bearer token, or one that does not work (`WWW-Authenticate: Bearer`)"),
    ("403", "Forbidden", "`forbidden`: the token's role may not use this operation"),
    (
        "404",
        "NotFound",
        "`not-found`: no such resource within the token's scope (another scope's resources are not revealed)",
    ),
    ("413", "TooLarge", "`body-too-large`: the body exceeds the request's limit"),
    ("415", "UnsupportedMediaType", "`unsupported-media-type`: the body must be `application/json`"),
    ("422", "Unprocessable", "`invalid-text` (U+0000 in a parameter or body value) or a refusal of the values sent"),
    ("500", "Internal", "`internal`: an error of the server; details are in its log, never in the response"),
    ("503", "Unavailable", "`unavailable` or `overloaded`: try again (`Retry-After` when known)"),
];

/// Completes the document (see the module documentation). Idempotent.
#[derive(Debug)]
pub struct Contract;

impl utoipa::Modify for Contract {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for (status, name, description) in SHARED {
            let mut response = problem(description);
            if status == "401" {
                response.headers.insert(
                    "WWW-Authenticate".into(),
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some("`Bearer`"))
                        .build(),
                );
            }
            components.responses.insert(name.to_string(), RefOr::T(response));
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = PUBLIC_PATHS.contains(&path.as_str());
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for op in operations.into_iter().flatten() {
                complete(path, public, op);
                for p in op.parameters.iter_mut().flatten() {
                    if let Some(schema) = &mut p.schema {
                        state_text_rule(schema);
                    }
                }
                if let Some(body) = &mut op.request_body {
                    for content in body.content.values_mut() {
                        if let Some(schema) = &mut content.schema {
                            state_text_rule(schema);
                        }
                    }
                }
            }
        }
        if let Some(components) = &mut doc.components {
            for schema in components.schemas.values_mut() {
                state_text_rule(schema);
            }
        }
    }
}

/// Whether a schema of type `t` admits values of type `of`.
fn admits(t: &SchemaType, of: Type) -> bool {
    match t {
        SchemaType::Type(t) => *t == of,
        SchemaType::Array(types) => types.contains(&of),
        SchemaType::AnyValue => false,
    }
}

/// Adds `TEXT_PATTERN` to every string schema under `schema` that has no pattern, enum or
/// format of its own (those already exclude U+0000).
fn state_text_rule(schema: &mut RefOr<Schema>) {
    let RefOr::T(schema) = schema else { return };
    match schema {
        Schema::Object(o) => {
            if admits(&o.schema_type, Type::String)
                && o.pattern.is_none()
                && o.enum_values.is_none()
                && o.format.is_none()
            {
                o.pattern = Some(TEXT_PATTERN.to_string());
            }
            // Member names are text too, wherever an object takes names it does not list.
            let open = !matches!(o.additional_properties.as_deref(), Some(AdditionalProperties::FreeForm(false)));
            if admits(&o.schema_type, Type::Object) && open {
                let names = ObjectBuilder::new().schema_type(Type::String).pattern(Some(TEXT_PATTERN));
                o.property_names = Some(Box::new(names.into()));
            }
            for property in o.properties.values_mut() {
                state_text_rule(property);
            }
            if let Some(extra) = &mut o.additional_properties
                && let AdditionalProperties::RefOr(extra) = extra.as_mut()
            {
                state_text_rule(extra);
            }
        }
        Schema::Array(a) => {
            if let ArrayItems::RefOrSchema(items) = &mut a.items {
                state_text_rule(items);
            }
        }
        Schema::OneOf(o) => o.items.iter_mut().for_each(state_text_rule),
        Schema::AllOf(o) => o.items.iter_mut().for_each(state_text_rule),
        Schema::AnyOf(o) => o.items.iter_mut().for_each(state_text_rule),
        _ => {}
    }
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build())
        .build()
}

fn complete(path: &str, public: bool, op: &mut Operation) {
    let params = op.parameters.get_or_insert_with(Vec::new);
    for p in params.iter_mut().filter(|p| p.parameter_in == ParameterIn::Path) {
        describe_path_parameter(path, p);
    }
    let has_path = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
    let has_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
    if params.is_empty() {
        op.parameters = None;
    }
    let has_body = op.request_body.is_some();
    let mut shared = Vec::new();
    if !public {
        op.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
        shared.extend(["401", "500"]);
        // The catalog is open to every token; every other operation is one role's.
        if !path.starts_with("/v1/catalog/") {
            shared.push("403");
        }
    }
    if has_path || has_query || has_body {
        shared.extend(["400", "422"]);
    }
    if has_path && !public {
        shared.push("404");
    }
    if has_body {
        shared.extend(["413", "415"]);
    }
    let responses = &mut op.responses.responses;
    for (status, name, _) in SHARED.iter().filter(|(s, _, _)| shared.contains(s)) {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))));
    }
    // Errors declared on the route with `body = Problem` are problem+json too.
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        if status.starts_with(['4', '5'])
            && let Some(content) = response.content.shift_remove("application/json")
        {
            response.content.insert(PROBLEM_JSON.to_string(), content);
        }
    }
}

/// Path parameters by name: what they hold and, for slugs, their pattern.
fn describe_path_parameter(path: &str, p: &mut utoipa::openapi::path::Parameter) {
    let (description, pattern): (&str, Option<&str>) = match p.name.as_str() {
        "tenant" => ("tenant id", Some(SLUG_PATTERN)),
        "partner" => ("partner name, or `~tenant`: a tenant's private apps", Some(OWNER_PATTERN)),
        "name" => ("app name (the app is `partner/name`)", Some(SLUG_PATTERN)),
        "version" => ("semantic version of the app", None),
        "id" if path.starts_with("/v1/tokens/") => ("token id", None),
        "id" if path.starts_with("/v1/watches/") => ("watch id", None),
        "id" => ("installation id", None),
        "operation" => ("operation the app declares", None),
        "fingerprint" => ("OpenPGP fingerprint (hex, any case, spaces allowed)", None),
        "host" => ("registry host (`host[:port]`)", None),
        _ => return,
    };
    if p.description.is_none() {
        p.description = Some(description.to_string());
    }
    if let Some(pattern) = pattern {
        let mut schema = ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern));
        if let Some(RefOr::T(Schema::Object(old))) = &p.schema {
            schema = schema.description(old.description.clone());
        }
        p.schema = Some(schema.into());
    }
}
