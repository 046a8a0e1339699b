//! Where PostgreSQL's time went during a load step: `pg_stat_statements`
//! for the step's database (each scenario has a fresh one, so nothing else
//! is counted), the statements that took the most execution time. Needs the
//! module preloaded (`shared_preload_libraries`, set by scripts/services);
//! without it the list stays empty and the table says so.

use sqlx::PgPool;

/// One statement's share of a step.
#[derive(Clone, Debug)]
pub struct Statement {
    /// The normalised text, whitespace collapsed, cut to a readable length.
    pub query: String,
    pub calls: i64,
    /// Execution time in all, ms.
    pub total_ms: f64,
}

/// Makes the view readable from the maintenance database; false when the
/// module is not loaded.
pub async fn prepare(admin: &PgPool) -> bool {
    if sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(admin)
        .await
        .is_err()
    {
        return false;
    }
    sqlx::query("SELECT 1 FROM pg_stat_statements LIMIT 1")
        .fetch_optional(admin)
        .await
        .is_ok()
}

/// The statements of database `name` with the most execution time, most
/// first, and the execution time of all of them (ms).
pub async fn top(admin: &PgPool, name: &str, n: i64) -> (Vec<Statement>, f64) {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT s.query, s.calls, s.total_exec_time
         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = $1
         ORDER BY s.total_exec_time DESC",
    )
    .bind(name)
    .fetch_all(admin)
    .await
    .unwrap_or_default();
    let all: f64 = rows.iter().map(|r| r.2).sum();
    let top = rows
        .into_iter()
        .take(n as usize)
        .map(|(query, calls, total_ms)| Statement {
            query: shorten(&query),
            calls,
            total_ms,
        })
        .collect();
    (top, all)
}

/// The first words of a statement, on one line.
fn shorten(query: &str) -> String {
    let words: Vec<&str> = query.split_whitespace().collect();
    let mut text = words.join(" ");
    if text.len() > 60 {
        let mut end = 57;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}
