//! The one front end for every predicate pg_mseg evaluates: segment predicates (their SQL form,
//! the in-process row form and the bulk form) and pool-segment predicates.
//!
//! A predicate is text written by an administrator and evaluated later by the extension's own
//! triggers and exports, under an identity the writer does not control. So it is parsed here, by
//! PostgreSQL's own parser, inside a fixed wrapper `SELECT (<predicate>) AS mseg_member FROM
//! <relation> <alias>`, and must come back as exactly that wrapper; the analysed tree is then
//! checked against an **allowlist** (not a denylist) of what may run:
//! - node kinds: plain expressions (variables, constants, operators, function calls, CASE,
//!   COALESCE, boolean logic, NULL tests, array and row constructors, subqueries); anything else
//!   (domain coercions, XML, parameters, window functions, sequences, CTEs, table functions…) is
//!   refused by name;
//! - functions and operators: built-in ones (schema `pg_catalog`, which no non-superuser can
//!   create in) that are immutable, or stable and on [`STABLE_ALLOWED`] (date/time arithmetic and
//!   formatting that depend on the clock or the time zone, never on server state, files,
//!   settings or relations named by a value); aggregates likewise;
//! - types: every value a node produces is of a built-in type or an enum (never a domain, whose
//!   CHECK could call user code, nor a user composite or range, whose input could); object
//!   reference types (`regclass` & co.) are refused: they name relations by value;
//! - relations: only ordinary or partitioned tables; which ones is the caller's rule (the subject
//!   table and registered sources; the pooled twins).
//! Parsing runs as whoever calls: the definer at definition time, `mseg_upkeep` when the upkeep
//! re-analyses stored text.

use std::ffi::{c_void, CStr, CString};

use pgrx::pg_sys;
use pgrx::PgTryBuilder;

use crate::error::{Code, MsegError, Result};

/// Stable built-in functions a predicate may call: they depend on the clock, the time zone, the
/// date style or the output functions of their arguments' types, and read nothing else. (Not the
/// JSON builders: `to_jsonb` & co. call a user-defined cast of their argument's type to json.)
pub const STABLE_ALLOWED: &[&str] = &[
    "now",
    "statement_timestamp",
    "transaction_timestamp",
    "age",
    "date",
    "date_part",
    "date_trunc",
    "extract",
    "make_timestamptz",
    "overlaps",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "timezone",
    "to_char",
    "to_date",
    "to_number",
    "to_timestamp",
    "date_cmp_timestamptz",
    "date_eq_timestamptz",
    "date_ge_timestamptz",
    "date_gt_timestamptz",
    "date_le_timestamptz",
    "date_lt_timestamptz",
    "date_ne_timestamptz",
    "timestamp_cmp_timestamptz",
    "timestamp_eq_timestamptz",
    "timestamp_ge_timestamptz",
    "timestamp_gt_timestamptz",
    "timestamp_le_timestamptz",
    "timestamp_lt_timestamptz",
    "timestamp_ne_timestamptz",
    "timestamptz_cmp_date",
    "timestamptz_cmp_timestamp",
    "timestamptz_eq_date",
    "timestamptz_eq_timestamp",
    "timestamptz_ge_date",
    "timestamptz_ge_timestamp",
    "timestamptz_gt_date",
    "timestamptz_gt_timestamp",
    "timestamptz_le_date",
    "timestamptz_le_timestamp",
    "timestamptz_lt_date",
    "timestamptz_lt_timestamp",
    "timestamptz_ne_date",
    "timestamptz_ne_timestamp",
    "timestamptz_mi_interval",
    "timestamptz_pl_interval",
    "interval_pl_timestamptz",
    "anytextcat",
    "textanycat",
    "concat",
    "concat_ws",
    "format",
    "array_to_string",
    "quote_literal",
    "quote_nullable",
    "length",
    "jsonb_path_exists_tz",
    "jsonb_path_match_tz",
    "jsonb_path_query_first_tz",
];

