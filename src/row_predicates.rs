//! Row-only segment predicates compiled into PostgreSQL executor expressions, evaluated in-process
//! over a tuple of the subject table: no query, no plan, no SPI call.
//!
//! The segment trigger uses them where a statement hands it both versions of a row (an UPDATE of
//! the subject table): a row-only segment's membership is `predicate(row) AND legal basis`, the
//! basis does not change with the row, so a subject whose predicates keep their truth value keeps
//! its set and needs no recompute. Only predicates without subqueries are compiled (those with
//! sources always take the SQL path). The expressions are built from the stored canonical text by
//! PostgreSQL's parser and planner (`expression_planner`), so they mean exactly what the SQL
//! evaluation means. They are bound to the subject table's tuple descriptor at compile time and
//! not used once it differs; the relcache invalidation an ALTER TABLE sends also makes the
//! trigger rebuild them with its catalog.

use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::PgTryBuilder;

use crate::catalog;
use crate::compat;
use crate::error::Result as MsegResult;

pub struct RowPredicates {
    /// owns every expression, the expression context and the descriptor copy
    context: pg_sys::MemoryContext,
    econtext: *mut pg_sys::ExprContext,
    desc: pg_sys::TupleDesc,
    /// one entry per predicate given to `compile`; null where it was not compiled
    states: Vec<*mut pg_sys::ExprState>,
}

impl Drop for RowPredicates {
    fn drop(&mut self) {
        // SAFETY: the context was created by `compile` and nothing outside it points into it.
        unsafe { pg_sys::MemoryContextDelete(self.context) }
    }
}

/// The executor expression of one predicate over `relation s`, or None when it has subqueries (or
/// anything else the in-process evaluation does not take) or does not analyse any more.
/// SAFETY: called with CurrentMemoryContext = the long-lived context of the result.
unsafe fn compile_one(relation: &str, predicate: &str) -> Option<*mut pg_sys::ExprState> {
    let sql = CString::new(format!("SELECT ({predicate}) FROM {relation} s")).ok()?;
    let built: Result<*mut pg_sys::ExprState, ()> = PgTryBuilder::new(|| unsafe {
        let raw = pg_sys::raw_parser(sql.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        if raw.is_null() || (*raw).length != 1 {
            return Err(());
        }
        let rawstmt = (*(*raw).elements).ptr_value as *mut pg_sys::RawStmt;
        let query = pg_sys::parse_analyze_fixedparams(rawstmt, sql.as_ptr(), std::ptr::null(), 0, std::ptr::null_mut());
        let q = &*query;
        let simple = !q.hasSubLinks
            && !q.hasAggs
            && !q.hasWindowFuncs
            && !q.hasTargetSRFs
            && !q.rtable.is_null()
            && (*q.rtable).length == 1
            && !q.targetList.is_null()
            && (*q.targetList).length == 1;
        if !simple {
            return Err(());
        }
        let tle = (*(*q.targetList).elements).ptr_value as *mut pg_sys::TargetEntry;
        if pg_sys::exprType((*tle).expr.cast()) != pg_sys::BOOLOID {
            return Err(());
        }
        // constant folding and operator function ids, as the planner does for the SQL path;
        // the Vars (varno 1) read the expression context's scan tuple
        let planned = pg_sys::expression_planner((*tle).expr);
        Ok(pg_sys::ExecInitExpr(planned, std::ptr::null_mut()))
    })
    .catch_others(|_| Err(()))
    .execute();
    built.ok().filter(|s| !s.is_null())
}

impl RowPredicates {
    /// Compile `predicates` (None: not to be compiled) over `relation` (alias s), whose current
    /// tuple descriptor is `desc`. Parsing and the permission checks of the functions called run
    /// as the extension owner with a pinned search_path, as the SQL path's do.
    pub fn compile(relation: &str, desc: pg_sys::TupleDesc, predicates: &[Option<&str>]) -> MsegResult<RowPredicates> {
        catalog::as_owner(|| unsafe {
            let context = catalog::memory_context(pg_sys::TopMemoryContext, c"mseg row predicates");
            let previous = pg_sys::MemoryContextSwitchTo(context);
            let mut compiled = RowPredicates { context, econtext: std::ptr::null_mut(), desc: std::ptr::null_mut(), states: Vec::new() };
            for p in predicates {
                compiled.states.push(p.and_then(|p| compile_one(relation, p)).unwrap_or(std::ptr::null_mut()));
            }
            compiled.econtext = pg_sys::CreateStandaloneExprContext();
            compiled.desc = pg_sys::CreateTupleDescCopy(desc);
            pg_sys::MemoryContextSwitchTo(previous);
            Ok(compiled)
        })
    }

    /// Whether the expressions still fit the table's tuple descriptor `desc`.
    /// SAFETY: `desc` is a valid descriptor.
    pub unsafe fn fits(&self, desc: pg_sys::TupleDesc) -> bool {
        // what the compiled Vars rely on: each column's position, type and storage (not the
        // constraints and defaults equalTupleDescs also compares)
        let (a, b) = (&*self.desc, &*desc);
        a.natts == b.natts
            && (0..a.natts as usize).all(|i| {
                let (x, y) = (&*compat::tuple_desc_attr(self.desc, i), &*compat::tuple_desc_attr(desc, i));
                x.atttypid == y.atttypid
                    && x.atttypmod == y.atttypmod
                    && x.attlen == y.attlen
                    && x.attbyval == y.attbyval
                    && x.attalign == y.attalign
                    && x.attisdropped == y.attisdropped
            })
    }

    pub fn is_compiled(&self, i: usize) -> bool {
        self.states.get(i).is_some_and(|s| !s.is_null())
    }

    /// Predicate `i` over the row in `slot`: Some(true) when it holds, Some(false) when false or
    /// NULL (membership needs true), None when it is not compiled.
    /// SAFETY: `slot` holds a tuple of the descriptor this was checked to fit.
    pub unsafe fn holds(&self, i: usize, slot: *mut pg_sys::TupleTableSlot) -> Option<bool> {
        let state = *self.states.get(i)?;
        if state.is_null() {
            return None;
        }
        let eval = (*state).evalfunc?;
        let econtext = self.econtext;
        (*econtext).ecxt_scantuple = slot;
        let previous = pg_sys::MemoryContextSwitchTo((*econtext).ecxt_per_tuple_memory);
        let mut isnull = false;
        // an error in the predicate (it would fail the SQL evaluation the same way) ends the statement
        let value = pg_sys::ffi::pg_guard_ffi_boundary(|| eval(state, econtext, &mut isnull));
        pg_sys::MemoryContextSwitchTo(previous);
        Some(!isnull && value.value() != 0)
    }

    /// Free what the evaluations of one row allocated.
    pub fn reset(&self) {
        // SAFETY: the per-tuple context of our expression context.
        unsafe { pg_sys::MemoryContextReset((*self.econtext).ecxt_per_tuple_memory) }
    }
}
