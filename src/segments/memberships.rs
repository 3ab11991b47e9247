//! Reading memberships in their stored format: one row per subject, its segment ids as an
//! `int4[]` (see the module summary). Whoever reads them in bulk (the export) goes through here.

use super::*;

/// A subject's stored segment set: the array's bytes (equal bytes, equal set, so a reader can
/// decode each distinct array once) and, on demand, its segment ids.
pub struct StoredSet<'a> {
    datum: pg_sys::Datum,
    bytes: &'a [u8],
}

impl StoredSet<'_> {
    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    /// The segment ids, in stored order.
    pub fn ids(&self) -> Vec<i32> {
        // SAFETY: the datum is a non-NULL int4[] of the row being read (for_each_membership)
        unsafe { <Vec<i32> as FromDatum>::from_polymorphic_datum(self.datum, false, pg_sys::INT4ARRAYOID) }.unwrap_or_default()
    }
}

/// Every subject's membership row, read as the extension's owner under the calling statement's
/// snapshot: `each(subject id, its set or None for a NULL array)`.
pub fn for_each_membership(mut each: impl FnMut(i64, Option<StoredSet<'_>>) -> MsegResult<()>) -> MsegResult<()> {
    catalog::for_each_row(catalog::Who::Owner, "SELECT subject_key, segments FROM mseg.memberships", |values, nulls| {
        if values.len() != 2 || nulls.len() != 2 {
            return Err(MsegError::new(Code::General, "memberships: unexpected row shape"));
        }
        // SAFETY: subject_key is int8
        let subject = unsafe { i64::from_polymorphic_datum(values[0], nulls[0], pg_sys::INT8OID) }.unwrap_or(0);
        if nulls[1] {
            return each(subject, None);
        }
        // SAFETY: segments is int4[], not NULL here; detoasting a short inline value is a no-op,
        // and its bytes identify the array
        let bytes = unsafe { pgrx::varlena::varlena_to_byte_slice(pg_sys::pg_detoast_datum_packed(values[1].cast_mut_ptr())) };
        each(subject, Some(StoredSet { datum: values[1], bytes }))
    })
}
