//! What differs between the PostgreSQL major versions pg_mseg builds for (15, 16, 18; 17 builds
//! where its headers are at hand but is untested). Every `#[cfg(feature = "pgN")]` of the crate
//! is here, one function per difference, so the rest of the code reads the same on each version.

use std::ffi::c_void;

use pgrx::pg_sys;

/// Attribute `i` (0-based) of a tuple descriptor.
/// PostgreSQL 18 placed the full attributes after an array of compact ones (`TupleDescAttr` is a
/// static inline function there, so it cannot be called).
/// SAFETY: `desc` is a valid tuple descriptor and `i < natts`.
pub unsafe fn tuple_desc_attr(desc: pg_sys::TupleDesc, i: usize) -> *mut pg_sys::FormData_pg_attribute {
    #[cfg(not(feature = "pg18"))]
    return (*desc).attrs.as_mut_ptr().add(i);
    #[cfg(feature = "pg18")]
    return ((*desc).compact_attrs.as_mut_ptr().add((*desc).natts as usize) as *mut pg_sys::FormData_pg_attribute).add(i);
}

/// The columns a relation entry of `query`'s range table reads, as a bitmap of attribute numbers
/// offset by `FirstLowInvalidHeapAttributeNumber`; None when the entry has no permission info.
/// PostgreSQL 16 moved `selectedCols` from the range table entry into the query's
/// `rteperminfos` (parse analysis gives every relation entry one).
/// SAFETY: `rte` is a relation entry of `query`'s range table (`query` may be null on 15).
pub unsafe fn rte_selected_cols(query: *mut pg_sys::Query, rte: *mut pg_sys::RangeTblEntry) -> Option<*mut pg_sys::Bitmapset> {
    #[cfg(feature = "pg15")]
    {
        let _ = query;
        Some((*rte).selectedCols)
    }
    #[cfg(not(feature = "pg15"))]
    {
        if query.is_null() || (*rte).perminfoindex == 0 {
            return None;
        }
        Some((*pg_sys::getRTEPermissionInfo((*query).rteperminfos, rte)).selectedCols)
    }
}

/// A mutator callback of `expression_tree_mutator`.
pub type TreeMutator = unsafe extern "C-unwind" fn(*mut pg_sys::Node, *mut c_void) -> *mut pg_sys::Node;

/// `expression_tree_mutator(node, mutator, context)`.
/// PostgreSQL 15 declares the mutator without its parameters (it calls it with node and context);
/// 16 made the function a macro over `expression_tree_mutator_impl`.
/// SAFETY: as PostgreSQL's function: a valid node tree, a mutator that follows its contract.
pub unsafe fn expression_tree_mutator(node: *mut pg_sys::Node, mutator: TreeMutator, context: *mut c_void) -> *mut pg_sys::Node {
    #[cfg(feature = "pg15")]
    {
        // SAFETY: the same function pointer; only the declared parameter list differs.
        let mutator: unsafe extern "C-unwind" fn() -> *mut pg_sys::Node = std::mem::transmute(mutator);
        pg_sys::expression_tree_mutator(node, Some(mutator), context)
    }
    #[cfg(not(feature = "pg15"))]
    {
        pg_sys::expression_tree_mutator_impl(node, Some(mutator), context)
    }
}
