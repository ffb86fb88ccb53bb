//! [`stamp_cases!`]: one `#[tokio::test]` per case of a suite, for every suite that runs the same
//! cases on several backends (`store_suite.rs`, `tlog_suite.rs`, the log cases of
//! `tlog_sqlite.rs` and `tlog_postgres.rs`).

/// Stamps one multi-threaded `#[tokio::test]` per case:
/// `stamp_cases!(make, |fixture| suite(arg); case, ...)` awaits `make` (an `Option`), skips the
/// test on `None`, binds `Some(fixture)` and runs `suite::case(arg)`. Whatever `fixture` binds
/// lives until the case returns.
macro_rules! stamp_cases {
    ($make:expr, |$fixture:pat_param| $($suite:ident)::+($arg:expr); $(,)?) => {};
    (
        $make:expr, |$fixture:pat_param| $($suite:ident)::+($arg:expr);
        $case:ident $(, $rest:ident)* $(,)?
    ) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let Some($fixture) = $make.await else { return };
            $($suite)::+::$case($arg).await;
        }
        crate::support::stamp::stamp_cases!(
            $make, |$fixture| $($suite)::+($arg); $($rest),*
        );
    };
}

/// Stamps the cases of a store-level suite onto every backend, each in a module named after
/// it: `stamp_suite!(case, ...)`, each case `super::case(store)` on a fresh store from the
/// backend's factory (`store_suite::Fresh`, which also keeps the database alive). The backends
/// are listed here once, so a new backend gets every suite by adding one line.
macro_rules! stamp_suite {
    ($($case:ident),* $(,)?) => {
        crate::support::stamp::stamp_suite!(@on sqlite, crate::sqlite_store::fresh_store; [$($case),*]);
        crate::support::stamp::stamp_suite!(@on postgres, crate::postgres_store::fresh_store; [$($case),*]);
    };
    (@on $backend:ident, $make:path; [$($case:ident),*]) => {
        mod $backend {
            crate::support::stamp::stamp_cases!($make(), |(store, _keep)| super(store); $($case),*);
        }
    };
}

pub(crate) use {stamp_cases, stamp_suite};