/// Built-in functions that look up and call a user-defined cast of their argument's type (to json):
/// refused whatever their volatility (`jsonb_object_agg` is even immutable).
const CALLS_USER_CASTS: &[&str] = &[
    "to_json",
    "to_jsonb",
    "array_to_json",
    "row_to_json",
    "json_build_array",
    "json_build_object",
    "jsonb_build_array",
    "jsonb_build_object",
];
const CALLS_USER_CASTS_PREFIXES: &[&str] = &["json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg"];

/// Functions that make a predicate's value change with time alone (refresh_segments catches up).
const TIME_FUNCTIONS: &[&str] = &["now", "statement_timestamp", "transaction_timestamp", "age"];

/// Object reference types: a value of one names a relation, function, role… by itself.
const REFERENCE_TYPES: &[pg_sys::Oid] = &[
    pg_sys::REGCLASSOID,
    pg_sys::REGPROCOID,
    pg_sys::REGPROCEDUREOID,
    pg_sys::REGOPEROID,
    pg_sys::REGOPERATOROID,
    pg_sys::REGTYPEOID,
    pg_sys::REGCONFIGOID,
    pg_sys::REGDICTIONARYOID,
    pg_sys::REGNAMESPACEOID,
    pg_sys::REGROLEOID,
    pg_sys::REGCOLLATIONOID,
];

/// Why a predicate was refused: the message says what, the detail why it is not allowed.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub message: String,
    pub detail: String,
    /// a hint of its own, instead of the general one on what a predicate is
    pub hint: Option<String>,
}

impl Refusal {
    fn new(message: impl Into<String>, detail: impl Into<String>) -> Self {
        Refusal { message: message.into(), detail: detail.into(), hint: None }
    }
}

/// How a predicate failed the wrapper parse.
#[derive(Debug)]
pub enum ParseFailure {
    /// the parser's message
    Syntax(String),
    /// not exactly the wrapper with one expression
    NotSingleExpression,
    /// names or types do not resolve: the analyser's message
    Analysis(String),
}

/// What the allowlist walk learnt: the relations read (with the column numbers read from each,
/// 0 = the whole row), and whether the value depends on the current time.
#[derive(Default, Debug)]
pub struct Facts {
    pub relations: Vec<(pg_sys::Oid, Vec<i32>)>,
    pub time_dependent: bool,
}

/// A parsed and analysed predicate (in the current memory context).
pub struct Parsed {
    pub query: *mut pg_sys::Query,
    pub expr: *mut pg_sys::Expr,
}

fn caught_message(e: &pg_sys::panic::CaughtError) -> String {
    match e {
        pg_sys::panic::CaughtError::PostgresError(r) => r.message().to_owned(),
        pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_owned(),
        pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_owned(),
    }
}

unsafe fn first(l: *mut pg_sys::List) -> *mut c_void {
    (*(*l).elements).ptr_value
}

