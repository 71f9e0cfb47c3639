//! Registry watches (`watches`: the operator's repositories whose semver tags become
//! versions) and the outcome of every tag a watch took (`watch_tags`). Every change the
//! operator makes, and every tag outcome, commits with its audit row; lease and
//! schedule bookkeeping (which replica polls, when next) is not audited, like the
//! collector's window leases.

use std::collections::HashMap;

use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::audit::audit;
use crate::{Store, StoreError, ctx};

/// A watch as stored.
#[derive(Debug, Clone)]
pub struct WatchRow {
    pub id: String,
    pub host: String,
    pub repository: String,
    /// `partner/name`: the app its tags register as.
    pub app: String,
    pub interval_ms: i64,
    pub created_ms: i64,
    pub next_poll_ms: i64,
    /// Consecutive polls that could not list the repository's tags.
    pub failures: i64,
    pub polled_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_tags: i64,
    pub last_ignored: i64,
}

/// A watch to create.
#[derive(Debug, Clone)]
pub struct NewWatch {
    pub id: String,
    pub host: String,
    pub repository: String,
    pub app: String,
    pub interval_ms: i64,
}

/// What became of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOutcome {
    Registered,
    /// Refused for good (a bad signature, a bad manifest…): never retried.
    Refused,
    /// A transient failure: tried again after `retry_ms`.
    Retrying,
}

impl TagOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Refused => "refused",
            Self::Retrying => "retrying",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        match text {
            "registered" => Ok(Self::Registered),
            "refused" => Ok(Self::Refused),
            "retrying" => Ok(Self::Retrying),
            other => Err(sqlx::Error::Decode(format!("unknown tag outcome {other:?}").into())),
        }
    }
}

/// A tag's recorded outcome.
#[derive(Debug, Clone)]
pub struct TagOutcomeRow {
    pub tag: String,
    pub outcome: TagOutcome,
    /// The problem type of a refusal or transient failure (`signature-refused`, …).
    pub problem: Option<String>,
    pub detail: String,
    pub attempts: i64,
    pub retry_ms: i64,
    pub at_ms: i64,
}

/// What a poll needs to know of a recorded tag.
#[derive(Debug, Clone, Copy)]
pub struct RecordedTag {
    pub outcome: TagOutcome,
    pub attempts: i64,
    pub retry_ms: i64,
}

/// The end of a poll: when the next is due and what this one saw.
#[derive(Debug, Clone)]
pub struct WatchPoll {
    pub next_poll_ms: i64,
    pub failures: i64,
    pub error: Option<String>,
    pub tags: i64,
    pub ignored: i64,
}

const WATCH_SELECT: &str = "id, host, repository, app, interval_ms, created_ms, next_poll_ms, failures, polled_ms, \
     last_error, last_tags, last_ignored";

fn watch_row(r: &AnyRow) -> Result<WatchRow, sqlx::Error> {
    Ok(WatchRow {
        id: r.try_get("id")?,
        host: r.try_get("host")?,
        repository: r.try_get("repository")?,
        app: r.try_get("app")?,
        interval_ms: r.try_get("interval_ms")?,
        created_ms: r.try_get("created_ms")?,
        next_poll_ms: r.try_get("next_poll_ms")?,
        failures: r.try_get("failures")?,
        polled_ms: r.try_get("polled_ms")?,
        last_error: r.try_get("last_error")?,
        last_tags: r.try_get("last_tags")?,
        last_ignored: r.try_get("last_ignored")?,
    })
}

fn outcome_row(r: &AnyRow) -> Result<TagOutcomeRow, sqlx::Error> {
    Ok(TagOutcomeRow {
        tag: r.try_get("tag")?,
        outcome: TagOutcome::parse(&r.try_get::<String, _>("outcome")?)?,
        problem: r.try_get("problem")?,
        detail: r.try_get("detail")?,
        attempts: r.try_get("attempts")?,
        retry_ms: r.try_get("retry_ms")?,
        at_ms: r.try_get("at_ms")?,
    })
}

