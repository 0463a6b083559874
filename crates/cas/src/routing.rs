//! Route tables: each port's routes are one list of [`RouteDef`]s (method, path, handler, and
//! how the OpenAPI document names the path). The routers are built from these lists
//! ([`router`]), and the OpenAPI test compares the same lists with `/openapi.json`, so a route
//! cannot be added without being documented, nor documented without existing.

use axum::Router;
use axum::extract::Extension;
use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::server::AppState;

/// The HTTP methods the CAS serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verb {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
}

impl Verb {
    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Delete => MethodFilter::DELETE,
        }
    }

    /// The method as an OpenAPI operation key (`get`, `post`, `delete`).
    pub fn openapi_key(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Delete => "delete",
        }
    }
}

/// The outer message of a route's refusals by an extractor (e.g. `Cannot register the node
/// key` for [`crate::server::Owner`]); attached to the route's requests by [`router`].
#[derive(Debug, Clone, Copy)]
pub struct Outer(pub &'static str);

/// One route: method, axum path, handler.
pub struct RouteDef {
    /// The method.
    pub verb: Verb,
    /// The axum path (`{*name}` for a wildcard).
    pub path: &'static str,
    /// The paths under which `/openapi.json` documents this route, when they differ from
    /// [`RouteDef::path`] with wildcards written as plain parameters.
    pub documented_as: &'static [&'static str],
    outer: Option<&'static str>,
    handler: MethodRouter<AppState>,
}

impl std::fmt::Debug for RouteDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteDef")
            .field("verb", &self.verb)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RouteDef {
    /// `verb path` served by `handler`.
    pub fn new<H, T>(verb: Verb, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        Self {
            verb,
            path,
            documented_as: &[],
            outer: None,
            handler: on(verb.filter(), handler),
        }
    }

    /// The route is documented under `paths` instead of its own.
    pub fn documented_as(mut self, paths: &'static [&'static str]) -> Self {
        self.documented_as = paths;
        self
    }

    /// Refusals by an extractor on this route start with `outer`.
    pub fn outer(mut self, outer: &'static str) -> Self {
        self.outer = Some(outer);
        self
    }

    /// The paths of this route in the OpenAPI document.
    pub fn openapi_paths(&self) -> Vec<String> {
        if self.documented_as.is_empty() {
            vec![self.path.replace("{*", "{")]
        } else {
            self.documented_as.iter().map(|p| p.to_string()).collect()
        }
    }
}

/// A router serving `defs` (routes with the same path share one method router).
pub fn router(defs: Vec<RouteDef>) -> Router<AppState> {
    defs.into_iter().fold(Router::new(), |r, d| {
        let handler = match d.outer {
            Some(o) => d.handler.layer(Extension(Outer(o))),
            None => d.handler,
        };
        r.route(d.path, handler)
    })
}