/// Parse and analyse `predicate` inside `SELECT (predicate) AS mseg_member FROM relation alias`
/// (`relation` already quoted and qualified). Only the wrapper with one expression is accepted:
/// a predicate cannot close the parentheses and add clauses or statements of its own.
/// SAFETY: allocates in the current memory context, which must outlive the result's use.
pub unsafe fn parse(relation: &str, alias: &str, predicate: &str) -> std::result::Result<Parsed, ParseFailure> {
    let sql = format!("SELECT ({predicate}) AS mseg_member FROM {relation} {alias}");
    let c_sql = CString::new(sql).map_err(|_| ParseFailure::Syntax("the predicate contains a NUL byte".to_owned()))?;
    let raw: std::result::Result<*mut pg_sys::List, String> =
        PgTryBuilder::new(|| Ok(unsafe { pg_sys::raw_parser(c_sql.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT) }))
            .catch_others(|e| Err(caught_message(&e)))
            .execute();
    let raw = raw.map_err(ParseFailure::Syntax)?;
    let malformed = raw.is_null() || (*raw).length != 1 || {
        let stmt = (*(first(raw) as *mut pg_sys::RawStmt)).stmt;
        if (*stmt).type_ != pg_sys::NodeTag::T_SelectStmt {
            true
        } else {
            let s = stmt as *mut pg_sys::SelectStmt;
            let one = |l: *mut pg_sys::List| !l.is_null() && (*l).length == 1;
            !(one((*s).targetList)
                && one((*s).fromClause)
                && (*s).whereClause.is_null()
                && (*s).groupClause.is_null()
                && (*s).havingClause.is_null()
                && (*s).windowClause.is_null()
                && (*s).sortClause.is_null()
                && (*s).limitCount.is_null()
                && (*s).limitOffset.is_null()
                && (*s).lockingClause.is_null()
                && (*s).withClause.is_null()
                && (*s).distinctClause.is_null()
                && (*s).intoClause.is_null()
                && (*s).valuesLists.is_null()
                && (*s).op == pg_sys::SetOperation::SETOP_NONE)
        }
    };
    if malformed {
        return Err(ParseFailure::NotSingleExpression);
    }
    let query: std::result::Result<*mut pg_sys::Query, String> = PgTryBuilder::new(|| unsafe {
        let rawstmt = first(raw) as *mut pg_sys::RawStmt;
        Ok(pg_sys::parse_analyze_fixedparams(rawstmt, c_sql.as_ptr(), std::ptr::null(), 0, std::ptr::null_mut()))
    })
    .catch_others(|e| Err(caught_message(&e)))
    .execute();
    let query = query.map_err(ParseFailure::Analysis)?;
    if (*query).targetList.is_null() || (*(*query).targetList).length != 1 {
        return Err(ParseFailure::NotSingleExpression);
    }
    let tle = first((*query).targetList) as *mut pg_sys::TargetEntry;
    Ok(Parsed { query, expr: (*tle).expr })
}

/// The predicate error of a parse failure (for definitions, where the writer needs the reason).
pub fn parse_error(f: ParseFailure) -> MsegError {
    match f {
        ParseFailure::Syntax(m) => invalid("the predicate has a syntax error").detail(m),
        ParseFailure::NotSingleExpression => {
            invalid("the predicate is not a single expression").detail("It closes the expression's parentheses or adds clauses of its own.")
        }
        ParseFailure::Analysis(m) => invalid("the predicate does not analyse").detail(m),
    }
}

/// An MS050 error with the general hint on what a predicate is.
pub fn invalid(message: impl Into<String>) -> MsegError {
    MsegError::new(Code::InvalidPredicate, message).hint(
        "A predicate is a boolean SQL expression over the subject row (alias s), e.g. \
         s.birth_date > date '1996-01-01' AND EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = s.customer_id).",
    )
}

impl From<Refusal> for MsegError {
    fn from(r: Refusal) -> Self {
        let e = invalid(r.message).detail(r.detail);
        match r.hint {
            Some(h) => e.hint(h),
            None => e,
        }
    }
}

/// The shape checks every predicate passes: one boolean value, no aggregate, window or set at its
/// top level, nothing volatile; then the allowlist walk over everything in it.
/// SAFETY: `p` comes from [`parse`] in a live memory context.
pub unsafe fn check(p: &Parsed) -> std::result::Result<Facts, Refusal> {
    let q = &*p.query;
    if q.hasAggs || q.hasWindowFuncs || q.hasTargetSRFs || q.hasModifyingCTE {
        return Err(Refusal::new(
            "the predicate aggregates, windows or returns sets at its top level",
            "Aggregates belong inside a subquery, e.g. (SELECT count(*) FROM public.orders o WHERE o.customer_id = s.customer_id) > 3.",
        ));
    }
    let typ = pg_sys::exprType(p.expr.cast());
    if typ != pg_sys::BOOLOID {
        return Err(Refusal::new("the predicate is not boolean", format!("It has type {}.", type_name(typ))));
    }
    if pg_sys::contain_volatile_functions(p.query.cast()) {
        return Err(Refusal {
            hint: Some("Use now() or current_date for time-dependent segments; they are refreshed by mseg.refresh_segments().".to_owned()),
            ..Refusal::new(
                "the predicate calls a volatile function",
                "Membership must be reproducible; functions such as random() or clock_timestamp() are not allowed.",
            )
        });
    }
    let mut w = Walk::default();
    walk_node(p.query.cast(), (&mut w as *mut Walk).cast());
    match w.refused {
        Some(r) => Err(r),
        None => Ok(w.facts),
    }
}

