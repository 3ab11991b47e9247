//! Segment predicates in their bulk form, for statements that recompute many subjects at once.
//!
//! A behavioural predicate reads a source through subqueries correlated with the subject's key,
//! e.g. `(SELECT count(*) FROM public.orders o WHERE o.customer_id = s.customer_id AND o.category =
//! 'cycling') >= 3`. PostgreSQL runs each such subquery as its own subplan, once per subject (an
//! index scan and an executor rescan, about 2 µs), so ten behavioural predicates cost ten scans of
//! the subject's orders. In the bulk form every such subquery over one source becomes one column
//! of a single aggregate query per subject over that source (a `CROSS JOIN LATERAL` of an
//! aggregate without GROUP BY, which always returns one row): here `count(*) FILTER (WHERE
//! mseg_src.category = 'cycling')` over `mseg_src.customer_id = s.customer_id`. One index
//! scan then serves every predicate over the source, and a subject without source rows gets the
//! aggregates over no rows, exactly what the subqueries give (EXISTS is `bool_or`, NULL over no
//! rows, read as false).
//!
//! Only subqueries of exactly this shape are rewritten: EXISTS, or one plain aggregate, over one
//! table, tied to the subject by one equality of integer columns (a source column = the subject
//! key) and by nothing else, without grouping, ordering, limits, DISTINCT, set operations, CTEs or
//! subqueries of their own. Anything else stays correlated in the same predicate. The rewrite works
//! on PostgreSQL's analysed query tree and prints the parts with PostgreSQL's deparser, like the
//! canonical text. `mseg.verify_segments()` evaluates the original predicates, so it checks the
//! bulk form; the pg_regress file segments_bulk runs every maintenance path in it and verifies.

use std::ffi::{c_void, CStr};

use pgrx::pg_sys;
use pgrx::spi::quote_identifier;
use pgrx::PgTryBuilder;

use crate::catalog;
use crate::error::Result as MsegResult;

/// Placeholders for the rewritten subqueries in a template: `$1000`, `$1001`, … (four digits, so
/// none is a prefix of another). Predicates containing `$` are not rewritten.
const PLACEHOLDER_BASE: usize = 1000;
const MAX_VALUES: usize = 8999 - PLACEHOLDER_BASE;
/// Alias of the source in the aggregate queries and in the printed columns.
const SOURCE_ALIAS: &CStr = c"mseg_src";

/// One rewritten subquery: a column of the aggregate query over `relation` by `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceValue {
    /// `public.orders`, or `ONLY public.orders` where the subquery said so
    pub relation: String,
    /// the source column the subquery is tied to the subject key by (quoted)
    pub key: String,
    /// an aggregate over the source (alias `mseg_src`)
    pub column: String,
    /// an EXISTS: the column is a `bool_or`, NULL over no rows, which EXISTS reads as false
    pub exists: bool,
}

/// A predicate with some of its subqueries rewritten (see [`BulkPredicate::render`]).
#[derive(Clone, Debug)]
pub struct BulkPredicate {
    template: String,
    pub values: Vec<SourceValue>,
}

fn placeholder(i: usize) -> String {
    format!("${}", PLACEHOLDER_BASE + i)
}

impl BulkPredicate {
    /// The predicate's SQL with rewritten subquery `i` replaced by the expression `value(i)`.
    pub fn render(&self, value: impl Fn(usize) -> String) -> String {
        let mut sql = self.template.clone();
        for i in 0..self.values.len() {
            sql = sql.replace(&placeholder(i), &format!("({})", value(i)));
        }
        sql
    }
}

/// The aggregate queries an evaluation joins: one per (source, key column), each with the distinct
/// columns the rendered predicates use.
#[derive(Default)]
pub struct SourceAggregates {
    queries: Vec<(String, String, Vec<String>)>,
}