impl Store {
    /// Creates a watch, due at once, with its audit row (`watch.create`) in one
    /// transaction, if fewer than `max` watches exist and none watches the same
    /// repository for the same app: `Ok(Err(existing id))` when one does, `Ok(Err(""))`
    /// at the limit (nothing is written either way).
    pub async fn create_watch(
        &self,
        w: &NewWatch,
        max: i64,
        now: i64,
        actor: &str,
    ) -> Result<Result<(), String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO watches (id, host, repository, app, interval_ms, created_ms, next_poll_ms)
             SELECT $1, $2, $3, $4, $5, $6, $6 WHERE (SELECT COUNT(*) FROM watches) < $7
             ON CONFLICT (host, repository, app) DO NOTHING",
        )
        .bind(&w.id)
        .bind(&w.host)
        .bind(&w.repository)
        .bind(&w.app)
        .bind(w.interval_ms)
        .bind(now)
        .bind(max)
        .execute(&mut *tx)
        .await
        .map_err(ctx("create watch"))?;
        if done.rows_affected() != 1 {
            let existing: Option<String> =
                sqlx::query("SELECT id FROM watches WHERE host = $1 AND repository = $2 AND app = $3")
                    .bind(&w.host)
                    .bind(&w.repository)
                    .bind(&w.app)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(ctx("find watch"))?
                    .map(|r| r.try_get("id"))
                    .transpose()
                    .map_err(ctx("read watch"))?;
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(Err(existing.unwrap_or_default()));
        }
        let detail = format!("{}/{} as {} every {} ms", w.host, w.repository, w.app, w.interval_ms);
        audit(&mut tx, actor, "watch.create", &w.id, &detail).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(Ok(()))
    }

    pub async fn watch(&self, id: &str) -> Result<Option<WatchRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {WATCH_SELECT} FROM watches WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("find watch"))?;
        row.as_ref().map(watch_row).transpose().map_err(ctx("read watch"))
    }

    /// At most `limit` watches with an id above `after`, by id.
    pub async fn watches(&self, after: &str, limit: i64) -> Result<Vec<WatchRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {WATCH_SELECT} FROM watches WHERE id > $1 ORDER BY id LIMIT $2"))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("list watches"))?;
        rows.iter().map(watch_row).collect::<Result<_, _>>().map_err(ctx("read watches"))
    }

    /// Removes a watch and its tag outcomes with the audit row (`watch.delete`) in one
    /// transaction; `false` if there is no such watch. The versions it registered stay.
    pub async fn delete_watch(&self, id: &str, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // The tags first: both databases check the reference at each statement.
        sqlx::query("DELETE FROM watch_tags WHERE watch = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("delete tag outcomes"))?;
        let row = sqlx::query("DELETE FROM watches WHERE id = $1 RETURNING host, repository, app")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(ctx("delete watch"))?;
        let Some(row) = row else {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(false);
        };
        let (host, repository, app): (String, String, String) = (
            row.try_get("host").map_err(ctx("read watch"))?,
            row.try_get("repository").map_err(ctx("read watch"))?,
            row.try_get("app").map_err(ctx("read watch"))?,
        );
        audit(&mut tx, actor, "watch.delete", id, &format!("{host}/{repository} as {app}")).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(true)
    }

    /// Ids of at most `limit` watches due at `now` whose lease is free, soonest first.
    pub async fn due_watches(&self, now: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM watches WHERE next_poll_ms <= $1 AND lease_until < $1 ORDER BY next_poll_ms, id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("find due watches"))?;
        rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>().map_err(ctx("read due watches"))
    }

    /// Takes the lease of a due watch for `replica` until `now + lease_ms`, if nobody
    /// holds a live one: one replica polls a watch at a time.
    pub async fn lease_watch(&self, id: &str, replica: &str, now: i64, lease_ms: i64) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE watches SET leased_by = $1, lease_until = $2
             WHERE id = $3 AND next_poll_ms <= $4 AND lease_until < $4",
        )
        .bind(replica)
        .bind(now.saturating_add(lease_ms))
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(ctx("lease watch"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends `replica`'s poll of a watch: the lease is given back and the next poll
    /// scheduled. `false` if the watch went (deleted) or another replica holds it.
    pub async fn finish_poll(&self, id: &str, replica: &str, now: i64, poll: &WatchPoll) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE watches SET lease_until = 0, leased_by = NULL, next_poll_ms = $1, failures = $2, polled_ms = $3,
             last_error = $4, last_tags = $5, last_ignored = $6 WHERE id = $7 AND leased_by = $8",
        )
        .bind(poll.next_poll_ms)
        .bind(poll.failures)
        .bind(now)
        .bind(&poll.error)
        .bind(poll.tags)
        .bind(poll.ignored)
        .bind(id)
        .bind(replica)
        .execute(&self.pool)
        .await
        .map_err(ctx("finish poll"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Every tag recorded for a watch, by tag.
    pub async fn recorded_tags(&self, watch: &str) -> Result<HashMap<String, RecordedTag>, StoreError> {
        let rows = sqlx::query("SELECT tag, outcome, attempts, retry_ms FROM watch_tags WHERE watch = $1")
            .bind(watch)
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("read tag outcomes"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("tag")?,
                    RecordedTag {
                        outcome: TagOutcome::parse(&r.try_get::<String, _>("outcome")?)?,
                        attempts: r.try_get("attempts")?,
                        retry_ms: r.try_get("retry_ms")?,
                    },
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read tag outcomes"))
    }

    /// The `limit` most recent tag outcomes of a watch, newest first.
    pub async fn tag_outcomes(&self, watch: &str, limit: i64) -> Result<Vec<TagOutcomeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT tag, outcome, problem, detail, attempts, retry_ms, at_ms FROM watch_tags WHERE watch = $1
             ORDER BY at_ms DESC, tag DESC LIMIT $2",
        )
        .bind(watch)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("read tag outcomes"))?;
        rows.iter().map(outcome_row).collect::<Result<_, _>>().map_err(ctx("read tag outcomes"))
    }

    /// Records what became of `row.tag` for a watch `replica` holds, with its audit row
    /// (`watch.tag-registered`, `watch.tag-refused` or `watch.tag-retry`) in one
    /// transaction. `false` (nothing written) if the watch went or another replica holds it.
    pub async fn record_tag(
        &self,
        watch: &str,
        replica: &str,
        row: &TagOutcomeRow,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write_keeping_calls().await?;
        // Written only while the lease is this replica's; the update takes the row lock.
        let held = sqlx::query("UPDATE watches SET leased_by = leased_by WHERE id = $1 AND leased_by = $2")
            .bind(watch)
            .bind(replica)
            .execute(&mut *tx)
            .await
            .map_err(ctx("check watch lease"))?;
        if held.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO watch_tags (watch, tag, outcome, problem, detail, attempts, retry_ms, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (watch, tag) DO UPDATE SET outcome = excluded.outcome, problem = excluded.problem,
             detail = excluded.detail, attempts = excluded.attempts, retry_ms = excluded.retry_ms,
             at_ms = excluded.at_ms",
        )
        .bind(watch)
        .bind(&row.tag)
        .bind(row.outcome.as_str())
        .bind(&row.problem)
        .bind(&row.detail)
        .bind(row.attempts)
        .bind(row.retry_ms)
        .bind(row.at_ms)
        .execute(&mut *tx)
        .await
        .map_err(ctx("record tag outcome"))?;
        let action = match row.outcome {
            TagOutcome::Registered => "watch.tag-registered",
            TagOutcome::Refused => "watch.tag-refused",
            TagOutcome::Retrying => "watch.tag-retry",
        };
        audit(&mut tx, actor, action, &format!("{watch}:{}", row.tag), &row.detail).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(true)
    }
}