/// Parse and check in one step, with MS050 errors (definitions and re-validation).
/// SAFETY: see [`parse`].
pub unsafe fn parse_and_check(relation: &str, alias: &str, predicate: &str) -> Result<(Parsed, Facts)> {
    if predicate.trim().is_empty() {
        return Err(invalid("the predicate is empty"));
    }
    let parsed = parse(relation, alias, predicate).map_err(parse_error)?;
    let facts = check(&parsed)?;
    Ok((parsed, facts))
}

/// The predicate's canonical text: deparsed with only pg_catalog on the search path, so every
/// other name comes out schema-qualified and later search_path changes cannot redirect it.
/// SAFETY: `p` comes from [`parse`] over the relation `relid` with alias `alias`.
pub unsafe fn canonical(p: &Parsed, relid: pg_sys::Oid, alias: &str) -> Result<String> {
    let c_alias = CString::new(alias).map_err(|_| invalid("invalid alias"))?;
    crate::catalog::with_search_path(c"pg_catalog", || {
        let ctx = pg_sys::deparse_context_for(c_alias.as_ptr(), relid);
        let text = pg_sys::deparse_expression(p.expr.cast(), ctx, true, false);
        Ok(CStr::from_ptr(text).to_string_lossy().into_owned())
    })
}

// ---------------------------------------------------------------------------------------------
// The allowlist walk
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Walk {
    facts: Facts,
    refused: Option<Refusal>,
}

impl Walk {
    fn refuse(&mut self, message: impl Into<String>, detail: impl Into<String>) {
        if self.refused.is_none() {
            self.refused = Some(Refusal::new(message, detail));
        }
    }
}

unsafe fn type_name(typ: pg_sys::Oid) -> String {
    CStr::from_ptr(pg_sys::format_type_be(typ)).to_string_lossy().into_owned()
}