impl SourceAggregates {
    /// The SQL expression that stands for `v` in a rendered predicate.
    pub fn value(&mut self, v: &SourceValue) -> String {
        let j = match self.queries.iter().position(|(r, k, _)| *r == v.relation && *k == v.key) {
            Some(j) => j,
            None => {
                self.queries.push((v.relation.clone(), v.key.clone(), Vec::new()));
                self.queries.len() - 1
            }
        };
        let columns = &mut self.queries[j].2;
        let c = match columns.iter().position(|c| *c == v.column) {
            Some(c) => c,
            None => {
                columns.push(v.column.clone());
                columns.len() - 1
            }
        };
        if v.exists {
            format!("COALESCE(mseg_g{j}.c{c}, false)")
        } else {
            format!("mseg_g{j}.c{c}")
        }
    }

    /// `CROSS JOIN LATERAL (aggregate query) mseg_gJ` for every source, over the rows of the
    /// subject whose key is the SQL expression `subject_key` (one row each, whatever it matches).
    ///
    /// Each aggregate is gated by `(SELECT EXISTS (SELECT FROM source))`, an uncorrelated
    /// subquery PostgreSQL evaluates once per statement (an InitPlan, a one-time filter): over an
    /// empty source (customers loaded before their orders) no subject probes the source's index,
    /// and the aggregates over no rows are what the probes would have found. Over a non-empty
    /// source it costs one row read per statement.
    pub fn joins(&self, subject_key: &str) -> String {
        let mut sql = String::new();
        for (j, (relation, key, columns)) in self.queries.iter().enumerate() {
            let cols: Vec<String> = columns.iter().enumerate().map(|(c, col)| format!("{col} AS c{c}")).collect();
            sql.push_str(&format!(
                " CROSS JOIN LATERAL (SELECT {cols} FROM {relation} mseg_src \
                   WHERE mseg_src.{key} OPERATOR(pg_catalog.=) {subject_key} \
                     AND (SELECT EXISTS (SELECT FROM {relation} mseg_any))) mseg_g{j}",
                cols = cols.join(", ")
            ));
        }
        sql
    }
}

/// The bulk forms of `predicates` over `relation` (alias s, oid `relid`, key column number
/// `key_attnum`): None where a predicate is not given, has no subquery to rewrite, or does not analyse.
pub fn compile(relation: &str, relid: pg_sys::Oid, key_attnum: i16, predicates: &[Option<&str>]) -> MsegResult<Vec<Option<BulkPredicate>>> {
    catalog::as_upkeep(|| {
        // printed like the canonical text: only pg_catalog on the path, every other name qualified
        catalog::with_search_path(c"pg_catalog", || unsafe {
            let context = catalog::memory_context(pg_sys::CurrentMemoryContext, c"mseg bulk predicates");
            let previous = pg_sys::MemoryContextSwitchTo(context);
            let forms = predicates.iter().map(|p| p.and_then(|p| compile_one(relation, relid, key_attnum, p))).collect();
            pg_sys::MemoryContextSwitchTo(previous);
            pg_sys::MemoryContextDelete(context);
            Ok(forms)
        })
    })
}

struct Rewrite {
    subject_key: i16,
    values: Vec<SourceValue>,
}

