//! Progress of long-running pg_mseg operations (backfills, key rotations, segment refreshes),
//! visible from every session.
//!
//! A backfill runs inside the caller's transaction, so its rows are invisible to others until
//! commit. Progress therefore lives in shared memory (like `pg_stat_progress_*`): a fixed array of
//! slots, one per running operation, read by the `mseg.progress` view. A slot stays visible
//! ("waiting for commit") until its transaction ends.

use pgrx::lwlock::PgLwLock;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;

pub const SLOTS: usize = 32;
const NAME_LEN: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Operation {
    Backfill = 1,
    Rotate = 2,
    Refresh = 3,
}

impl Operation {
    fn unit(code: u8) -> &'static str {
        if code == Operation::Refresh as u8 {
            "subjects"
        } else {
            "heap blocks"
        }
    }

    fn label(code: u8) -> &'static str {
        match code {
            1 => "backfill pseudonym column",
            2 => "rotate domain key",
            3 => "refresh segment memberships",
            _ => "unknown",
        }
    }
}

#[derive(Clone, Copy)]
pub struct Slot {
    pid: i32,
    operation: u8,
    finished: bool,
    relid: u32,
    column: [u8; NAME_LEN],
    blocks_total: i64,
    blocks_done: i64,
    rows_done: i64,
    started_at: i64,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            pid: 0,
            operation: 0,
            finished: false,
            relid: 0,
            column: [0; NAME_LEN],
            blocks_total: 0,
            blocks_done: 0,
            rows_done: 0,
            started_at: 0,
        }
    }
}

#[derive(Clone, Copy)]
pub struct Slots([Slot; SLOTS]);

impl Default for Slots {
    fn default() -> Self {
        Slots([Slot::default(); SLOTS])
    }
}

// SAFETY: plain old data, no pointers.
unsafe impl PGRXSharedMemory for Slots {}

pub static PROGRESS: PgLwLock<Slots> = unsafe { PgLwLock::new(c"pg_mseg progress") };

/// Handle of a claimed slot (None when all slots are busy: the operation still runs, unseen).
pub type SlotId = Option<usize>;

fn my_pid() -> i32 {
    unsafe { pg_sys::MyProcPid }
}

pub fn start(operation: Operation, relid: pg_sys::Oid, column: &str, blocks_total: i64) -> SlotId {
    let pid = my_pid();
    let mut name = [0u8; NAME_LEN];
    let n = column.len().min(NAME_LEN - 1);
    name[..n].copy_from_slice(&column.as_bytes()[..n]);
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let id = {
        let mut slots = PROGRESS.exclusive();
        let free = slots.0.iter().position(|s| s.pid == 0);
        if let Some(i) = free {
            slots.0[i] = Slot {
                pid,
                operation: operation as u8,
                finished: false,
                relid: u32::from(relid),
                column: name,
                blocks_total,
                blocks_done: 0,
                rows_done: 0,
                started_at: now,
            };
        }
        free
    };
    if id.is_some() {
        release_at_transaction_end();
    }
    id
}

pub fn advance(slot: SlotId, blocks_done: i64, rows_done: i64) {
    if let Some(i) = slot {
        let mut slots = PROGRESS.exclusive();
        slots.0[i].blocks_done = blocks_done;
        slots.0[i].rows_done = rows_done;
    }
}

pub fn finish(slot: SlotId, rows_done: i64) {
    if let Some(i) = slot {
        let mut slots = PROGRESS.exclusive();
        slots.0[i].blocks_done = slots.0[i].blocks_total;
        slots.0[i].rows_done = rows_done;
        slots.0[i].finished = true;
    }
}

/// Free every slot of this backend.
fn release_mine() {
    let pid = my_pid();
    let mut slots = PROGRESS.exclusive();
    for s in slots.0.iter_mut().filter(|s| s.pid == pid) {
        *s = Slot::default();
    }
}

fn release_at_transaction_end() {
    use pgrx::{register_xact_callback, PgXactCallbackEvent};
    register_xact_callback(PgXactCallbackEvent::Commit, release_mine);
    register_xact_callback(PgXactCallbackEvent::Abort, release_mine);
}

/// Rows of the `mseg.progress` view (which renders relid as regclass and the start time).
#[pg_extern(volatile, parallel_safe, name = "progress_slots")]
fn progress_slots() -> TableIterator<
    'static,
    (
        name!(pid, i32),
        name!(operation, String),
        name!(relid, pg_sys::Oid),
        name!(target, String),
        name!(total, i64),
        name!(done, i64),
        name!(unit, String),
        name!(rows_done, i64),
        name!(finished, bool),
        name!(started_us, i64),
    ),
> {
    let snapshot: Vec<Slot> = { PROGRESS.share().0.iter().filter(|s| s.pid != 0).copied().collect() };
    let rows: Vec<_> = snapshot
        .into_iter()
        .map(|s| {
            let len = s.column.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
            (
                s.pid,
                Operation::label(s.operation).to_owned(),
                pg_sys::Oid::from(s.relid),
                String::from_utf8_lossy(&s.column[..len]).into_owned(),
                s.blocks_total,
                s.blocks_done,
                Operation::unit(s.operation).to_owned(),
                s.rows_done,
                s.finished,
                s.started_at,
            )
        })
        .collect();
    TableIterator::new(rows)
}
