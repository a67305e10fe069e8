//! The conformance suite of `sandbox-core` against the real Docker daemon.

mod common;

use std::sync::Arc;

use sandbox_core::conformance::Suite;

async fn make_suite() -> Option<Suite> {
    let backend = common::backend().await?;
    Some(
        Suite::new(Arc::new(backend))
            .image(common::IMAGE)
            .missing_image(common::MISSING_IMAGE),
    )
}

mod conformance {
    sandbox_core::conformance_tests!(super::make_suite);
}