/// SAFETY: runs in a memory context that is deleted afterwards; an error yields None.
unsafe fn compile_one(relation: &str, relid: pg_sys::Oid, key_attnum: i16, predicate: &str) -> Option<BulkPredicate> {
    if predicate.contains('$') {
        return None; // the placeholders must be the only `$` in the template
    }
    let built: Result<Option<BulkPredicate>, ()> = PgTryBuilder::new(|| unsafe {
        let Ok(parsed) = crate::predicate::parse(relation, "s", predicate) else { return Ok(None) };
        if crate::predicate::check(&parsed).is_err() {
            return Ok(None); // the SQL path refuses it with the reason
        }
        if !(*parsed.query).hasSubLinks {
            return Ok(None);
        }
        let tle_expr = parsed.expr;
        let mut rw = Rewrite { subject_key: key_attnum, values: Vec::new() };
        // the mutator on the whole expression (it may itself be one EXISTS)
        let rewritten = rewrite_node(tle_expr.cast(), (&mut rw as *mut Rewrite).cast());
        if rw.values.is_empty() || rw.values.len() > MAX_VALUES {
            return Ok(None);
        }
        let ctx = pg_sys::deparse_context_for(c"s".as_ptr(), relid);
        let template = CStr::from_ptr(pg_sys::deparse_expression(rewritten, ctx, true, false)).to_string_lossy().into_owned();
        let placed = (0..rw.values.len()).all(|i| template.matches(&placeholder(i)).count() == 1);
        if !placed || template.matches('$').count() != rw.values.len() {
            return Ok(None);
        }
        Ok(Some(BulkPredicate { template, values: rw.values }))
    })
    .catch_others(|_| Err(()))
    .execute();
    built.ok().flatten()
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn rewrite_node(node: *mut pg_sys::Node, ctx: *mut c_void) -> *mut pg_sys::Node {
    if node.is_null() {
        return node;
    }
    if (*node).type_ == pg_sys::NodeTag::T_SubLink {
        let rw = &mut *(ctx as *mut Rewrite);
        let Some(value) = source_value(node as *mut pg_sys::SubLink, rw.subject_key) else {
            return node; // stays correlated (and so does every subquery inside it)
        };
        let param = pg_sys::palloc0(std::mem::size_of::<pg_sys::Param>()) as *mut pg_sys::Param;
        (*param).xpr.type_ = pg_sys::NodeTag::T_Param;
        (*param).paramkind = pg_sys::ParamKind::PARAM_EXTERN;
        (*param).paramid = (PLACEHOLDER_BASE + rw.values.len()) as i32;
        (*param).paramtype = pg_sys::exprType(node);
        (*param).paramtypmod = pg_sys::exprTypmod(node);
        (*param).paramcollid = pg_sys::exprCollation(node);
        (*param).location = -1;
        rw.values.push(value);
        return param.cast();
    }
    crate::compat::expression_tree_mutator(node, rewrite_node, ctx)
}

unsafe fn list_nodes(list: *mut pg_sys::List) -> Vec<*mut pg_sys::Node> {
    if list.is_null() {
        return Vec::new();
    }
    (0..(*list).length as usize).map(|i| (*(*list).elements.add(i)).ptr_value as *mut pg_sys::Node).collect()
}

fn is_integer(typ: pg_sys::Oid) -> bool {
    typ == pg_sys::INT2OID || typ == pg_sys::INT4OID || typ == pg_sys::INT8OID
}

/// The source column number if `qual` is `source.column = s.key` (either way round) with integer
/// columns (or both uuid, text or varchar) and the built-in equality.
unsafe fn correlation(qual: *mut pg_sys::Node, subject_key: i16) -> Option<i16> {
    if (*qual).type_ != pg_sys::NodeTag::T_OpExpr {
        return None;
    }
    let op = &*(qual as *mut pg_sys::OpExpr);
    let name = pg_sys::get_opname(op.opno);
    if name.is_null()
        || CStr::from_ptr(name).to_bytes() != b"="
        || pg_sys::get_func_namespace(pg_sys::get_opcode(op.opno)) != pg_sys::PG_CATALOG_NAMESPACE.into()
    {
        return None;
    }
    let args = list_nodes(op.args);
    if args.len() != 2 || args.iter().any(|a| (**a).type_ != pg_sys::NodeTag::T_Var) {
        return None;
    }
    let (a, b) = (&*(args[0] as *mut pg_sys::Var), &*(args[1] as *mut pg_sys::Var));
    let (inner, outer) = if a.varlevelsup == 0 { (a, b) } else { (b, a) };
    let tied = inner.varlevelsup == 0
        && inner.varno == 1
        && inner.varattno > 0
        && outer.varlevelsup == 1
        && outer.varno == 1
        && outer.varattno == subject_key
        && ((is_integer(inner.vartype) && is_integer(outer.vartype))
            // a uuid or text subject key: the same type on both sides
            || (inner.vartype == outer.vartype
                && [pg_sys::UUIDOID, pg_sys::TEXTOID, pg_sys::VARCHAROID].contains(&inner.vartype)));
    tied.then_some(inner.varattno)
}

/// The aggregate column for a subquery of the supported shape (see the module comment), else None.
unsafe fn source_value(sublink: *mut pg_sys::SubLink, subject_key: i16) -> Option<SourceValue> {
    let sl = &*sublink;
    let exists = match sl.subLinkType {
        pg_sys::SubLinkType::EXISTS_SUBLINK => true,
        pg_sys::SubLinkType::EXPR_SUBLINK => false,
        _ => return None,
    };
    if !sl.testexpr.is_null() || sl.subselect.is_null() || (*sl.subselect).type_ != pg_sys::NodeTag::T_Query {
        return None;
    }
    let q = &*(sl.subselect as *mut pg_sys::Query);
    let plain = q.commandType == pg_sys::CmdType::CMD_SELECT
        && q.utilityStmt.is_null()
        && !q.hasWindowFuncs
        && !q.hasTargetSRFs
        && !q.hasSubLinks
        && !q.hasDistinctOn
        && !q.hasRecursive
        && !q.hasModifyingCTE
        && !q.hasForUpdate
        && q.cteList.is_null()
        && q.groupClause.is_null()
        && q.groupingSets.is_null()
        && q.havingQual.is_null()
        && q.windowClause.is_null()
        && q.distinctClause.is_null()
        && q.sortClause.is_null()
        && q.limitOffset.is_null()
        && q.limitCount.is_null()
        && q.setOperations.is_null()
        && q.rowMarks.is_null()
        // EXISTS over an aggregate is always true; a scalar subquery must aggregate to one row
        && q.hasAggs != exists;
    if !plain {
        return None;
    }
    let rtes = list_nodes(q.rtable);
    if rtes.len() != 1 {
        return None;
    }
    let rte = &*(rtes[0] as *mut pg_sys::RangeTblEntry);
    let table = rte.relkind as u8 == pg_sys::RELKIND_RELATION || rte.relkind as u8 == pg_sys::RELKIND_PARTITIONED_TABLE;
    if rte.rtekind != pg_sys::RTEKind::RTE_RELATION || !table || !rte.tablesample.is_null() || q.jointree.is_null() {
        return None;
    }
    let from = list_nodes((*q.jointree).fromlist);
    if from.len() != 1 || (*from[0]).type_ != pg_sys::NodeTag::T_RangeTblRef || (*(from[0] as *mut pg_sys::RangeTblRef)).rtindex != 1 {
        return None;
    }
    let mut key_attno = None;
    let mut rest: *mut pg_sys::List = std::ptr::null_mut();
    for qual in list_nodes(pg_sys::make_ands_implicit((*q.jointree).quals.cast())) {
        match correlation(qual, subject_key) {
            Some(a) if key_attno.is_none() => key_attno = Some(a),
            Some(_) => return None,
            None if pg_sys::contain_vars_of_level(qual, 1) => return None,
            None => rest = pg_sys::lappend(rest, qual.cast()),
        }
    }
    let key_attno = key_attno?;
    let key = pg_sys::get_attname(rte.relid, key_attno, true);
    if key.is_null() {
        return None;
    }
    let key = quote_identifier(CStr::from_ptr(key).to_string_lossy().as_ref());
    let relation = format!("{}{}", if rte.inh { "" } else { "ONLY " }, catalog::relation_name(rte.relid));
    let ctx = pg_sys::deparse_context_for(SOURCE_ALIAS.as_ptr(), rte.relid);
    let print = |n: *mut pg_sys::Node| CStr::from_ptr(pg_sys::deparse_expression(n, ctx, true, false)).to_string_lossy().into_owned();
    let condition = (!rest.is_null()).then(|| pg_sys::make_ands_explicit(rest));
    if exists {
        let column = match condition {
            Some(c) => format!("pg_catalog.bool_or({})", print(c.cast())),
            None => "pg_catalog.bool_or(true)".to_owned(),
        };
        return Some(SourceValue { relation, key, column, exists: true });
    }
    let targets: Vec<*mut pg_sys::TargetEntry> =
        list_nodes(q.targetList).into_iter().map(|t| t as *mut pg_sys::TargetEntry).filter(|t| !(**t).resjunk).collect();
    if targets.len() != 1 || (*(*targets[0]).expr).type_ != pg_sys::NodeTag::T_Aggref {
        return None;
    }
    let aggref = (*targets[0]).expr as *mut pg_sys::Aggref;
    let agg = &mut *aggref;
    if agg.agglevelsup != 0 || agg.aggkind as u8 != b'n' || !agg.aggfilter.is_null() || pg_sys::contain_vars_of_level(aggref.cast(), 1) {
        return None;
    }
    if let Some(c) = condition {
        agg.aggfilter = c;
    }
    Some(SourceValue { relation, key, column: print(aggref.cast()), exists: false })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn bulk_predicates_rewrite_key_correlated_subqueries_only() {
        use crate::bulk_predicates::compile;
        Spi::run("CREATE TABLE public.t_bs (id int8 PRIMARY KEY, n int4)").unwrap();
        Spi::run("CREATE TABLE public.t_bo (id serial, sid int4, kind text, qty int4)").unwrap();
        let relid = Spi::get_one::<pg_sys::Oid>("SELECT 'public.t_bs'::regclass::oid").unwrap().unwrap();
        let exists_a = "EXISTS (SELECT 1 FROM public.t_bo o WHERE o.sid = s.id AND o.kind = 'a')";
        let predicates = [
            Some(exists_a.to_owned()),
            Some("(SELECT count(*) FROM public.t_bo o WHERE o.sid = s.id) > 2".to_owned()),
            Some("(SELECT sum(o.qty) FROM ONLY public.t_bo o WHERE s.id = o.sid AND o.qty > 1) > 5".to_owned()),
            // not rewritten: another outer reference, no correlation, no aggregate, two tables,
            // the key twice, a `$` in the text, no subquery at all
            Some("EXISTS (SELECT 1 FROM public.t_bo o WHERE o.sid = s.id AND o.qty > s.n)".to_owned()),
            Some("EXISTS (SELECT 1 FROM public.t_bo o WHERE o.kind = 'a')".to_owned()),
            Some("(SELECT o.qty FROM public.t_bo o WHERE o.sid = s.id LIMIT 1) > 1".to_owned()),
            Some("EXISTS (SELECT 1 FROM public.t_bo o, public.t_bo p WHERE o.sid = s.id)".to_owned()),
            Some("EXISTS (SELECT 1 FROM public.t_bo o WHERE o.sid = s.id AND o.id = s.id)".to_owned()),
            Some(format!("'$1000' = s.n::text OR {exists_a}")),
            Some("s.n > 1".to_owned()),
            None,
            // one part rewritten, the other stays correlated
            Some(format!("s.n > 1 AND {exists_a} AND (SELECT max(o.qty) FROM public.t_bo o WHERE o.sid = s.id AND o.qty > s.n) > 1")),
        ];
        let texts: Vec<Option<&str>> = predicates.iter().map(|p| p.as_deref()).collect();
        let forms = compile("public.t_bs", relid, 1, &texts).unwrap();
        let rewritten: Vec<bool> = forms.iter().map(|f| f.is_some()).collect();
        assert_eq!(rewritten, vec![true, true, true, false, false, false, false, false, false, false, false, true]);

        let exists = forms[0].as_ref().unwrap();
        assert_eq!(exists.values.len(), 1);
        assert_eq!((exists.values[0].relation.as_str(), exists.values[0].key.as_str()), ("public.t_bo", "sid"));
        assert_eq!(exists.values[0].column, "pg_catalog.bool_or((mseg_src.kind = 'a'::text))");
        assert!(exists.values[0].exists);
        assert_eq!(exists.render(|_| "V".to_owned()), "(V)");

        let count = forms[1].as_ref().unwrap();
        assert_eq!(count.values[0].column, "count(*)");
        assert!(!count.values[0].exists);
        assert_eq!(count.render(|_| "V".to_owned()), "((V) > 2)");

        let sum = forms[2].as_ref().unwrap();
        assert_eq!(sum.values[0].relation, "ONLY public.t_bo");
        assert_eq!(sum.values[0].column, "sum(mseg_src.qty) FILTER (WHERE (mseg_src.qty > 1))");

        let mixed = forms[11].as_ref().unwrap();
        assert_eq!(mixed.values.len(), 1);
        let sql = mixed.render(|_| "V".to_owned());
        assert!(sql.contains("(V)") && sql.contains("SELECT max(o.qty)"), "{sql}");
    }
}