unsafe fn func_name(funcid: pg_sys::Oid) -> String {
    let p = pg_sys::get_func_name(funcid);
    if p.is_null() {
        format!("{}", u32::from(funcid))
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// A type a predicate may produce: built-in (not an object reference) or an enum, or an array of such.
unsafe fn allowed_type(typ: pg_sys::Oid) -> bool {
    if typ == pg_sys::InvalidOid {
        return true;
    }
    if REFERENCE_TYPES.contains(&typ) {
        return false;
    }
    if u32::from(typ) < pg_sys::FirstGenbkiObjectId {
        return true;
    }
    match pg_sys::get_typtype(typ) as u8 {
        b'e' => true,
        b'b' => {
            let elem = pg_sys::get_element_type(typ);
            elem != pg_sys::InvalidOid && allowed_type(elem)
        }
        _ => false,
    }
}

fn check_type(w: &mut Walk, typ: pg_sys::Oid) {
    // SAFETY: catalog lookups of an existing type.
    unsafe {
        if !allowed_type(typ) {
            let name = type_name(typ);
            let why = if REFERENCE_TYPES.contains(&typ) {
                "Values of object reference types name relations, functions or roles; predicates may not look objects up by name."
            } else {
                match pg_sys::get_typtype(typ) as u8 {
                    b'd' => "A domain's CHECK constraints could call functions anybody may have written; compare the base type instead.",
                    _ => "Predicates compute with built-in types (and enums) only; a user-defined type's input could run user code.",
                }
            };
            w.refuse(format!("the predicate produces a value of type {name}"), why);
        }
    }
}

fn check_function(w: &mut Walk, funcid: pg_sys::Oid) {
    if funcid == pg_sys::InvalidOid {
        return;
    }
    // SAFETY: catalog lookups of an existing function.
    unsafe {
        let name = func_name(funcid);
        if pg_sys::get_func_namespace(funcid) != pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE) {
            w.refuse(
                format!("function {name} is not a built-in function"),
                "Predicates may call functions of pg_catalog only: a user function could read tables that no trigger watches, or run with the upkeep's rights.",
            );
            return;
        }
        if CALLS_USER_CASTS.contains(&name.as_str()) || CALLS_USER_CASTS_PREFIXES.iter().any(|p| name.starts_with(p)) {
            w.refuse(
                format!("function {name} is not allowed in a predicate"),
                "It converts its argument with that type's cast to json, which anybody who owns the type may have written.",
            );
            return;
        }
        match pg_sys::func_volatile(funcid) as u8 {
            b'i' => {}
            b's' if STABLE_ALLOWED.contains(&name.as_str()) => {}
            b's' => w.refuse(
                format!("function {name} is not allowed in a predicate"),
                "Of the stable built-in functions only date, time and formatting functions are allowed: others read settings, \
                 files, statistics or relations named by a value.",
            ),
            _ => w.refuse(format!("function {name} is volatile"), "Membership must be reproducible."),
        }
        if TIME_FUNCTIONS.contains(&name.as_str()) {
            w.facts.time_dependent = true;
        }
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn walk_node(node: *mut pg_sys::Node, ctx: *mut c_void) -> bool {
    if node.is_null() {
        return false;
    }
    let w = &mut *(ctx as *mut Walk);
    if w.refused.is_some() {
        return true; // stop at the first refusal
    }
    use pg_sys::NodeTag as T;
    match (*node).type_ {
        T::T_Query => {
            let q = node as *mut pg_sys::Query;
            if (*q).commandType != pg_sys::CmdType::CMD_SELECT || !(*q).utilityStmt.is_null() {
                w.refuse("the predicate contains a statement other than SELECT", "A predicate only reads.");
                return true;
            }
            if !(*q).cteList.is_null() || (*q).hasModifyingCTE {
                w.refuse("the predicate uses WITH", "Write the subquery inline.");
                return true;
            }
            if !(*q).rowMarks.is_null() {
                w.refuse("the predicate locks rows", "FOR UPDATE / FOR SHARE have no place in a predicate.");
                return true;
            }
            // the relations this query level reads, with the columns the analyser recorded
            let rtable = (*q).rtable;
            if !rtable.is_null() {
                for i in 0..(*rtable).length as usize {
                    let rte = (*(*rtable).elements.add(i)).ptr_value as *mut pg_sys::RangeTblEntry;
                    if (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION {
                        w.facts.relations.push(((*rte).relid, selected_columns(q, rte)));
                    }
                }
            }
            return pg_sys::query_tree_walker(q, Some(walk_node), ctx, pg_sys::QTW_EXAMINE_RTES_BEFORE as i32);
        }
        T::T_RangeTblEntry => {
            let rte = node as *mut pg_sys::RangeTblEntry;
            match (*rte).rtekind {
                pg_sys::RTEKind::RTE_RELATION => {
                    let kind = (*rte).relkind as u8;
                    if kind != b'r' && kind != b'p' {
                        w.refuse(
                            format!("the predicate reads {}, which is not a table", crate::catalog::relation_name((*rte).relid)),
                            "Views, foreign tables, sequences and materialized views run or hold code and data no trigger watches.",
                        );
                        return true;
                    }
                }
                pg_sys::RTEKind::RTE_SUBQUERY
                | pg_sys::RTEKind::RTE_JOIN
                | pg_sys::RTEKind::RTE_FUNCTION
                | pg_sys::RTEKind::RTE_VALUES
                | pg_sys::RTEKind::RTE_RESULT => {}
                _ => {
                    w.refuse("the predicate reads from something other than a table or subquery", "Use tables and subqueries.");
                    return true;
                }
            }
            return false;
        }
        T::T_Var | T::T_FieldSelect => {} // reading a column: any type (no input function runs)
        T::T_Const => {
            let c = node as *mut pg_sys::Const;
            check_type(w, (*c).consttype);
        }
        T::T_FuncExpr => {
            let f = node as *mut pg_sys::FuncExpr;
            check_function(w, (*f).funcid);
            check_type(w, (*f).funcresulttype);
        }
        T::T_OpExpr | T::T_DistinctExpr | T::T_NullIfExpr => {
            let op = node as *mut pg_sys::OpExpr;
            pg_sys::set_opfuncid(op);
            check_function(w, (*op).opfuncid);
            check_type(w, (*op).opresulttype);
        }
        T::T_ScalarArrayOpExpr => {
            let op = node as *mut pg_sys::ScalarArrayOpExpr;
            pg_sys::set_sa_opfuncid(op);
            check_function(w, (*op).opfuncid);
        }
        T::T_RowCompareExpr => {
            let rc = node as *mut pg_sys::RowCompareExpr;
            let ops = (*rc).opnos;
            if !ops.is_null() {
                for i in 0..(*ops).length as usize {
                    let opno = (*(*ops).elements.add(i)).oid_value;
                    check_function(w, pg_sys::get_opcode(opno));
                }
            }
        }
        T::T_Aggref => {
            let a = node as *mut pg_sys::Aggref;
            check_function(w, (*a).aggfnoid);
            check_type(w, (*a).aggtype);
        }
        T::T_SQLValueFunction => {
            let op = (*(node as *mut pg_sys::SQLValueFunction)).op;
            if op <= pg_sys::SQLValueFunctionOp::SVFOP_LOCALTIMESTAMP_N {
                w.facts.time_dependent = true;
            } else {
                w.refuse("the predicate uses session functions such as current_user", "Membership must not depend on who writes.");
                return true;
            }
        }
        T::T_RelabelType => check_type(w, (*(node as *mut pg_sys::RelabelType)).resulttype),
        T::T_CoerceViaIO => check_type(w, (*(node as *mut pg_sys::CoerceViaIO)).resulttype),
        T::T_ArrayCoerceExpr => check_type(w, (*(node as *mut pg_sys::ArrayCoerceExpr)).resulttype),
        T::T_MinMaxExpr => check_type(w, (*(node as *mut pg_sys::MinMaxExpr)).minmaxtype),
        T::T_SubscriptingRef => check_type(w, (*(node as *mut pg_sys::SubscriptingRef)).refcontainertype),
        T::T_CoalesceExpr => check_type(w, (*(node as *mut pg_sys::CoalesceExpr)).coalescetype),
        T::T_CaseExpr => check_type(w, (*(node as *mut pg_sys::CaseExpr)).casetype),
        T::T_ArrayExpr => check_type(w, (*(node as *mut pg_sys::ArrayExpr)).array_typeid),
        T::T_BoolExpr
        | T::T_SubLink
        | T::T_CaseWhen
        | T::T_CaseTestExpr
        | T::T_RowExpr
        | T::T_NullTest
        | T::T_BooleanTest
        | T::T_CollateExpr
        | T::T_NamedArgExpr
        | T::T_TargetEntry
        | T::T_FromExpr
        | T::T_JoinExpr
        | T::T_RangeTblRef
        | T::T_RangeTblFunction
        | T::T_List
        | T::T_SortGroupClause => {}
        T::T_CoerceToDomain | T::T_CoerceToDomainValue => {
            w.refuse(
                "the predicate casts to a domain",
                "A domain's CHECK constraints could call functions anybody may have written; compare the base type instead.",
            );
            return true;
        }
        other => {
            w.refuse(
                format!("the predicate uses {}", node_kind(other)),
                "Predicates are plain expressions: this construct is not allowed.",
            );
            return true;
        }
    }
    pg_sys::expression_tree_walker(node, Some(walk_node), ctx)
}

/// A readable name for a node kind (`T_XmlExpr` → `XmlExpr`).
fn node_kind(tag: pg_sys::NodeTag) -> String {
    let s = format!("{tag:?}");
    format!("a {} node", s.strip_prefix("T_").unwrap_or(&s))
}

/// Column numbers a relation entry of query `q` reads (0: the whole row), as the analyser
/// recorded them for the permission check (PostgreSQL 16 moved them to RTEPermissionInfo).
unsafe fn selected_columns(q: *mut pg_sys::Query, rte: *mut pg_sys::RangeTblEntry) -> Vec<i32> {
    // no permission info (parse analysis always gives one): the relation counts as read whole
    let Some(selected) = crate::compat::rte_selected_cols(q, rte) else {
        return vec![0];
    };
    let mut cols = Vec::new();
    let mut m = -1;
    loop {
        m = pg_sys::bms_next_member(selected, m);
        if m < 0 {
            break;
        }
        cols.push(m + pg_sys::FirstLowInvalidHeapAttributeNumber);
    }
    cols
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Check `predicate` over public.t_pred (alias s) in a throwaway memory context.
    fn check(predicate: &str) -> Result<bool, String> {
        unsafe {
            let context = crate::catalog::memory_context(pg_sys::CurrentMemoryContext, c"test predicate");
            let previous = pg_sys::MemoryContextSwitchTo(context);
            let r = super::parse_and_check("public.t_pred", "s", predicate).map(|(_, f)| f.time_dependent).map_err(|e| e.message);
            pg_sys::MemoryContextSwitchTo(previous);
            pg_sys::MemoryContextDelete(context);
            r
        }
    }

    #[pg_test]
    fn allowlist_accepts_plain_expressions_and_marks_time() {
        Spi::run("CREATE TABLE public.t_pred (id int8, n int4, city text, born date, at timestamptz)").unwrap();
        assert_eq!(check("s.n > 1 AND s.city LIKE 'B%' AND lower(s.city) = 'bonn'"), Ok(false));
        assert_eq!(check("s.born > current_date - 365 * 30"), Ok(true));
        assert_eq!(check("s.at > now() - interval '90 days' AND to_char(s.born, 'YYYY') = '1990'"), Ok(true));
        assert_eq!(check("coalesce(s.n, 0) IN (1, 2, 3) AND s.city IS NOT NULL"), Ok(false));
        assert_eq!(check("EXISTS (SELECT 1 FROM public.t_pred o WHERE o.id = s.id AND o.n > 3)"), Ok(false));
    }

    #[pg_test]
    fn allowlist_refuses_what_could_run_user_code_or_read_state() {
        Spi::run("CREATE TABLE public.t_pred (id int8, n int4, city text)").unwrap();
        Spi::run("CREATE DOMAIN public.t_dom AS text CHECK (VALUE <> '')").unwrap();
        Spi::run("CREATE TYPE public.t_mood AS ENUM ('a', 'b')").unwrap();
        Spi::run("CREATE FUNCTION public.t_f(int4) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT true'").unwrap();
        Spi::run("CREATE VIEW public.t_view AS SELECT * FROM public.t_pred").unwrap();
        let refused = |p: &str, why: &str| {
            let e = check(p).expect_err(p);
            assert!(e.contains(why), "{p}: {e}");
        };
        refused("current_setting('mseg.key_file') IS NOT NULL", "current_setting is not allowed");
        refused("table_to_xml('public.t_pred'::regclass, true, true, '') IS NOT NULL", "table_to_xml is not allowed");
        refused("'public.t_pred'::regclass::oid > 0", "regclass");
        refused("s.city::public.t_dom = 'x'", "casts to a domain");
        refused("public.t_f(s.n)", "not a built-in function");
        refused("to_jsonb(s.n) IS NOT NULL", "to_jsonb is not allowed");
        refused("jsonb_object_agg(s.city, s.n) IS NOT NULL", "aggregates");
        refused("EXISTS (SELECT jsonb_object_agg(o.city, o.n) FROM public.t_pred o)", "jsonb_object_agg is not allowed");
        refused("random() > 0.5", "volatile");
        refused("current_user = 'x'", "session functions");
        refused("EXISTS (SELECT 1 FROM public.t_view v)", "not a table");
        refused("EXISTS (WITH x AS (SELECT 1) SELECT 1 FROM x)", "WITH");
        refused("(s.city)::public.t_pred IS NOT NULL", "value of type");
        // (a server built without libxml refuses XML already when the predicate is analysed)
        let e = check("xmlelement(name x) IS NOT NULL").expect_err("xmlelement");
        assert!(e.contains("XmlExpr") || e.contains("does not analyse"), "xmlelement: {e}");
    }
}
