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
/// anything else the in-process evaluation does not take), does not analyse any more, or no longer
/// passes the predicate allowlist (the SQL path then refuses it with the reason).
/// SAFETY: called with CurrentMemoryContext = the long-lived context of the result.
unsafe fn compile_one(relation: &str, predicate: &str) -> Option<*mut pg_sys::ExprState> {
    let built: Result<*mut pg_sys::ExprState, ()> = PgTryBuilder::new(|| unsafe {
        let parsed = crate::predicate::parse(relation, "s", predicate).map_err(|_| ())?;
        crate::predicate::check(&parsed).map_err(|_| ())?;
        let q = &*parsed.query;
        let simple = !q.hasSubLinks && !q.rtable.is_null() && (*q.rtable).length == 1;
        if !simple {
            return Err(());
        }
        // constant folding and operator function ids, as the planner does for the SQL path;
        // the Vars (varno 1) read the expression context's scan tuple
        let planned = pg_sys::expression_planner(parsed.expr);
        Ok(pg_sys::ExecInitExpr(planned, std::ptr::null_mut()))
    })
    .catch_others(|_| Err(()))
    .execute();
    built.ok().filter(|s| !s.is_null())
}

impl RowPredicates {
    /// Compile `predicates` (None: not to be compiled) over `relation` (alias s), whose current
    /// tuple descriptor is `desc`. Parsing and the permission checks of the functions called run
    /// as `mseg_upkeep` with a pinned search_path, as the SQL path's do.
    pub fn compile(relation: &str, desc: pg_sys::TupleDesc, predicates: &[Option<&str>]) -> MsegResult<RowPredicates> {
        catalog::as_upkeep(|| unsafe {
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

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Store (n, city) into the virtual slot `slot` of table t_rp (id int8, n int4, city text).
    unsafe fn store_rp(slot: *mut pg_sys::TupleTableSlot, n: Option<i32>, city: Option<&str>) {
        ((*(*slot).tts_ops).clear.unwrap())(slot);
        let values = (*slot).tts_values;
        let nulls = (*slot).tts_isnull;
        *values.add(0) = 1i64.into_datum().unwrap();
        *nulls.add(0) = false;
        *nulls.add(1) = n.is_none();
        if let Some(n) = n {
            *values.add(1) = n.into_datum().unwrap();
        }
        *nulls.add(2) = city.is_none();
        if let Some(c) = city {
            *values.add(2) = c.into_datum().unwrap();
        }
        pg_sys::ExecStoreVirtualTuple(slot);
    }

    #[pg_test]
    fn row_predicates_compile_evaluate_and_refuse() {
        use crate::row_predicates::RowPredicates;
        Spi::run("CREATE TABLE public.t_rp (id int8, n int4, city text)").unwrap();
        let relid = Spi::get_one::<pg_sys::Oid>("SELECT 'public.t_rp'::regclass::oid").unwrap().unwrap();
        unsafe {
            let rel = pg_sys::relation_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let desc = (*rel).rd_att;
            let predicates = [
                Some("(s.n >= 10)"),
                Some("(s.city = ANY (ARRAY['Berlin'::text, 'Köln'::text]))"),
                Some("(EXISTS (SELECT 1 FROM public.t_rp x WHERE x.id = s.id))"),
                None,
                Some("(s.n > 'not a number')"),
                Some("(s.n)"),
            ];
            let rp = RowPredicates::compile("public.t_rp", desc, &predicates).unwrap();
            // compiled: plain expressions; not: subqueries, nothing given, errors, non-boolean
            let compiled: Vec<bool> = (0..predicates.len()).map(|i| rp.is_compiled(i)).collect();
            assert_eq!(compiled, vec![true, true, false, false, false, false]);
            assert!(rp.fits(desc));
            let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsVirtual);
            store_rp(slot, Some(12), Some("Köln"));
            assert_eq!((rp.holds(0, slot), rp.holds(1, slot), rp.holds(2, slot)), (Some(true), Some(true), None));
            rp.reset();
            store_rp(slot, Some(9), Some("Hamburg"));
            assert_eq!((rp.holds(0, slot), rp.holds(1, slot)), (Some(false), Some(false)));
            // NULL is not true: not a member, as in the SQL evaluation
            store_rp(slot, None, None);
            assert_eq!((rp.holds(0, slot), rp.holds(1, slot)), (Some(false), Some(false)));
            rp.reset();
            pg_sys::ExecDropSingleTupleTableSlot(slot);
            pg_sys::relation_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            // a changed column type: the compiled expressions no longer fit the descriptor
            Spi::run("ALTER TABLE public.t_rp ALTER COLUMN n TYPE int8").unwrap();
            let rel = pg_sys::relation_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            assert!(!rp.fits((*rel).rd_att));
            pg_sys::relation_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        }
    }
}
